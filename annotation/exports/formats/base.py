"""What every export format is (``ExportFormat``), the batches its rows come in (``RowBatch``, or
a columnar batch of its own that writes the same bytes faster), and the JSON encoding and Arrow
types the formats share."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..context import ExportContext
from ..filters import FILTER_NAMES

if TYPE_CHECKING:
    import pyarrow as pa

# ``json.dumps(value, ensure_ascii=False)``, without building an encoder on every call.
json_encode = json.JSONEncoder(ensure_ascii=False).encode

Messages = list[dict[str, str]]


class Batch(Protocol):
    """Rows a batch at a time: as dicts, or as JSONL (UTF-8) that is byte for byte
    ``json.dumps(row, ensure_ascii=False)`` of each row, a line each."""

    def __len__(self) -> int: ...

    def rows(self) -> Iterator[dict[str, Any]]: ...

    def jsonl(self) -> bytes: ...


class RowBatch:
    """Rows as dicts, for formats without a columnar form."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> Iterator[dict[str, Any]]:
        return iter(self._rows)

    def jsonl(self) -> bytes:
        return "".join([json_encode(row) + "\n" for row in self._rows]).encode()


def row_batches(rows: Iterable[dict[str, Any]], *, size: int) -> Iterator[RowBatch]:
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, max(1, size))):
        yield RowBatch(chunk)


# A format's rows, and its rows in batches, from what it reads (judgments or demonstrations).
RowsOf = Callable[[Iterable[Any], ExportContext], Iterator[dict[str, Any]]]
BatchesOf = Callable[[Iterable[Any], ExportContext], Iterator[Batch]]

# The filters a format that reads judgments honours: every one, or all but the ways a task's
# judgments combine (for the formats with a row per judgment). The formats that give no
# ordering (KTO, the raw judgments) always read what says no answer is acceptable: they do
# not honour ``include_none_acceptable``.
EVERY_FILTER = FILTER_NAMES
PER_JUDGMENT = FILTER_NAMES - {"consensus", "weighting"}
ORDERING_ONLY = frozenset({"include_none_acceptable"})


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its rows, its Parquet schema, and the filters it honours (any other
    filter set to a value of its own is refused rather than silently ignored). A format with
    ``batches`` writes its files from those; the others batch their rows."""

    name: str
    description: str  # one line, for the UI
    unit: str  # what a row is: "pair", "example", "judgment" or "demonstration"
    rows: RowsOf
    schema: Callable[[ExportContext], pa.Schema]
    honours: frozenset[str] = EVERY_FILTER
    batches: BatchesOf | None = None

    @property
    def reads(self) -> str:
        return "demonstration" if self.unit == "demonstration" else "judgment"


# --- Arrow types (pyarrow is imported when a Parquet file is written) ---------------------------


def messages_type(pa: Any) -> pa.DataType:
    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def flag_fields(pa: Any, context: ExportContext) -> list[tuple[str, pa.DataType]]:
    # Parquet cannot store a struct without fields: rubrics without flags give no column.
    if not context.flags:
        return []
    return [("flags", pa.struct([(flag, pa.bool_()) for flag in context.flags]))]
