"""Fine-grained ratings in UltraFeedback's shape: one row per judgment, the instruction and every
completion with its rating on each rubric axis (or on the ``axis`` filter's only)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..context import ABSENT, ExportContext
from ..records import JudgmentRecord
from .base import PER_JUDGMENT, ExportFormat, messages_type

if TYPE_CHECKING:
    import pyarrow as pa


def _last_user_turn(messages: Sequence[Mapping[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def _axes(context: ExportContext) -> tuple[str, ...]:
    return (context.filters.axis,) if context.filters.axis else context.axes


def _rows(judgments: Iterable[JudgmentRecord], context: ExportContext) -> Iterator[dict[str, Any]]:
    """Per judgment, the instruction and every completion with its per-axis rating; the
    judgment's rationale stands as every axis's rationale. Its ratings are read as an
    ordering (binarised into pairs), so a judgment that found no answer acceptable is left
    out unless asked (``include_none_acceptable``), as in the pair formats."""
    axis, axes = context.filters.axis, _axes(context)
    include = context.filters.include_none_acceptable
    for judgment in judgments:
        if axis and axis not in judgment.rubric.axis_keys:
            continue
        if judgment.none_acceptable and not include:
            continue
        task = judgment.task
        completions = []
        for slot in task.slots:
            scores = judgment.scores.get(str(slot.completion_id), {})
            completions.append(
                {
                    "completion_id": slot.completion_id,
                    "model": slot.policy,
                    "response": slot.text,
                    "annotations": {
                        key: {"Rating": scores.get(key, ABSENT), "Rationale": judgment.rationale}
                        for key in axes
                    },
                }
            )
        row = {
            "instruction": _last_user_turn(task.messages),
            "prompt": task.messages,
            "completions": completions,
            "judgment_id": judgment.pk,
            "annotator": context.annotator(judgment.annotator_id),
            "task_id": task.pk,
            "round": task.round,
            "rubric": judgment.rubric.label,
            "ranking": judgment.ranking,
        }
        if include:
            row["none_acceptable"] = judgment.none_acceptable
        yield row


def _schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    rating = pa.struct([("Rating", pa.int64()), ("Rationale", pa.string())])
    completion = pa.struct([
        ("completion_id", pa.int64()), ("model", pa.string()), ("response", pa.string()),
        ("annotations", pa.struct([(axis, rating) for axis in _axes(context)])),
    ])  # fmt: skip
    return pa.schema([
        ("instruction", pa.string()), ("prompt", messages_type(pa)),
        ("completions", pa.list_(completion)), ("judgment_id", pa.string()),
        ("annotator", pa.string()), ("task_id", pa.int64()), ("round", pa.int64()),
        ("rubric", pa.string()), ("ranking", pa.list_(pa.list_(pa.int64()))),
        *([("none_acceptable", pa.bool_())] if context.filters.include_none_acceptable else []),
    ])  # fmt: skip


ULTRAFEEDBACK = ExportFormat(
    "ultrafeedback", "Fine-grained per-axis ratings of every completion, UltraFeedback-like, "
    "one row per judgment", "judgment", _rows, _schema, PER_JUDGMENT,
)  # fmt: skip
