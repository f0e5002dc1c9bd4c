"""The lease route's service: the lease rate limit and the distributor together, on PostgreSQL in
one statement.

What a lease does is written in ``annotation.distribution`` (the annotator's lock, the held
lease, the candidate locked with ``SKIP LOCKED``, lapsed leases reclaimed, the display order, the
assignment and its slot) and ``feedback.platform.throttle`` (the sliding log, checked and written
under that same lock). Done from Python, on PostgreSQL, that is seven round trips after the
token: BEGIN, the lock, the limit's conditional insert, the held-lease probe, the candidate with
its content, the assignment with its slot, COMMIT. Round trips were a fifth of the annotation
loop's CPU (issue 19's profile), and the lease is the API's hottest route.

So on PostgreSQL the same steps run server-side, in ``annotation_lease`` (a PL/pgSQL function,
migration ``annotation/0017_lease_function``), called in autocommit: one round trip, one
transaction, the advisory lock held until it ends. Each statement in a PL/pgSQL function takes a
snapshot of its own, so every step after the lock sees what the request that held it before
committed: the reason the Python path needs the lock in a statement of its own.

The Python path stays for SQLite (the embedded default) and under ``HOT_PATH_IN_DATABASE=0``.
The two must agree: ``tests/annotation/test_distribution.py`` and ``test_gold.py`` run on both,
and ``distribution.assignment_display_order`` and ``distribution.gold_due`` are written so SQL
can compute them too.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from feedback.platform.throttle import Limit, advisory_lock_id, scope_limit, throttle_take

from .distribution import (
    MAX_CANDIDATES_TRIED,
    LeasedTask,
    annotator_lock_key,
    lease_expiry,
    leased_task,
    task_next_for_annotator,
)
from .raw_sql import from_sql_datetime, from_sql_json, rubric_cached, sql_datetime

_CALL = (
    "SELECT * FROM annotation_lease(%s::integer, %s::timestamptz, %s::timestamptz, %s::bigint, "
    "%s::text, %s::integer, %s::double precision, %s::double precision, %s::integer)"
)


@dataclass(frozen=True)
class Lease:
    """What the lease route answers: a task (``leased``), none left (``leased`` None), or a
    refusal by the rate limit (``wait``: seconds until it would let the request through)."""

    leased: LeasedTask | None = None
    wait: float | None = None


def lease_next(*, annotator: AbstractBaseUser, now: datetime | None = None) -> Lease:
    """Take a slot under the annotator's lease limit (``THROTTLE_RATES["lease"]``) and lease them
    the next task, or give back the one they hold; or neither, if the limit refuses."""
    now = now or timezone.now()
    limit = scope_limit("lease", f"user:{annotator.pk}")
    if connection.vendor == "postgresql" and settings.HOT_PATH_IN_DATABASE:
        return _lease_in_database(annotator=annotator, now=now, limit=limit)
    return _lease_in_python(annotator=annotator, now=now, limit=limit)


def _lease_in_python(*, annotator: AbstractBaseUser, now: datetime, limit: Limit | None) -> Lease:
    """The limit and the lease in one transaction. The limit's lock is the annotator's lock
    (``annotator_lock_key``), so the distributor does not take it again."""
    with transaction.atomic():
        if limit is not None:
            taken = throttle_take([limit], now=time.time())
            if taken.wait is not None:
                return Lease(wait=taken.wait)
        leased = task_next_for_annotator(annotator=annotator, now=now, locked=limit is not None)
    return Lease(leased=leased)


def _lease_in_database(*, annotator: AbstractBaseUser, now: datetime, limit: Limit | None) -> Lease:
    """One call of ``annotation_lease``."""
    params = [
        annotator.pk,
        sql_datetime(now),
        sql_datetime(lease_expiry(now)),
        advisory_lock_id(annotator_lock_key(annotator.pk)),
        limit.key if limit else None,
        limit.count if limit else 0,
        float(limit.period_s) if limit else 0.0,
        time.time(),
        MAX_CANDIDATES_TRIED,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_CALL, params)
        rows = cursor.fetchall()
    outcome, wait = rows[0][0], rows[0][1]
    if outcome == "throttled":
        return Lease(wait=wait)
    if outcome == "none":
        return Lease()
    (_, _, assignment_id, expires, order, task_id, number, rubric_id, rubric_created, messages,
     safety, _, _) = rows[0]  # fmt: skip
    return Lease(
        leased=leased_task(
            assignment_id=uuid.UUID(str(assignment_id)),
            expires=from_sql_datetime(expires),
            order=from_sql_json(order),
            task_id=task_id,
            round_number=number,
            rubric=rubric_cached(rubric_id, rubric_created),
            messages=from_sql_json(messages),
            safety=bool(safety),
            slots=[(row[11], row[12]) for row in rows if row[11] is not None],
        )
    )
