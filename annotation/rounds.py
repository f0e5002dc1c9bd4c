"""Opening and closing rounds. A round is a batch of comparison tasks judged under one rubric."""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, Exists, F, OuterRef, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from feedback.models import Completion, Prompt
from feedback.platform.errors import DomainError

from .distribution import distribution_statistics_refresh
from .models import Assignment, ComparisonTask, Judgment, Round, Rubric, TaskCompletion

DEFAULT_RUBRIC = "3H"


def rubric_current(*, name: str = DEFAULT_RUBRIC) -> Rubric:
    rubric = Rubric.objects.filter(name=name).order_by("-version").first()
    if rubric is None:
        raise DomainError(f"No rubric named {name!r}.", fields={"rubric": ["Does not exist."]})
    return rubric


def _choose_completions(
    completions: list[dict[str, Any]], *, k: int, rng: random.Random
) -> list[int] | None:
    """K completions with distinct, non-empty texts, in a random order; None if there are fewer."""
    distinct: dict[str, int] = {}
    for row in completions:
        text = row["text"].strip()
        if text and text not in distinct:
            distinct[text] = row["id"]
    if len(distinct) < k:
        return None
    return rng.sample(sorted(distinct.values()), k)


def round_open_from_imported(
    *,
    k: int,
    overlap: int,
    rubric: Rubric | None = None,
    tags: list[str] | None = None,
    prompt_ids: list[int] | None = None,
    include_used: bool = False,
    seed: int | None = None,
    created_by: Any = None,
) -> tuple[Round, int]:
    """Open a round whose tasks compare completions already stored (imported) for each prompt.

    Picks prompts by tags and/or ids (all prompts when neither is given), by default only those
    not yet in any round. Each task gets K completions with distinct texts, chosen and ordered at
    random from ``seed``; prompts with fewer than K are left out. Returns the round and how many
    prompts were left out.
    """
    rubric = rubric or rubric_current()
    seed = secrets.randbits(31) if seed is None else seed
    prompts = Prompt.objects.all()
    if prompt_ids:
        prompts = prompts.filter(pk__in=prompt_ids)
    if not include_used:
        prompts = prompts.exclude(Q(tasks__isnull=False))
    wanted_tags = set(tags or [])
    chosen_prompts = [
        pk
        for pk, prompt_tags in prompts.values_list("pk", "tags")
        if wanted_tags <= set(prompt_tags)
    ]
    by_prompt: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in (
        Completion.objects.filter(prompt_id__in=chosen_prompts)
        .order_by("id")
        .values("id", "prompt_id", "text")
    ):
        by_prompt[row["prompt_id"]].append(row)

    plans: list[tuple[int, list[int]]] = []
    for prompt_id in chosen_prompts:
        picked = _choose_completions(
            by_prompt.get(prompt_id, []), k=k, rng=random.Random(f"{seed}:{prompt_id}")
        )
        if picked is not None:
            plans.append((prompt_id, picked))
    left_out = len(chosen_prompts) - len(plans)
    if not plans:
        raise DomainError(
            f"No selected prompt has {k} completions with distinct texts "
            f"({len(chosen_prompts)} prompt(s) matched).",
            fields={"k": [f"No prompt has {k} distinct completions to compare."]},
        )

    try:
        with transaction.atomic():
            last = Round.objects.select_for_update().order_by("-number").first()
            round_ = Round.objects.create(
                number=(last.number + 1) if last else 1,
                source=Round.Source.IMPORTED,
                rubric=rubric,
                k=k,
                overlap=overlap,
                seed=seed,
                status=Round.Status.OPEN,
                created_by=created_by,
            )
            tasks = ComparisonTask.objects.bulk_create(
                [ComparisonTask(round=round_, prompt_id=pid, overlap=overlap) for pid, _ in plans],
                batch_size=1000,
            )
            if any(task.pk is None for task in tasks):  # backends without RETURNING
                ids = dict(
                    ComparisonTask.objects.filter(round=round_).values_list("prompt_id", "pk")
                )
                for task in tasks:
                    task.pk = ids[task.prompt_id]
            TaskCompletion.objects.bulk_create(
                [
                    TaskCompletion(task_id=task.pk, completion_id=cid, position=position)
                    for task, (_, picked) in zip(tasks, plans, strict=True)
                    for position, cid in enumerate(picked)
                ],
                batch_size=2000,
            )
            distribution_statistics_refresh()
    except IntegrityError:
        raise DomainError(
            "Another round was opened at the same moment; try again.", code="conflict", status=409
        ) from None
    return round_, left_out


def round_close(*, round_id: int) -> Round:
    """Stop handing out the round's tasks; held leases may still be submitted. Idempotent."""
    with transaction.atomic():
        round_ = Round.objects.select_for_update().filter(pk=round_id).first()
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        if round_.status != Round.Status.CLOSED:
            round_.status = Round.Status.CLOSED
            round_.closed_at = timezone.now()
            round_.save(update_fields=["status", "closed_at"])
    return round_


def round_progress(*, round_: Round) -> dict[str, int]:
    """Task and judgment counts for one round (one query for tasks, one for live leases).

    Gold tasks (judged by everyone, ``annotation.gold``) are counted apart: they are not work
    the round has to finish."""
    ordinary = Q(gold_ranking__isnull=True)
    tasks = ComparisonTask.objects.filter(round=round_).aggregate(
        tasks=Count("pk", filter=ordinary),
        complete=Count("pk", filter=ordinary & Q(submitted_count__gte=F("overlap"))),
        judgments=Sum("submitted_count", default=0, filter=ordinary),
        target=Sum("overlap", default=0, filter=ordinary),
        gold_tasks=Count("pk", filter=~ordinary),
        gold_judgments=Sum("submitted_count", default=0, filter=~ordinary),
    )
    leased = Assignment.objects.filter(
        task__round=round_, status=Assignment.Status.LEASED, lease_expires_at__gt=timezone.now()
    ).count()
    return {**tasks, "leased": leased}


def round_stats(*, round_: Round, hours: int = 24) -> dict[str, Any]:
    """What an admin watches: tasks by state, judgments per hour, and per-annotator counts."""
    now = timezone.now()
    live = Assignment.objects.filter(
        task=OuterRef("pk"), status=Assignment.Status.LEASED, lease_expires_at__gt=now
    )
    tasks = ComparisonTask.objects.filter(round=round_, gold_ranking__isnull=True).annotate(
        leased_now=Exists(live)
    )
    by_state = tasks.aggregate(
        complete=Count("pk", filter=Q(submitted_count__gte=F("overlap"))),
        in_progress=Count("pk", filter=Q(submitted_count__gt=0, submitted_count__lt=F("overlap"))),
        leased=Count("pk", filter=Q(submitted_count=0, leased_now=True)),
        untouched=Count("pk", filter=Q(submitted_count=0, leased_now=False)),
    )
    since = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    counts = dict(
        Judgment.objects.filter(task__round=round_, created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(n=Count("pk"))
        .values_list("hour", "n")
    )
    per_hour = [
        {"hour": since + timedelta(hours=i), "n": counts.get(since + timedelta(hours=i), 0)}
        for i in range(hours)
    ]
    annotators = list(
        Judgment.objects.filter(task__round=round_)
        .values("annotator__username")
        .annotate(n=Count("pk"), mean_ms=Avg("time_spent_ms"))
        .order_by("-n", "annotator__username")
    )
    skips = dict(
        Assignment.objects.filter(task__round=round_, status=Assignment.Status.SKIPPED)
        .values("annotator__username")
        .annotate(n=Count("pk"))
        .values_list("annotator__username", "n")
    )
    for row in annotators:
        row["skipped"] = skips.get(row["annotator__username"], 0)
    return {"by_state": by_state, "per_hour": per_hour, "annotators": annotators}


def ranking_pair_count(ranking: list[list[Any]]) -> int:
    """How many preference pairs a ranking expands to: C(K, 2) less C(g, 2) for each tie group
    of size g (``annotation.pairs``), counted without building the pairs."""
    sizes = [len(group) for group in ranking]
    total = sum(sizes)
    return total * (total - 1) // 2 - sum(g * (g - 1) // 2 for g in sizes)


def round_pair_counts() -> list[dict[str, Any]]:
    """Every round, oldest first, with its judgments and the preference pairs they expand to
    (each judgment's own, before any consensus across a task's judgments): what a training run
    on that round would have to learn from."""
    rounds = list(Round.objects.order_by("number").values("pk", "number", "status"))
    counts = {row["pk"]: {**row, "judgments": 0, "pairs": 0} for row in rounds}
    rankings = Judgment.objects.values_list("task__round_id", "ranking")
    for round_id, ranking in rankings.iterator(chunk_size=2000):
        counts[round_id]["judgments"] += 1
        counts[round_id]["pairs"] += ranking_pair_count(ranking)
    return list(counts.values())


def rubric_detail(*, rubric_id: int) -> tuple[Rubric, list[Round], list[Rubric]]:
    """A rubric, the rounds judged under it (newest first), and every version of its name."""
    rubric = Rubric.objects.filter(pk=rubric_id).first()
    if rubric is None:
        raise DomainError("No such rubric.", code="not_found", status=404)
    rounds = list(Round.objects.filter(rubric=rubric).order_by("-number"))
    versions = list(Rubric.objects.filter(name=rubric.name).order_by("-version"))
    return rubric, rounds, versions
