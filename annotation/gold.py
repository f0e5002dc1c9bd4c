"""Gold tasks: tasks with a reference answer, mixed into annotators' queues to measure them.

An admin marks a task of a round as gold with a reference ranking (and, optionally, reference
scores). From then on every annotator of the round is served it once, at the round's
``gold_rate`` (see ``annotation.distribution.gold_due``), and the page shows it exactly like any
other task: the lease payload has no trace of it. How annotators do on gold tasks
(``annotation.quality``) feeds their trust score.

A gold task is for every annotator rather than for ``overlap`` of them, so marking one raises its
overlap to ``GOLD_OVERLAP``; the slot counters and the check constraint keep working unchanged,
and the round's progress leaves gold tasks out.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from feedback.platform.errors import DomainError

from .models import ComparisonTask, Round, TaskCompletion
from .rubrics import ranking_validate, scores_validate
from .strict_json import Errors, errors_raise

# Large enough for every annotator of any round; small enough for the smallint column.
GOLD_OVERLAP = 10_000


def _lock_task(task_id: int) -> ComparisonTask:
    task = (
        ComparisonTask.objects.select_for_update(of=("self",))
        .select_related("round__rubric")
        .filter(pk=task_id)
        .first()
    )
    if task is None:
        raise DomainError("No such task.", code="not_found", status=404)
    return task


def task_mark_gold(
    *, task_id: int, ranking: object, scores: object | None = None
) -> ComparisonTask:
    """Make a task gold with a reference ``ranking`` (groups of completion ids, best first) and
    optional reference ``scores`` ({completion id: {axis: score}}), validated as a judgment's
    are (``annotation.rubrics``). Marking a gold task again replaces its reference."""
    with transaction.atomic():
        task = _lock_task(task_id)
        completion_ids = list(
            TaskCompletion.objects.filter(task=task)
            .order_by("position")
            .values_list("completion_id", flat=True)
        )
        errors: Errors = {}
        clean_ranking = ranking_validate(
            ranking=ranking, completion_ids=completion_ids, errors=errors
        )
        clean_scores: dict[str, Any] | None = None
        if scores is not None:
            clean_scores = scores_validate(
                scores=scores, completion_ids=completion_ids, rubric=task.round.rubric,
                errors=errors,
            )  # fmt: skip
        errors_raise(errors)
        if len(clean_ranking) < 2:
            raise DomainError(
                "A gold ranking must order something.",
                fields={"ranking": ["All completions tie: a reference must rank them."]},
            )
        if not task.is_gold:
            Round.objects.select_for_update().filter(pk=task.round_id).update(
                gold_count=F("gold_count") + 1
            )
        task.gold_ranking = clean_ranking
        task.gold_scores = clean_scores
        task.overlap = GOLD_OVERLAP
        task.save(update_fields=["gold_ranking", "gold_scores", "overlap"])
    return task


def task_unmark_gold(*, task_id: int) -> ComparisonTask:
    """Make a gold task an ordinary one again (idempotent). Its judgments stay; its overlap
    returns to the round's, or to what it already holds if that is more."""
    with transaction.atomic():
        task = _lock_task(task_id)
        if task.is_gold:
            Round.objects.select_for_update().filter(pk=task.round_id).update(
                gold_count=F("gold_count") - 1
            )
            task.gold_ranking = None
            task.gold_scores = None
            task.overlap = max(task.round.overlap, task.submitted_count + task.leased_count)
            task.save(update_fields=["gold_ranking", "gold_scores", "overlap"])
    return task


def round_set_gold_rate(*, round_id: int, rate: float) -> Round:
    """Set the share of each annotator's tasks that come from the round's gold tasks."""
    if not 0 <= rate <= 1:
        raise DomainError(
            "gold_rate: a share from 0 to 1.", fields={"gold_rate": ["Must be from 0 to 1."]}
        )
    with transaction.atomic():
        round_ = Round.objects.select_for_update().filter(pk=round_id).first()
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        round_.gold_rate = rate
        round_.save(update_fields=["gold_rate"])
    return round_
