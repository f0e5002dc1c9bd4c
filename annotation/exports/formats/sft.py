"""SFT conversations from demonstrations: each prompt followed by the ideal answer an annotator
wrote (TRL's conversational language-modelling format)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ...models import Demonstration
from ..context import ABSENT, ExportContext
from .base import ExportFormat, messages_type

if TYPE_CHECKING:
    import pyarrow as pa


def _rows(
    demonstrations: Iterable[Demonstration], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """A row per demonstration; ``source_completion_id`` is 0 for an answer written from
    scratch."""
    for demo in demonstrations:
        yield {
            "messages": [*demo.prompt.messages, {"role": "assistant", "content": demo.text}],
            "demonstration_id": demo.pk,
            "prompt_id": demo.prompt_id,
            "author": context.annotator(demo.author_id),
            "source_completion_id": demo.source_completion_id or ABSENT,
            "created_at": demo.created_at.isoformat(),
        }


def _schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("messages", messages_type(pa)), ("demonstration_id", pa.int64()),
        ("prompt_id", pa.int64()), ("author", pa.string()), ("source_completion_id", pa.int64()),
        ("created_at", pa.string()),
    ])  # fmt: skip


SFT = ExportFormat(
    "sft", "SFT conversations from demonstrations (messages)", "demonstration", _rows, _schema,
    frozenset({"rounds", "since", "until", "min_trust"}),
)  # fmt: skip
