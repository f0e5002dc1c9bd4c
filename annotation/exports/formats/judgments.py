"""The raw judgments: every field of every judgment as it was recorded, with the task's prompt
and completions at the task's positions, and ``display_order``: the completion ids in the order
this annotator was shown them (an order of each assignment's own; empty where none was
recorded), so position bias can be studied from the export alone."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..context import ExportContext
from ..records import JudgmentRecord
from .base import ORDERING_ONLY, PER_JUDGMENT, ExportFormat, flag_fields, messages_type

if TYPE_CHECKING:
    import pyarrow as pa


def _rows(judgments: Iterable[JudgmentRecord], context: ExportContext) -> Iterator[dict[str, Any]]:
    for judgment in judgments:
        task = judgment.task
        slots = task.slots
        row = {
            "judgment_id": judgment.pk,
            "assignment_id": judgment.assignment_id,
            "task_id": task.pk,
            "round": task.round,
            "round_policy": task.round_policy,
            "prompt": task.messages,
            "completions": [
                {
                    "completion_id": slot.completion_id,
                    "position": slot.position,
                    "policy": slot.policy,
                    "text": slot.text,
                }
                for slot in slots
            ],
            "ranking": judgment.ranking,
            "none_acceptable": judgment.none_acceptable,
            "scores": [
                {"completion_id": slot.completion_id, "axis": axis, "score": score}
                for slot in slots
                for axis, score in judgment.scores.get(str(slot.completion_id), {}).items()
            ],
            "strength": judgment.strength,
        }
        if context.flags:
            row["flags"] = context.flag_struct(judgment.flags)
        yield row | {
            "rationale": judgment.rationale,
            "time_spent_ms": judgment.time_spent_ms,
            "rubric": judgment.rubric.label,
            "annotator": context.annotator(judgment.annotator_id),
            "created_at": judgment.created_at.isoformat(),
            "gold": task.gold,
            "display_order": judgment.display_order,
        }


def _schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    completion = pa.struct([
        ("completion_id", pa.int64()), ("position", pa.int64()), ("policy", pa.string()),
        ("text", pa.string()),
    ])  # fmt: skip
    score = pa.struct([("completion_id", pa.int64()), ("axis", pa.string()), ("score", pa.int64())])
    return pa.schema([
        ("judgment_id", pa.string()), ("assignment_id", pa.string()), ("task_id", pa.int64()),
        ("round", pa.int64()), ("round_policy", pa.string()), ("prompt", messages_type(pa)),
        ("completions", pa.list_(completion)), ("ranking", pa.list_(pa.list_(pa.int64()))),
        ("none_acceptable", pa.bool_()), ("scores", pa.list_(score)), ("strength", pa.string()),
        *flag_fields(pa, context),
        ("rationale", pa.string()), ("time_spent_ms", pa.int64()), ("rubric", pa.string()),
        ("annotator", pa.string()), ("created_at", pa.string()), ("gold", pa.bool_()),
        ("display_order", pa.list_(pa.int64())),
    ])  # fmt: skip


# Read with ``times`` (``records.judgment_records``): the only format that shows created_at
# and display_order.
JUDGMENTS = ExportFormat(
    "judgments", "Raw judgments with every field and pseudonymous annotator ids", "judgment",
    _rows, _schema, PER_JUDGMENT - {"axis"} - ORDERING_ONLY,
)  # fmt: skip
