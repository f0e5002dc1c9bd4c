"""Rounds: opening one, closing it, and what an admin reads about it. A round is a batch of
comparison tasks judged under one rubric.

A round opens one of two ways:

* from completions already stored for its prompts (imported with them): the tasks are made at
  once and the round is open (``round_open_from_imported``);
* by the serving policy (``round_open_for_policy``): the round is recorded as ``generating`` and
  its generation job is queued; the job samples K completions per prompt and publishes the tasks
  (``annotation.round_generation``, which also recovers a job whose worker died).

Either way the prompts are chosen alike (by ids and/or tags, by default only those in no round
yet), and rounds are numbered in the order they open.
"""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, Exists, F, OuterRef, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from feedback.models import Completion, Prompt
from feedback.platform.errors import DomainError
from feedback.platform.signals import round_completed
from feedback.serving.backends import Sampling
from feedback.serving.policies import policy_active

from .distribution import distribution_statistics_refresh
from .models import Assignment, ComparisonTask, Judgment, Round, Rubric, TaskCompletion
from .round_generation import round_generate_enqueue
from .round_selection import SELECTIONS, selection_runs
from .rubrics import rubric_current

# A task's plan: its prompt and the completions it compares, in their shown order.
Plan = tuple[int, list[int]]


def _prompts_choose(
    *, prompt_ids: list[int] | None, tags: list[str] | None, include_used: bool
) -> list[int]:
    """Ids of the prompts a new round takes, in id order: those named (all when none are), with
    every one of ``tags``, and unless ``include_used`` only those in no round yet."""
    prompts = Prompt.objects.all()
    if prompt_ids:
        prompts = prompts.filter(pk__in=prompt_ids)
    if not include_used:
        prompts = prompts.exclude(tasks__isnull=False)
    wanted = set(tags or [])
    return [pk for pk, t in prompts.order_by("id").values_list("pk", "tags") if wanted <= set(t)]


def _next_number() -> int:
    """The number the round being opened takes; the caller's transaction holds the lock."""
    last = Round.objects.select_for_update().order_by("-number").first()
    return (last.number + 1) if last else 1


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


def _plans_from_imported(prompt_ids: list[int], *, k: int, seed: int) -> list[Plan]:
    """For each prompt that has K distinct stored completions, the K a task compares."""
    by_prompt: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in (
        Completion.objects.filter(prompt_id__in=prompt_ids)
        .order_by("id")
        .values("id", "prompt_id", "text")
    ):
        by_prompt[row["prompt_id"]].append(row)
    plans: list[Plan] = []
    for prompt_id in prompt_ids:
        picked = _choose_completions(
            by_prompt.get(prompt_id, []), k=k, rng=random.Random(f"{seed}:{prompt_id}")
        )
        if picked is not None:
            plans.append((prompt_id, picked))
    return plans


def _tasks_create(round_: Round, plans: list[Plan]) -> None:
    """The round's tasks and their completions, in two bulk inserts."""
    tasks = ComparisonTask.objects.bulk_create(
        [
            ComparisonTask(
                round=round_, prompt_id=pid, overlap=round_.overlap, priority=round_.priority
            )
            for pid, _ in plans
        ],
        batch_size=1000,
    )
    if any(task.pk is None for task in tasks):  # backends without RETURNING
        ids = dict(ComparisonTask.objects.filter(round=round_).values_list("prompt_id", "pk"))
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
    chosen = _prompts_choose(prompt_ids=prompt_ids, tags=tags, include_used=include_used)
    plans = _plans_from_imported(chosen, k=k, seed=seed)
    if not plans:
        hint = (
            " Import prompts with their completions first (manage.py import_prompts FILE.jsonl, "
            "or POST /api/v1/prompts/import/), or open a policy round (POST /api/v1/rounds/ "
            'with "source": "policy") to have the active policy write them.'
            if not chosen
            else ""
        )
        raise DomainError(
            f"No selected prompt has {k} completions with distinct texts "
            f"({len(chosen)} prompt(s) matched).{hint}",
            fields={"k": [f"No prompt has {k} distinct completions to compare."]},
        )
    try:
        with transaction.atomic():
            round_ = Round.objects.create(
                number=_next_number(),
                source=Round.Source.IMPORTED,
                rubric=rubric,
                k=k,
                overlap=overlap,
                seed=seed,
                status=Round.Status.OPEN,
                created_by=created_by,
            )
            _tasks_create(round_, plans)
            distribution_statistics_refresh()
    except IntegrityError:
        raise DomainError(
            "Another round was opened at the same moment; try again.", code="conflict", status=409
        ) from None
    return round_, len(chosen) - len(plans)


def round_open_for_policy(
    *,
    k: int,
    overlap: int,
    prompt_ids: list[int] | None = None,
    tags: list[str] | None = None,
    include_used: bool = False,
    limit: int | None = None,
    sampling: Sampling | None = None,
    backend: str | None = None,
    seed: int | None = None,
    rubric: Rubric | None = None,
    created_by: Any = None,
    enqueue: bool = True,
    selection: str = "random",
    selection_run: int | None = None,
    pool: int | None = None,
) -> Round:
    """Record a round to be generated by the active policy and enqueue its generation; it is
    judged under ``rubric`` (default: the newest 3H). With ``selection`` uncertainty or
    disagreement, ``pool`` of the matching prompts (all by default) are generated and scored,
    and the ``limit`` the reward model is least sure about are kept (``round_selection``)."""
    policy = policy_active()
    if policy is None:
        raise DomainError(
            "No policy is active: deploy one first (build_tiny_model registers the tiny model).",
            code="no_active_policy",
            status=409,
        )
    chosen = _prompts_choose(prompt_ids=prompt_ids, tags=tags, include_used=include_used)
    chosen, chosen_by = _selection_plan(
        chosen, selection=selection, selection_run=selection_run, pool=pool, limit=limit
    )
    if not chosen:
        raise DomainError("No prompt matches.", fields={"prompt_ids": ["No prompt matches."]})
    sampling = sampling or Sampling()
    seed = secrets.randbits(31) if seed is None else seed
    with transaction.atomic():
        number = _next_number()
        try:
            round_ = Round.objects.create(
                number=number,
                source=Round.Source.POLICY,
                policy_version=policy,
                rubric=rubric or rubric_current(),
                k=k,
                overlap=overlap,
                seed=seed,
                status=Round.Status.GENERATING,
                created_by=created_by,
                prompt_ids=chosen,
                sampling={**sampling.as_dict(), "seed": seed},
                backend=backend or settings.GENERATION_BACKEND,
                **chosen_by,
            )
        except IntegrityError:
            raise DomainError("Another round was opened at the same moment.", status=409) from None
        if enqueue:  # `simulate` generates in its own process instead
            round_generate_enqueue(round_.pk)
    return round_


def _selection_plan(
    chosen: list[int], *, selection: str, selection_run: int | None, pool: int | None,
    limit: int | None,
) -> tuple[list[int], dict[str, Any]]:  # fmt: skip
    """The prompts the round starts from (all it takes, or the pool it chooses from) and the
    round's selection fields; a 400 naming the field for a bad combination."""
    if selection not in SELECTIONS:
        raise DomainError(f"Unknown selection {selection!r}.",
                          fields={"selection": [f"One of: {', '.join(SELECTIONS)}."]})  # fmt: skip
    if selection == "random":
        for name, value in (("pool", pool), ("selection_run", selection_run)):
            if value is not None:
                raise DomainError(
                    f"{name} is for uncertainty or disagreement selection.",
                    fields={name: ["Only with selection 'uncertainty' or 'disagreement'."]},
                )
        return (chosen[:limit] if limit is not None else chosen), {}
    if limit is None:
        raise DomainError(
            f"Selection {selection} keeps `limit` prompts of the pool: give limit.",
            fields={"limit": ["How many of the pool's prompts to keep."]},
        )
    runs = selection_runs(selection=selection, run_id=selection_run)
    pooled = chosen[:pool] if pool is not None else chosen
    return pooled, {
        "selection": selection,
        "selection_run": runs.get("reward"),
        "pool_size": len(pooled),
        "selection_detail": {"keep": limit, "runs": runs},
    }


def round_close(*, round_id: int) -> Round:
    """Stop handing out the round's tasks; held leases may still be submitted. Idempotent.
    Closing is when a round completes (``round_completed``, the webhooks' round.completed): a
    round whose tasks are all judged but still open may yet get more (overlap, gold), so its
    admin, or its automation, closes it."""
    with transaction.atomic():
        round_ = Round.objects.select_for_update().filter(pk=round_id).first()
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        if round_.status != Round.Status.CLOSED:
            round_.status = Round.Status.CLOSED
            round_.closed_at = timezone.now()
            round_.save(update_fields=["status", "closed_at"])
            # Out of the distributor's index: it walks the tasks of open rounds only.
            ComparisonTask.objects.filter(round_id=round_id).update(round_open=False)
            transaction.on_commit(
                lambda: round_completed.send(sender=Round, round_id=round_id), robust=True
            )
    return round_


# A promotion gate's side-by-side round (annotation.side_by_side): a candidate waits on it, so
# its tasks go before those of collecting rounds (priority 0) unless an admin says otherwise.
GATE_PRIORITY = 10
MAX_PRIORITY = 100


def round_set_priority(*, round_id: int, priority: int) -> Round:
    """Set which open round's tasks are handed out first (higher first; ties go to the task
    nearest completion, then the oldest). Copied onto the round's tasks in the same
    transaction, for the distributor's index."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise DomainError(
            f"priority: a whole number from 0 to {MAX_PRIORITY}.",
            fields={"priority": [f"Must be from 0 to {MAX_PRIORITY}."]},
        )
    with transaction.atomic():
        round_ = Round.objects.select_for_update().filter(pk=round_id).first()
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        if round_.priority != priority:
            round_.priority = priority
            round_.save(update_fields=["priority"])
            ComparisonTask.objects.filter(round_id=round_id).update(priority=priority)
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
