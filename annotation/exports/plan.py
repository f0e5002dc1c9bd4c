"""A checked export, ready to stream: its format and context settled before the first row, so that
a bad request fails before the first byte is sent. ``export_rows`` is the one function that
yields an export's rows, for the API, the CLI, the research page, jobs and training snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from .context import ExportContext, export_context
from .copied import copied_pair_batches
from .filters import ExportFilters
from .formats import export_check
from .formats.base import Batch, ExportFormat, row_batches
from .records import (
    Progress,
    demonstration_stream,
    demonstrations_selected,
    judgment_stream,
    judgments_selected,
)
from .sql import sql_applies

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class ExportPlan:
    """A checked export: its format and context, ready to stream rows or give its schema."""

    format: ExportFormat
    context: ExportContext

    def schema(self) -> pa.Schema:
        return self.format.schema(self.context)

    def rows(self, progress: Progress | None = None) -> Iterator[dict[str, Any]]:
        return self.format.rows(self._source(progress), self.context)

    def batches(self, progress: Progress | None = None) -> Iterator[Batch]:
        """The rows in batches, each able to give its JSONL."""
        if sql_applies(fmt=self.format.name, filters=self.context.filters):
            return copied_pair_batches(fmt=self.format.name, context=self.context,
                                       progress=progress)  # fmt: skip
        source = self._source(progress)
        if self.format.batches is not None:
            return self.format.batches(source, self.context)
        return row_batches(self.format.rows(source, self.context), size=settings.EXPORT_BATCH_ROWS)

    def jsonl(self, progress: Progress | None = None) -> Iterator[bytes]:
        """The export as JSONL, UTF-8, a batch at a time."""
        for batch in self.batches(progress):
            yield batch.jsonl()

    def _source(self, progress: Progress | None) -> Iterator[Any]:
        filters, trust = self.context.filters, self.context.trust
        if self.format.reads == "demonstration":
            return demonstration_stream(filters=filters, trust=trust, progress=progress)
        # Only the raw judgments show when a judgment was made (reading it is a tenth of a read).
        times = self.format.name == "judgments"
        return judgment_stream(filters=filters, trust=trust, times=times, progress=progress)


def export_prepare(*, fmt: str, filters: ExportFilters, pseudonymous: bool = True) -> ExportPlan:
    """Check the export and settle its context now; the rows are read when they are iterated."""
    spec = export_check(fmt=fmt, filters=filters)
    rubrics = () if spec.reads == "demonstration" else None
    context = export_context(filters=filters, pseudonymous=pseudonymous, rubrics=rubrics)
    return ExportPlan(spec, context)


def export_rows(
    *, fmt: str, filters: ExportFilters, pseudonymous: bool = True,
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The rows of an export, streamed; ``progress(n)`` hears how many judgments (or
    demonstrations) have been read. Raises ``DomainError`` at once for a bad format or filter."""
    return export_prepare(fmt=fmt, filters=filters, pseudonymous=pseudonymous).rows(progress)


def export_source_count(*, fmt: str, filters: ExportFilters) -> int:
    """How many judgments (or demonstrations) the export will read: a progress bar's total."""
    spec = export_check(fmt=fmt, filters=filters)
    if spec.reads == "demonstration":
        return demonstrations_selected(filters=filters).count()
    return judgments_selected(filters=filters).count()
