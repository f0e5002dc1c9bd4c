"""Export files: JSONL (one JSON object per line) or Parquet (the format's explicit schema, written
in record batches of ``settings.EXPORT_BATCH_ROWS`` rows), in constant memory however many rows.

A file is written next to its destination as ``<name>.partial`` and renamed into place only when
complete, so a reader never sees half a file; on any error the partial file is removed. Both kinds
load with ``datasets.load_dataset("json" | "parquet", data_files=...)`` and no loading script.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from feedback.errors import DomainError

from .exports import FILE_FORMATS, ExportFilters, export_prepare

__all__ = ["FILE_FORMATS", "ExportResult", "export_write", "file_format_for"]


@dataclass(frozen=True)
class ExportResult:
    rows: int
    size_bytes: int
    sha256: str


def file_format_for(path: Path) -> str:
    """The file format a path's extension names: ``.parquet`` or else JSONL."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"


def _write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False))
            out.write("\n")
            count += 1
    return count


def _write_parquet(rows: Iterable[dict[str, Any]], path: Path, schema: Any) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # One record batch (one row group) at a time: only that many rows are ever held.
    size = max(1, settings.EXPORT_BATCH_ROWS)
    count = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(path, schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) == size:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def export_write(
    *, fmt: str, file_format: str, filters: ExportFilters, out: Path, pseudonymous: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:  # fmt: skip
    """Write the export ``fmt`` with ``filters`` to ``out`` as ``file_format``; ``progress(n)``
    hears how many judgments (or demonstrations) have been read. Raises ``DomainError`` before
    writing anything for a bad format, file format or filter."""
    if file_format not in FILE_FORMATS:
        raise DomainError(
            f"Unknown file format {file_format!r}.",
            fields={"file_format": [f"Must be one of: {', '.join(FILE_FORMATS)}."]},
        )
    plan = export_prepare(fmt=fmt, filters=filters, pseudonymous=pseudonymous)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        rows = plan.rows(progress)
        if file_format == "parquet":
            count = _write_parquet(rows, partial, plan.schema())
        else:
            count = _write_jsonl(rows, partial)
        result = ExportResult(
            rows=count, size_bytes=partial.stat().st_size, sha256=_sha256(partial)
        )
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return result
