"""Progress through rounds: an annotator's own (the workspace's "task 6 of 24"), and how far
each round's overlap has filled (what agreement can rest on so far)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, Sum

from .models import Assignment, ComparisonTask, Round


@dataclass(frozen=True)
class RoundProgress:
    number: int
    tasks: int  # tasks in the round, gold tasks included
    judged: int  # this annotator's judgments in it
    skipped: int  # and skips


def annotator_round_progress(
    *, annotator: AbstractBaseUser, round_number: int
) -> RoundProgress | None:
    """How far this annotator is through round ``round_number``; None when there is no such
    round."""
    round_ = Round.objects.filter(number=round_number).only("pk").first()
    if round_ is None:
        return None
    mine = Assignment.objects.filter(annotator=annotator, task__round=round_).aggregate(
        judged=Count("pk", filter=Q(status=Assignment.Status.SUBMITTED)),
        skipped=Count("pk", filter=Q(status=Assignment.Status.SKIPPED)),
    )
    return RoundProgress(
        number=round_number,
        tasks=ComparisonTask.objects.filter(round=round_).count(),
        judged=mine["judged"],
        skipped=mine["skipped"],
    )


@dataclass(frozen=True)
class RoundOverlap:
    """What agreement in a round can rest on so far: the judgments it asks for per task, and
    how many of its ordinary (non-gold) tasks have two or more (gold tasks are scored against
    their reference, not against each other)."""

    round_id: int
    number: int
    status: str  # Round.Status: a closed round gets no more judgments
    overlap: int  # judgments wanted per task, set when the round is opened
    tasks: int  # ordinary tasks
    judgments: int  # judgments on them so far
    judged_twice: int  # ordinary tasks with two or more judgments: what agreement rests on


def round_overlap(*, rounds: list[int] | None = None) -> list[RoundOverlap]:
    """``RoundOverlap`` of every round in ``rounds`` (all when empty or None), by number, in
    one query over the tasks' judgment counters (one judgment per annotator per task, so
    ``submitted_count`` is also the number of annotators)."""
    ordinary = Q(tasks__gold_ranking__isnull=True)
    chosen = Round.objects.filter(number__in=rounds) if rounds else Round.objects.all()
    rows = (
        chosen.order_by("number")
        .annotate(
            ordinary_tasks=Count("tasks", filter=ordinary),
            ordinary_judgments=Sum("tasks__submitted_count", default=0, filter=ordinary),
            judged_twice=Count("tasks", filter=ordinary & Q(tasks__submitted_count__gte=2)),
        )
        .values_list(
            "pk",
            "number",
            "status",
            "overlap",
            "ordinary_tasks",
            "ordinary_judgments",
            "judged_twice",
        )
    )
    return [RoundOverlap(*row) for row in rows]
