"""A task's several judgments as one: the pairs or the ranking an export writes once per task
when it asks for a consensus (``consensus="bradley_terry"``). The fitting itself, and why
Bradley-Terry, is ``annotation.consensus``; a single judgment's pairs are
``annotation.pairs.judgment_ranked_pairs``, the expansion every pair row comes from."""

from __future__ import annotations

from typing import Any

from ..consensus import Consensus, task_consensus, weighted_mean_scores
from ..pairs import PairCut, axis_width, judgment_ranked_pairs, score_pairs
from .context import ExportContext
from .records import JudgmentRecord


def consensus_pairs(
    *, group: list[JudgmentRecord], context: ExportContext
) -> tuple[list[PairCut], str]:
    """A task's pairs and the rule that made them: a task judged once gives its ranking's pairs
    ("single"); one judged several times the pairs of its (weighted) Bradley-Terry consensus,
    each once, with margin 2·P(chosen wins) - 1; with an axis, the pairs of the weighted mean
    of its annotators' scores on that axis ("weighted_mean")."""
    axis = context.filters.axis
    if len(group) == 1:
        (judgment,) = group
        cuts = judgment_ranked_pairs(
            judgment.rubric, judgment.ranking, judgment.scores, judgment.strength, axis
        )
        return [(chosen, rejected, margin) for chosen, rejected, _, _, margin in cuts], "single"
    if axis:
        width = axis_width(group[-1].rubric, axis)
        means = weighted_mean_scores(
            [(j.scores, context.weights(j.annotator_id)) for j in group], axis
        )
        return ([] if width is None else score_pairs(means, width)), "weighted_mean"
    return _fitted(group, context).pairs(), "bradley_terry"


def consensus_ranking(*, group: list[JudgmentRecord], context: ExportContext) -> list[list[int]]:
    """A task's ranking, groups best first: its one judgment's, or its consensus ordering."""
    if len(group) == 1:
        return group[0].ranking
    return _fitted(group, context).groups()


def consensus_provenance(*, group: list[JudgmentRecord], context: ExportContext) -> dict[str, Any]:
    """The columns that say which judgments a consensus row stands for."""
    return {
        "rubric": group[-1].rubric.label,
        "judgments": len(group),
        "judgment_ids": [j.pk for j in group],
        "annotators": [context.annotator(j.annotator_id) for j in group],
    }


def consensus_none_acceptable(*, group: list[JudgmentRecord], context: ExportContext) -> bool:
    """Whether a task's judgments, as one, say that none of its answers is acceptable: at least
    half of their weight (equal, or trust) does; a single judgment says it for itself. A tie
    counts as unacceptable: an answer half the annotators reject is not one to call good."""
    if not any(j.none_acceptable for j in group):
        return False
    said = sum(context.weights(j.annotator_id) for j in group if j.none_acceptable)
    return 2 * said >= sum(context.weights(j.annotator_id) for j in group)


def _fitted(group: list[JudgmentRecord], context: ExportContext) -> Consensus:
    return task_consensus(
        list(group[0].task.completions),
        [(j.ranking, context.weights(j.annotator_id)) for j in group],
    )
