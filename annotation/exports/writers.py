"""The writers: an export's file, JSONL (one JSON object per line) or Parquet (the format's explicit
schema, in row groups of ``settings.EXPORT_BATCH_ROWS`` rows), written from the export's batches
(``plan.ExportPlan.batches``) in constant memory however many rows.

A file is written next to its destination as ``<name>.partial`` and renamed into place only when
complete, so a reader never sees half a file; on any error the partial file is removed. Both kinds
load with ``datasets.load_dataset("json" | "parquet", data_files=...)`` and no loading script.
"""

from __future__ import annotations

import gc
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from feedback.platform.errors import DomainError

from .copied import CopiedBatch
from .filters import ExportFilters
from .formats.base import Batch
from .plan import export_prepare
from .records import Progress

FILE_FORMATS = ("jsonl", "parquet")

# How much JSONL Arrow's reader parses at a time: its memory grows with the block, and a
# 1M-pair export's peak RSS was 25 MB lower with 1 MB blocks than with a batch (10 MB) at once.
PARQUET_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class ExportResult:
    rows: int
    size_bytes: int
    sha256: str


def file_format_for(path: Path) -> str:
    """The file format a path's extension names: ``.parquet`` or else JSONL."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"


class _WriteBehind:
    """Runs a file's writes on a thread of their own, at most ``DEPTH`` batches behind the
    caller. Writing, hashing and Parquet encoding release the GIL, so they overlap with building
    the next batch; an error in a write is raised in the caller at its next ``submit`` or at
    the end."""

    DEPTH = 1

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-write")
        self._pending: deque[Future[None]] = deque()

    def submit(self, write: Callable[..., None], *args: Any) -> None:
        self._pending.append(self._pool.submit(write, *args))
        while len(self._pending) > self.DEPTH:
            self._pending.popleft().result()

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        try:
            while self._pending:
                future = self._pending.popleft()
                if kind is None:
                    future.result()
                else:
                    future.cancel()
        finally:
            self._pool.shutdown(wait=True)


def _write_jsonl(batches: Iterable[Batch], path: Path) -> tuple[int, str]:
    """Rows written, and the file's sha256 (computed as it is written)."""
    count = 0
    digest = hashlib.sha256()

    def write(batch: Batch) -> None:
        # Lines the database wrote come in pieces (``copied.CopiedBatch``): written as they
        # are, rather than joined into one more copy of the batch.
        pieces = batch.pieces() if isinstance(batch, CopiedBatch) else (batch.jsonl(),)
        for data in pieces:
            out.write(data)
            digest.update(data)

    with path.open("wb") as out, _WriteBehind() as behind:
        for batch in batches:
            behind.submit(write, batch)
            count += len(batch)
    return count, digest.hexdigest()


def _write_parquet(batches: Iterable[Batch], path: Path, schema: Any) -> int:
    """Each batch's JSONL, read by Arrow's JSON reader with the format's explicit schema, written
    as row groups of exactly ``EXPORT_BATCH_ROWS`` rows (the last one fewer). The JSONL is the
    rows byte for byte (``formats.base.Batch``), so the table is the rows' (tests
    compare it with ``Table.from_pylist``). Arrow reads and encodes in C++ on the writing
    thread while the next batch is built, the two cores sharing the work, and without
    converting a Python object per value (``from_pylist`` took as long as building the rows)."""
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    size = max(1, settings.EXPORT_BATCH_ROWS)
    # The C library's allocator, which returns what is freed: pyarrow's default (mimalloc here)
    # keeps freed pages for reuse; a 1M-pair export's peak RSS was 175 MB with this one and
    # 180 MB with that.
    pool = pa.system_memory_pool()
    parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    held: list[pa.RecordBatch] = []

    def read(data: bytes, block_size: int) -> pa.Table:
        options = pa_json.ReadOptions(use_threads=False, block_size=block_size)
        return pa_json.read_json(
            pa.BufferReader(data), read_options=options, parse_options=parse, memory_pool=pool
        )

    def write(data: bytes) -> None:
        nonlocal held
        try:
            table = read(data, PARQUET_BLOCK_BYTES)
        except pa.ArrowInvalid:
            # A row longer than a block (a very long prompt): the batch in one block.
            table = read(data, len(data) + 1)
        held += table.to_batches()
        rows = sum(batch.num_rows for batch in held)
        if rows >= size:
            table = pa.Table.from_batches(held, schema=schema)
            whole = rows - rows % size
            writer.write_table(table.slice(0, whole), row_group_size=size)
            held = table.slice(whole).to_batches()

    count = 0
    with pq.ParquetWriter(path, schema, memory_pool=pool) as writer:
        with _WriteBehind() as behind:
            for batch in batches:
                if len(batch):
                    behind.submit(write, batch.jsonl())
                    count += len(batch)
        if held:
            writer.write_table(pa.Table.from_batches(held, schema=schema), row_group_size=size)
    return count


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector kept off what existed before the export and run less often:
    its passes over the export's millions of short-lived objects, and its full passes over
    everything the process had loaded, took a fifth of an export's CPU time (timed with
    ``gc.callbacks``). It still runs, so the few cycles the database layer makes are freed."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_format_check(file_format: str) -> None:
    if file_format not in FILE_FORMATS:
        raise DomainError(
            f"Unknown file format {file_format!r}.",
            fields={"file_format": [f"Must be one of: {', '.join(FILE_FORMATS)}."]},
        )


def export_write(
    *, fmt: str, file_format: str, filters: ExportFilters, out: Path, pseudonymous: bool = True,
    progress: Progress | None = None,
) -> ExportResult:  # fmt: skip
    """Write the export ``fmt`` with ``filters`` to ``out`` as ``file_format``; ``progress(n)``
    hears how many judgments (or demonstrations) have been read. Raises ``DomainError`` before
    writing anything for a bad format, file format or filter."""
    file_format_check(file_format)
    plan = export_prepare(fmt=fmt, filters=filters, pseudonymous=pseudonymous)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with _collector_paused():
            batches = plan.batches(progress)
            if file_format == "parquet":
                count = _write_parquet(batches, partial, plan.schema())
                sha256 = _sha256(partial)
            else:
                count, sha256 = _write_jsonl(batches, partial)
        result = ExportResult(rows=count, size_bytes=partial.stat().st_size, sha256=sha256)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return result
