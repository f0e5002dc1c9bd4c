"""The annotation hot path's hand-written SQL, portable between PostgreSQL and SQLite.

The lease and the submit are the API's busiest routes, and compiling their querysets was half of
a loop's time (``benchmarks/annotation_api.py``), so their statements are written by hand. Here:
the value adapters that do what the ORM does for those statements, the rubric versions read once
per process, and the task as the lease reads it, with its round, prompt and slots, in one
statement (``task_read``; ``annotation.distribution`` decides which task).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from feedback.models import Completion, Prompt

from .models import Assignment, ComparisonTask, Round, Rubric, TaskCompletion


def sql_datetime(value: datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def sql_uuid(value: uuid.UUID) -> Any:
    return value if connection.features.has_native_uuid_field else value.hex


def sql_json(value: Any) -> Any:
    return connection.ops.adapt_json_value(value, None)


def from_sql_datetime(value: Any) -> datetime | None:
    """SQLite returns a datetime read through a join as text, naive; PostgreSQL an aware one."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def from_sql_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


_RUBRICS: dict[tuple[int, datetime | None], Rubric] = {}


def rubric_cached(rubric_id: int, created_at: Any) -> Rubric:
    """A rubric version, read once per process. Versions are never edited (a change is a new
    version); the key holds its creation time too, so a row id reused (a test database rolled
    back) is not mistaken for the version cached before."""
    key = (rubric_id, from_sql_datetime(created_at))
    rubric = _RUBRICS.get(key)
    if rubric is None:
        rubric = Rubric.objects.get(pk=rubric_id)
        if len(_RUBRICS) > 64:
            _RUBRICS.clear()
        _RUBRICS[key] = rubric
    return rubric


@lru_cache(maxsize=32)
def task_sql(pick: bool, tried: int = 0) -> str:
    """A task with its round, prompt and slots, a row per slot in position order. ``pick``: the
    first free candidate for an annotator, locked (``distribution.task_next_for_annotator``
    says which); else the task ``%s``."""
    t, a = ComparisonTask._meta.db_table, Assignment._meta.db_table
    if pick:
        where = (
            f"r.status = 'open' AND t.round_open AND t.gold_ranking IS NULL "
            f"AND t.submitted_count < t.overlap "
            f"AND (t.submitted_count < t.overlap - t.leased_count OR t.leases_expire_at <= %s) "
            f"AND NOT EXISTS (SELECT 1 FROM {a} x WHERE x.task_id = t.id AND x.annotator_id = %s "
            f"AND x.status IN ('submitted', 'skipped'))"
            + (f" AND t.id NOT IN ({', '.join(['%s'] * tried)})" if tried else "")
            + " ORDER BY t.priority DESC, t.submitted_count DESC, t.id LIMIT 1"
            + (" FOR UPDATE OF t SKIP LOCKED" if connection.vendor == "postgresql" else "")
        )
    else:
        where = "t.id = %s"
    return (
        f"WITH picked AS MATERIALIZED (SELECT t.id, t.overlap, t.submitted_count, t.leased_count, "
        f"t.leases_expire_at, t.prompt_id, t.round_id, r.number, r.seed, r.gold_count, "
        f"r.gold_rate, r.rubric_id, ru.created_at AS rubric_created_at, r.source, "
        f"(SELECT x.id FROM {a} x WHERE x.task_id = t.id AND x.annotator_id = %s) AS mine "
        f"FROM {t} t JOIN {Round._meta.db_table} r ON r.id = t.round_id "
        f"JOIN {Rubric._meta.db_table} ru ON ru.id = r.rubric_id WHERE {where}) "
        f"SELECT picked.*, p.messages, p.safety, tc.completion_id, c.text FROM picked "
        f"JOIN {Prompt._meta.db_table} p ON p.id = picked.prompt_id "
        f"LEFT JOIN {TaskCompletion._meta.db_table} tc ON tc.task_id = picked.id "
        f"LEFT JOIN {Completion._meta.db_table} c ON c.id = tc.completion_id "
        f"ORDER BY tc.position"
    )


@dataclass
class TaskRead:
    """A task as ``task_sql`` reads it; ``mine``: this annotator's assignment on it, if any."""

    id: int
    overlap: int
    submitted_count: int
    leased_count: int
    leases_expire_at: datetime | None
    round_id: int
    round_number: int
    seed: int
    gold_count: int
    gold_rate: float
    rubric: Rubric
    shuffled: bool  # shown in an order of each annotator's own; a side-by-side round: as stored
    mine: uuid.UUID | None
    messages: list[dict[str, Any]]
    safety: bool
    slots: list[tuple[int, str]]


def task_read(params: list[Any], *, pick: bool, tried: int = 0) -> TaskRead | None:
    with connection.cursor() as cursor:
        cursor.execute(task_sql(pick, tried), params)
        rows = cursor.fetchall()
    if not rows:
        return None
    (task_id, overlap, submitted, leased, expires, _prompt, round_id, number, seed, gold_count,
     gold_rate, rubric_id, rubric_created, source, mine, messages, safety, _c,
     _t) = rows[0]  # fmt: skip
    return TaskRead(
        id=task_id, overlap=overlap, submitted_count=submitted, leased_count=leased,
        leases_expire_at=from_sql_datetime(expires), round_id=round_id, round_number=number,
        seed=seed, gold_count=gold_count, gold_rate=gold_rate,
        rubric=rubric_cached(rubric_id, rubric_created),
        shuffled=source != Round.Source.SIDE_BY_SIDE,
        mine=None if mine is None else uuid.UUID(str(mine)),
        messages=from_sql_json(messages), safety=bool(safety),
        slots=[(row[-2], row[-1]) for row in rows if row[-2] is not None],
    )  # fmt: skip
