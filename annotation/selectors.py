"""Reads of the annotation records that pages and API views show (selectors): rounds and
their rubrics, score and flag counts, tasks with their prompts and slots, export jobs, and an
annotator's own counts and recent judgments. Views validate, call one of these (or a service),
and render."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Avg, Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone

from feedback.models import Completion, Prompt

from .models import (
    Assignment,
    ComparisonTask,
    ExportJob,
    Judgment,
    Round,
    Rubric,
    TaskCompletion,
)

# --- Rounds and rubrics ------------------------------------------------------------------------


def round_list() -> QuerySet[Round]:
    """Every round, newest first, with its rubric and the policy that served it."""
    return Round.objects.select_related("rubric", "policy_version").order_by("-number")


def round_get(*, round_id: int) -> Round | None:
    return round_list().filter(pk=round_id).first()


def round_numbers() -> list[int]:
    return list(Round.objects.order_by("number").values_list("number", flat=True))


def rounds_existing(*, numbers: list[int]) -> set[int]:
    """Which of these round numbers exist."""
    return set(Round.objects.filter(number__in=numbers).values_list("number", flat=True))


def rubrics_of_rounds(*, rounds: list[int] | None) -> list[Rubric]:
    """The rubrics the rounds were judged under (all rounds when None or empty; the newest
    rubric when there is no round yet)."""
    used = Round.objects.filter(number__in=rounds) if rounds else Round.objects.all()
    rubrics = list(Rubric.objects.filter(rounds__in=used).distinct().order_by("id"))
    return rubrics or list(Rubric.objects.order_by("-id")[:1])


def rubric_labels() -> list[str]:
    return [r.label for r in Rubric.objects.order_by("name", "version")]


# --- What the judgments say --------------------------------------------------------------------


def _judgments(rounds: list[int] | None) -> QuerySet[Judgment]:
    judgments = Judgment.objects.all()
    return judgments.filter(task__round__number__in=rounds) if rounds else judgments


def judgments_by_annotator(*, rounds: list[int] | None) -> dict[int, int]:
    """{user id: judgments} in the rounds (every round when None or empty)."""
    counts = _judgments(rounds).values("annotator_id").annotate(n=Count("pk"))
    return dict(counts.values_list("annotator_id", "n"))


def score_distribution(*, rounds: list[int] | None) -> dict[tuple[int, str], Counter[int]]:
    """How often each score was given on each axis of each rubric version: {(rubric id, axis):
    {score: count}} over every completion of every judgment in the rounds. Versions stay apart:
    an axis may have another scale in another version. One pass over the scores column, so it
    works on SQLite as on PostgreSQL."""
    counts: dict[tuple[int, str], Counter[int]] = defaultdict(Counter)
    rows = _judgments(rounds).values_list("rubric_id", "scores").iterator(chunk_size=2000)
    for rubric_id, scores in rows:
        for per_axis in scores.values():
            for axis, score in per_axis.items():
                counts[rubric_id, axis][score] += 1
    return counts


def flags_by_day(*, rounds: list[int] | None) -> dict[date, Counter[str]]:
    """Per day (in the site's time zone), how many judgments raised each flag."""
    days: dict[date, Counter[str]] = defaultdict(Counter)
    flagged = _judgments(rounds).exclude(flags=[])
    for created_at, flags in flagged.values_list("created_at", "flags").iterator(chunk_size=2000):
        days[timezone.localtime(created_at).date()].update(set(flags))
    return days


# --- Tasks -------------------------------------------------------------------------------------


def task_prompts(*, task_ids: list[int]) -> dict[int, list[dict[str, str]]]:
    """Each task's prompt messages, by task id."""
    rows = ComparisonTask.objects.filter(pk__in=task_ids).values_list("pk", "prompt__messages")
    return dict(rows)


def task_get(*, task_id: int) -> ComparisonTask | None:
    """A task with its prompt and its round's rubric."""
    related = ComparisonTask.objects.select_related("prompt", "round__rubric")
    return related.filter(pk=task_id).first()


def task_slots(*, task: ComparisonTask) -> list[TaskCompletion]:
    """A task's slots in the order shown, with their completions and policies."""
    return list(task.slots.select_related("completion__policy_version").order_by("position"))


def task_judgments(*, task: ComparisonTask) -> list[Judgment]:
    """A task's judgments in the order they were made, with their rubrics."""
    return list(task.judgments.select_related("rubric").order_by("created_at", "id"))


def task_completion_ids(*, task_id: int) -> list[int]:
    """A task's completion ids in the order its slots show them."""
    slots = TaskCompletion.objects.filter(task_id=task_id).order_by("position")
    return list(slots.values_list("completion_id", flat=True))


def prompt_completions(*, prompt: Prompt, limit: int = 8) -> QuerySet[Completion]:
    """The answers a demonstration may start from, oldest first."""
    return Completion.objects.filter(prompt=prompt).order_by("id")[:limit]


def export_job_list() -> QuerySet[ExportJob]:
    return ExportJob.objects.order_by("-created_at")


# --- An annotator's own counts -----------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorCounts:
    judgments_total: int
    judgments_today: int
    skipped: int
    mean_time_spent_ms: float | None


def annotator_counts(*, annotator: AbstractBaseUser) -> AnnotatorCounts:
    """One's judgments (in all, and since midnight UTC), skips and mean
    active time per judgment."""
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    judged = Judgment.objects.filter(annotator=annotator).aggregate(
        total=Count("pk"),
        today=Count("pk", filter=Q(created_at__gte=today)),
        mean=Avg("time_spent_ms"),
    )
    skipped = Assignment.objects.filter(
        annotator=annotator, status=Assignment.Status.SKIPPED
    ).count()
    return AnnotatorCounts(judged["total"], judged["today"], skipped, judged["mean"])


def annotator_judgments_recent(
    *, annotator: AbstractBaseUser, round_number: int | None = None, limit: int = 20
) -> list[Judgment]:
    """One's current judgments, newest first (in round ``round_number`` only, if given), each
    with its task's round, prompt and slots, and ``supersedes_id``: the judgment it corrected,
    if it is a correction (``annotation.corrections``). Two queries, whatever the limit."""
    corrected = Judgment.all_versions.filter(superseded_by=OuterRef("pk")).values("pk")[:1]
    judgments = Judgment.objects.filter(annotator=annotator)
    if round_number is not None:
        judgments = judgments.filter(task__round__number=round_number)
    slots = TaskCompletion.objects.select_related("completion").order_by("position")
    return list(
        judgments.select_related("task__round", "task__prompt", "rubric")
        .prefetch_related(Prefetch("task__slots", queryset=slots))
        .annotate(supersedes_id=Subquery(corrected))
        .order_by("-created_at", "-id")[:limit]
    )
