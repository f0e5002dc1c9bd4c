"""Dataset exports, streamed row by row so memory stays flat however large the table grows.

One road from judgments to rows, a module a stop:

- ``filters.py``: ``ExportFilters``, which judgments are read and how a task's judgments
  combine, parsed from a query string or JSON and checked (``export_filters_parse``);
- ``records.py``: the record stream, the selected judgments (or demonstrations) as plain
  records a task at a time, the flag, trust and agreement filters applied as they pass;
- ``context.py``: what every row of one export shares (struct fields, pseudonyms, trust);
- ``consensus.py``: a task's several judgments as one set of pairs or one ranking (a single
  judgment's pairs are ``annotation.pairs.judgment_ranked_pairs``);
- ``formats/``: one module per format family, each with its Arrow schema beside its row
  builder, and ``FORMATS``;
- ``plan.py``: a checked export (``export_prepare``) and ``export_rows``, the one function that
  yields an export's rows: the API, the CLI, the research page and training snapshots read it;
- ``writers.py``: JSONL and Parquet files (``export_write``).

``jobs.py`` queues an export too large for one request and writes it on a worker.

Every row carries its provenance (task, round, policy versions, rubric version, judgment) and a
pseudonymous annotator id: a keyed hash, stable across exports with the same key.

Column types never change from one row to the next, so that ``datasets.load_dataset("json")``,
which fixes every column's type from the file's first 10 MB, loads any file without a cast
error: no column is null in some rows and a value in others. Absent text is "", an absent id is 0
(ids start at 1) and an absent score is 0 (scales start at 1). Per-axis scores are structs with
the same fields in every row: the axes of every rubric the exported judgments used, looked up
before the first row. Flags are a struct of booleans, one per rubric flag, rather than a list of
keys, because a list that stays empty through the first 10 MB (flags are rare) would be typed as a
list of nulls and the first flag after it would fail the load. The Parquet writer uses each
format's explicit schema, ``ExportFormat.schema``.
"""

from __future__ import annotations

from .context import annotator_pseudonym
from .filters import CONSENSUS_RULES, WEIGHTINGS, ExportFilters, export_filters_parse
from .formats import FORMATS, export_format
from .plan import export_prepare, export_rows, export_source_count
from .records import judgment_records, preference_pair_count
from .writers import FILE_FORMATS, export_write, file_format_for

__all__ = [
    "CONSENSUS_RULES", "FILE_FORMATS", "FORMATS", "WEIGHTINGS", "ExportFilters",
    "annotator_pseudonym", "export_filters_parse", "export_format",
    "export_prepare", "export_rows", "export_source_count", "export_write", "file_format_for",
    "judgment_records", "preference_pair_count",
]  # fmt: skip
