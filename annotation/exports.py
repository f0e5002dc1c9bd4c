"""Preference exports, streamed row by row so memory stays flat however large the table grows.

The TRL format is the explicit-prompt conversational preference format that ``DPOTrainer`` and
``RewardTrainer`` load directly: ``prompt`` is the chat so far, ``chosen`` and ``rejected`` are the
assistant turns. Every row carries its provenance (task, round, policy versions, rubric version,
judgment) and a pseudonymous annotator id: a keyed hash, stable across exports with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db.models import Prefetch

from .consensus import task_consensus, weighted_mean_scores
from .models import Judgment, TaskCompletion
from .pairs import ranking_to_pairs

FORMATS = ("trl",)
CHUNK_SIZE = 1000


def annotator_pseudonym(user_id: int) -> str:
    digest = hmac.new(
        settings.PSEUDONYM_KEY.encode(), f"annotator:{user_id}".encode(), hashlib.sha256
    )
    return "ann_" + digest.hexdigest()[:16]


def judgments_for_export(
    *, rounds: list[int] | None = None, by_task: bool = False
) -> Iterator[Judgment]:
    """Judgments with their task, prompt and completions, fetched a chunk at a time; with
    ``by_task``, a task's judgments come together (for consensus)."""
    order = ("task_id", "created_at", "id") if by_task else ("created_at", "id")
    judgments = Judgment.objects.select_related("task__prompt", "task__round", "rubric").order_by(
        *order
    )
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    slots = TaskCompletion.objects.select_related("completion__policy_version")
    return judgments.prefetch_related(Prefetch("task__slots", queryset=slots)).iterator(
        chunk_size=CHUNK_SIZE
    )


def preference_rows(judgments: Iterable[Judgment]) -> Iterator[dict[str, Any]]:
    for judgment in judgments:
        task = judgment.task
        completions = {slot.completion_id: slot.completion for slot in task.slots.all()}
        rubric = judgment.rubric
        axis = rubric.axes[0]
        pairs = ranking_to_pairs(
            judgment.ranking,
            strength_margin=rubric.strength_margins.get(judgment.strength),
            scores=judgment.scores,
            scale_width=float(axis["max"]) - float(axis["min"]),
        )
        annotator = annotator_pseudonym(judgment.annotator_id)
        for pair in pairs:
            chosen, rejected = completions[pair.chosen], completions[pair.rejected]
            yield {
                "prompt": task.prompt.messages,
                "chosen": [{"role": "assistant", "content": chosen.text}],
                "rejected": [{"role": "assistant", "content": rejected.text}],
                "margin": pair.margin,
                "chosen_scores": judgment.scores.get(str(pair.chosen), {}),
                "rejected_scores": judgment.scores.get(str(pair.rejected), {}),
                "chosen_rank": pair.chosen_rank,
                "rejected_rank": pair.rejected_rank,
                "chosen_completion_id": pair.chosen,
                "rejected_completion_id": pair.rejected,
                "chosen_policy": chosen.policy_version.name,
                "rejected_policy": rejected.policy_version.name,
                "strength": judgment.strength or None,
                "flags": judgment.flags,
                "task_id": task.pk,
                "round": task.round.number,
                "rubric": rubric.label,
                "judgment_id": str(judgment.pk),
                "annotator": annotator,
            }


def axis_pair_rows(judgments: Iterable[Judgment], axis: str) -> Iterator[dict[str, Any]]:
    """Pairs from one rubric axis's scores (for a per-axis reward model): within a judgment,
    every two completions whose scores on ``axis`` differ, the higher one chosen; the margin is
    the difference over the scale's width. The ranking plays no part."""
    for judgment in judgments:
        spec = next((a for a in judgment.rubric.axes if a["key"] == axis), None)
        if spec is None:
            continue
        width = float(spec["max"]) - float(spec["min"]) or 1.0
        task = judgment.task
        completions = {slot.completion_id: slot.completion for slot in task.slots.all()}
        scored = sorted((int(cid), s[axis]) for cid, s in judgment.scores.items() if axis in s)
        for (a, score_a), (b, score_b) in itertools.combinations(scored, 2):
            if score_a == score_b:
                continue
            (chosen, high), (rejected, low) = sorted(
                ((a, score_a), (b, score_b)), key=lambda item: -item[1]
            )
            yield {
                "prompt": task.prompt.messages,
                "chosen": [{"role": "assistant", "content": completions[chosen].text}],
                "rejected": [{"role": "assistant", "content": completions[rejected].text}],
                "margin": round((high - low) / width, 4),
                "axis": axis,
                "chosen_completion_id": chosen,
                "rejected_completion_id": rejected,
                "task_id": task.pk,
                "round": task.round.number,
                "rubric": judgment.rubric.label,
                "judgment_id": str(judgment.pk),
                "annotator": annotator_pseudonym(judgment.annotator_id),
            }


# An annotator's weight in a consensus; issue 6's trust scores plug in here. Equal by default.
Weights = Callable[[int], float]


def _equal(annotator_id: int) -> float:
    return 1.0


def tasks_of(judgments: Iterable[Judgment]) -> Iterator[list[Judgment]]:
    """Judgments (ordered by task, see ``judgments_for_export(by_task=True)``) a task at a time."""
    for _, group in itertools.groupby(judgments, key=lambda judgment: judgment.task_id):
        yield list(group)


def consensus_preference_rows(
    judgments: Iterable[Judgment], *, weights: Weights = _equal
) -> Iterator[dict[str, Any]]:
    """Preference pairs with one consensus per task (``annotation.consensus``): a task judged
    once gives its ranking's pairs as ``preference_rows`` does; a task judged several times gives
    the pairs of its Bradley-Terry consensus, each once, with margin 2·P(chosen wins) - 1."""
    for group in tasks_of(judgments):
        if len(group) == 1:
            yield from preference_rows(group)
            continue
        task = group[0].task
        completions = {slot.completion_id: slot.completion for slot in task.slots.all()}
        consensus = task_consensus(
            list(completions), [(j.ranking, weights(j.annotator_id)) for j in group]
        )
        for chosen_id, rejected_id, margin in consensus.pairs():
            chosen, rejected = completions[chosen_id], completions[rejected_id]
            yield {
                "prompt": task.prompt.messages,
                "chosen": [{"role": "assistant", "content": chosen.text}],
                "rejected": [{"role": "assistant", "content": rejected.text}],
                "margin": margin,
                "chosen_completion_id": chosen_id,
                "rejected_completion_id": rejected_id,
                "chosen_policy": chosen.policy_version.name,
                "rejected_policy": rejected.policy_version.name,
                "consensus": "bradley_terry",
                "task_id": task.pk,
                "round": task.round.number,
                "rubric": group[-1].rubric.label,
                "judgment_ids": [str(j.pk) for j in group],
                "annotators": [annotator_pseudonym(j.annotator_id) for j in group],
            }


def consensus_axis_pair_rows(
    judgments: Iterable[Judgment], axis: str, *, weights: Weights = _equal
) -> Iterator[dict[str, Any]]:
    """Per-axis pairs with one consensus per task: a task judged several times is scored by the
    weighted mean of its annotators' scores on ``axis``, and pairs are cut from those means."""
    for group in tasks_of(judgments):
        if len(group) == 1:
            yield from axis_pair_rows(group, axis)
            continue
        spec = next((a for a in group[-1].rubric.axes if a["key"] == axis), None)
        if spec is None:
            continue
        width = float(spec["max"]) - float(spec["min"]) or 1.0
        task = group[0].task
        completions = {slot.completion_id: slot.completion for slot in task.slots.all()}
        means = weighted_mean_scores([(j.scores, weights(j.annotator_id)) for j in group], axis)
        for a, b in itertools.combinations(sorted(means), 2):
            if means[a] == means[b]:
                continue
            chosen, rejected = (a, b) if means[a] > means[b] else (b, a)
            yield {
                "prompt": task.prompt.messages,
                "chosen": [{"role": "assistant", "content": completions[chosen].text}],
                "rejected": [{"role": "assistant", "content": completions[rejected].text}],
                "margin": round((means[chosen] - means[rejected]) / width, 4),
                "axis": axis,
                "consensus": "weighted_mean",
                "chosen_completion_id": chosen,
                "rejected_completion_id": rejected,
                "task_id": task.pk,
                "round": task.round.number,
                "rubric": group[-1].rubric.label,
                "judgment_ids": [str(j.pk) for j in group],
            }


def kto_rows(
    judgments: Iterable[Judgment], *, weights: Weights = _equal
) -> Iterator[dict[str, Any]]:
    """Unpaired examples for KTO (Ethayarajh et al., 2024): per task, the completions ranked
    best are desirable (``label`` true) and those ranked worst undesirable; the middle ones, whose
    goodness a ranking does not say, are left out. A task judged several times is ordered by its
    Bradley-Terry consensus; a task whose completions all tie gives nothing."""
    for group in tasks_of(judgments):
        task = group[0].task
        completions = {slot.completion_id: slot.completion for slot in task.slots.all()}
        if len(group) == 1:
            ranking = group[0].ranking
        else:
            ranking = task_consensus(
                list(completions), [(j.ranking, weights(j.annotator_id)) for j in group]
            ).groups()
        if len(ranking) < 2:
            continue
        for label, members in ((True, ranking[0]), (False, ranking[-1])):
            for cid in members:
                yield {
                    "prompt": task.prompt.messages,
                    "completion": [{"role": "assistant", "content": completions[cid].text}],
                    "label": label,
                    "completion_id": cid,
                    "policy": completions[cid].policy_version.name,
                    "task_id": task.pk,
                    "round": task.round.number,
                    "rubric": group[-1].rubric.label,
                    "judgments": len(group),
                }


def preference_pair_count(*, rounds: list[int] | None = None) -> int:
    """How many rows the preference export has: C(K,2) minus the tied pairs, per judgment."""
    judgments = Judgment.objects.all()
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    total = 0
    for ranking in judgments.values_list("ranking", flat=True).iterator(chunk_size=CHUNK_SIZE):
        sizes = [len(group) for group in ranking]
        k = sum(sizes)
        total += (k * (k - 1) - sum(g * (g - 1) for g in sizes)) // 2
    return total


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"
