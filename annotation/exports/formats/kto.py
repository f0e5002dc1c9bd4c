"""KTO's unpaired examples (Ethayarajh et al., 2024): the completions ranked best are desirable
(``label`` true) and those ranked worst undesirable; the middle ones, whose goodness a ranking
does not say, are left out. Where no answer is acceptable (a judgment says so, or under a
consensus the task's judgments as one: ``consensus.consensus_none_acceptable``), every
completion is undesirable and none desirable: the ranking only says which was least bad."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..consensus import consensus_none_acceptable, consensus_provenance, consensus_ranking
from ..context import ExportContext
from ..records import JudgmentRecord, tasks_of
from .base import EVERY_FILTER, ORDERING_ONLY, ExportFormat, messages_type

if TYPE_CHECKING:
    import pyarrow as pa


def _rows(judgments: Iterable[JudgmentRecord], context: ExportContext) -> Iterator[dict[str, Any]]:
    """Per judgment, or with a consensus per task ordered by its Bradley-Terry consensus; a
    ranking whose completions all tie gives nothing, unless no answer is acceptable (then
    every completion is undesirable, best ranked first)."""
    if context.filters.consensus == "none":
        groups: Iterable[list[JudgmentRecord]] = ([judgment] for judgment in judgments)
    else:
        groups = tasks_of(judgments)
    for group in groups:
        task = group[0].task
        ranking = consensus_ranking(group=group, context=context)
        if consensus_none_acceptable(group=group, context=context):
            labelled = [(False, [cid for members in ranking for cid in members])]
        elif len(ranking) < 2:
            continue
        else:
            labelled = [(True, ranking[0]), (False, ranking[-1])]
        shared = {
            "task_id": task.pk,
            "round": task.round,
            **consensus_provenance(group=group, context=context),
        }
        for label, members in labelled:
            for cid in members:
                yield {
                    "prompt": task.messages,
                    "completion": [{"role": "assistant", "content": task.completions[cid].text}],
                    "label": label,
                    "completion_id": cid,
                    "policy": task.completions[cid].policy,
                    **shared,
                }


def _schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("prompt", messages_type(pa)), ("completion", messages_type(pa)), ("label", pa.bool_()),
        ("completion_id", pa.int64()), ("policy", pa.string()), ("task_id", pa.int64()),
        ("round", pa.int64()), ("rubric", pa.string()), ("judgments", pa.int64()),
        ("judgment_ids", pa.list_(pa.string())), ("annotators", pa.list_(pa.string())),
    ])  # fmt: skip


KTO = ExportFormat(
    "kto", "KTO unpaired examples: best-ranked desirable, worst-ranked undesirable", "example",
    _rows, _schema, EVERY_FILTER - {"axis"} - ORDERING_ONLY,
)  # fmt: skip
