"""On PostgreSQL the pair formats' JSONL is built by the database and streamed with COPY
(``exports/sql.py``, ``exports/copied.py``): byte for byte what the Python path writes, for every
pair format, filter and kind of text; the margins rounded as Python rounds them; and the
formats and filters that need Python fall back to it.

The other export tests run on both paths as they stand: on PostgreSQL their ``jsonl()`` and
files come from the database, on SQLite from Python.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection

from annotation.exports import ExportFilters, copied, export_prepare, export_write, sql
from annotation.exports.filters import export_filters_parse
from annotation.imports import prompts_import
from annotation.models import Judgment
from annotation.rounds import round_open_from_imported

from .test_export_batches import ODD
from .test_export_formats import _judge, _line, annotator, annotator2, data  # noqa: F401

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the SQL path is PostgreSQL's"
)
pytestmark = [pytest.mark.django_db, on_postgresql]

# What JSON escapes or keeps raw, and what PostgreSQL's JSON might write otherwise: every
# control character it can store, DEL, a lone "\u", line and paragraph separators, astral
# emoji, combining marks, and a text longer than any buffer.
EDGE = ODD + "".join(map(chr, range(1, 32))) + "\x7f \\u0041 \u2028\u2029 👩‍👩‍👧 e\u0301 "
LONG = 'abc ✓ "q" \\ \n' * 5000


def _python_and_sql(
    monkeypatch: pytest.MonkeyPatch, fmt: str, **options: Any
) -> tuple[bytes, bytes]:
    plan = export_prepare(fmt=fmt, **options)
    assert sql.sql_applies(fmt=fmt, filters=plan.context.filters)
    built = b"".join(plan.jsonl())
    monkeypatch.setattr(sql, "ENABLED", False)
    python = b"".join(export_prepare(fmt=fmt, **options).jsonl())
    monkeypatch.setattr(sql, "ENABLED", True)
    return python, built


@pytest.fixture
def edge(api, data, annotator, annotator2):  # noqa: F811
    system = "Sys\r\n" + EDGE
    prompts_import(lines=[_line(EDGE, [EDGE, LONG, "é" * 40, "plain"], "edge", system=system)])
    round_open_from_imported(k=4, overlap=2, seed=5)
    # Ties in first and last place, and scores whose means give margins like 1/9.
    plan = lambda _: ([[1, 3], [0], [2]], "", [5, 3, 2, 7], ["pii"], EDGE)  # noqa: E731
    assert _judge(api(annotator), plan) == 1
    plan = lambda _: ([[0], [1], [2, 3]], "better", [4, 1, 6, 6], [], "")  # noqa: E731
    assert _judge(api(annotator2), plan) == 1


FILTERS = [
    {},
    {"rounds": [1, 3]},
    {"policies": ["edge-1"]},
    {"rubric": "3H@1"},
    {"flags": ["pii", "unsafe"]},
    {"exclude_flags": ["unsafe"], "min_trust": 0.4},
    {"since": "2000-01-01", "until": "2999-01-01"},
]


def test_the_database_writes_the_python_paths_bytes(edge, monkeypatch):
    last = Judgment.objects.latest("created_at", "id").created_at
    dates = [ExportFilters(since=last), ExportFilters(until=last),
             ExportFilters(since=last - timedelta(microseconds=1))]  # fmt: skip
    for fmt in ("trl", "trl_implicit", "hh_rlhf"):
        for filters in [*map(export_filters_parse, FILTERS), *dates]:
            python, built = _python_and_sql(monkeypatch, fmt, filters=filters)
            assert built == python, (fmt, filters)
            assert python or filters.flags
        options = {"filters": ExportFilters(), "pseudonymous": False}
        python, built = _python_and_sql(monkeypatch, fmt, **options)
        assert built == python and b'"annotator": "ann2"' in built


def test_margins_round_as_python_rounds():
    # Halfway points, exactly (multiples of 1/32) or only in their shortest decimal, both ways;
    # the neighbours of halfway points; and thousands of ordinary ones.
    rng = random.Random(7)
    xs = [0.0, 1.0, 0.5, 1 / 3, 2 / 3, 1 / 9, 0.03125, 0.09375, 0.96875, 0.00015, 5e-05,
          0.00025, 0.12345, 0.99995, 0.00005, 0.0001, 1e-05, 1.5, 2.00005, 0.6666666666666666]  # fmt: skip
    xs += [k / 20000 for k in range(1, 20001, 2)][::7]
    xs += [(k + 0.5) / 10000 * (1 + d) for k in range(0, 10000, 97) for d in (-1e-15, 1e-15)]
    xs += [rng.random() for _ in range(3000)] + [rng.randint(0, 60) / 36 for _ in range(300)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {sql.rounded_margin('x')} FROM unnest(%s::float8[]) WITH ORDINALITY AS"
            " v(x, i) ORDER BY i",
            [xs],
        )
        written = [row[0] for row in cursor.fetchall()]
    assert written == [repr(round(x, 4)) for x in xs]


@pytest.mark.django_db(transaction=True)
def test_two_connections_merge_in_order_with_progress(edge, monkeypatch, tmp_path):
    # Committed data, out of a transaction: the tasks dealt one by one to two connections.
    monkeypatch.setattr(copied, "STRIPE", 1)
    heard: list[int] = []
    out = tmp_path / "pairs.jsonl"
    result = export_write(fmt="trl", file_format="jsonl", filters=ExportFilters(), out=out,
                          progress=heard.append)  # fmt: skip
    monkeypatch.setattr(sql, "ENABLED", False)
    python = b"".join(export_prepare(fmt="trl", filters=ExportFilters()).jsonl())
    assert out.read_bytes() == python and result.rows == python.count(b"\n")
    assert heard == sorted(heard) and heard[-1] == Judgment.objects.count()
    tasks = [json.loads(line)["task_id"] for line in python.splitlines()]
    assert len(set(tasks)) >= 3


def test_what_needs_python_falls_back_to_it(data):  # noqa: F811
    assert not sql.sql_applies(fmt="kto", filters=ExportFilters())
    for params in ({"consensus": "bradley_terry"}, {"min_agreement": 0.5}, {"axis": "helpful"}):
        filters = export_filters_parse(params)
        assert not sql.sql_applies(fmt="trl", filters=filters)
        batches = list(export_prepare(fmt="trl", filters=filters).batches())
        assert batches and not any(isinstance(b, copied.CopiedBatch) for b in batches)
