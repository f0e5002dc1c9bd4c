"""The preference-pair formats write their files from column batches (``PairBatch``), not from
row dicts, and Parquet files are Arrow's reading of that JSONL: the JSONL must be byte for byte
``json.dumps`` of each row, and the Parquet file the same table as ``from_pylist`` of the rows,
for every pair format and the filters that change a row's shape. The rows themselves are checked
against the judgments in test_export_formats.py.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.exports import ExportFilters, export_prepare, export_write, records, writers
from annotation.imports import prompts_import
from annotation.rounds import round_open_from_imported

from .test_export_formats import _judge, _line, annotator, annotator2, data  # noqa: F401

pytestmark = pytest.mark.django_db

# Text that JSON must escape or may keep raw: quotes, backslashes, control characters, line
# and paragraph separators, non-ASCII letters, an astral-plane emoji.
ODD = 'Say "hi" \\ back.\n\tTab\x1f\u2028\u2029 é “curly” 😀'


@pytest.fixture
def odd(api, data, annotator):  # noqa: F811
    prompts_import(lines=[_line(ODD, [ODD, "plain", "é" * 40], "odd", system="Sys\r\n")])
    round_open_from_imported(k=3, overlap=1, seed=5)
    assert _judge(api(annotator), lambda _: ([[1], [0, 2]], "better", [5, 2, 2], [], ODD)) == 1


def _dumps(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def _both_ways(fmt: str, filters: ExportFilters) -> tuple[list[dict[str, Any]], Any]:
    plan = export_prepare(fmt=fmt, filters=filters)
    return list(plan.rows()), plan


FILTERS = [
    {},
    {"axis": "helpful"},
    {"rounds": [1]},
    {"flags": ["unsafe"]},
    {"exclude_flags": ["pii"], "min_trust": 0.4},
    {"min_agreement": 0.0},
]


@pytest.mark.parametrize("fmt", ["trl", "trl_implicit", "hh_rlhf"])
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_pair_batches_write_exactly_the_rows(odd, fmt, filters, monkeypatch, tmp_path):
    # Two judgments a batch: a task's judgments span batches, so nothing cached for one batch
    # can leak into the next.
    monkeypatch.setattr(records, "CHUNK_SIZE", 2)
    rows, plan = _both_ways(fmt, ExportFilters(**filters))
    assert rows or filters.get("flags"), "the filter should keep some pairs"

    written = b"".join(plan.jsonl())
    assert written == _dumps(rows)

    out = tmp_path / "pairs.parquet"
    export_write(fmt=fmt, file_format="parquet", filters=ExportFilters(**filters), out=out)
    table = pq.read_table(out)
    assert table.equals(pa.Table.from_pylist(rows, schema=plan.schema()))
    assert table.to_pylist() == rows


def test_parquet_rows_longer_than_a_block(odd, tmp_path, monkeypatch):
    # Arrow reads JSONL a block at a time; a row longer than a block (here every row) makes the
    # batch be read in one block instead.
    monkeypatch.setattr(writers, "PARQUET_BLOCK_BYTES", 64)
    rows, _ = _both_ways("trl", ExportFilters())
    out = tmp_path / "long.parquet"
    assert export_write(fmt="trl", file_format="parquet", filters=ExportFilters(), out=out).rows
    assert pq.read_table(out).to_pylist() == rows


def test_a_judgment_with_no_pairs_writes_nothing(api, data, annotator):  # noqa: F811
    # Every completion tied: no preference, no row, and no empty line in the file.
    prompts_import(lines=[_line("All the same?", ["a", "b", "c"], "tie")])
    round_open_from_imported(k=3, overlap=1, seed=7)
    assert _judge(api(annotator), lambda _: ([[0, 1, 2]], "", [4, 4, 4], [], "")) == 1
    rows, plan = _both_ways("trl", ExportFilters(rounds=(2, 3)))
    assert {row["round"] for row in rows} == {2}
    assert b"".join(plan.jsonl()).count(b"\n") == len(rows) == 3


def test_rows_come_a_task_at_a_time(odd):
    rows, _ = _both_ways("trl", ExportFilters())
    tasks = [row["task_id"] for row in rows]
    assert tasks == sorted(tasks)
    judged_twice = [t for t in set(tasks) if len({r["judgment_id"] for r in rows
                                                  if r["task_id"] == t}) == 2]  # fmt: skip
    assert len(judged_twice) == 2
