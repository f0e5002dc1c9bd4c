"""Rate limits that hold under concurrency and at every instant: a sliding log in the database.

**The limit.** A request under a limit of ``n`` per ``period`` is let through when fewer than
``n`` requests were let through in the ``period`` seconds before it; then its time is logged.
So no window of ``period`` seconds, wherever it starts, holds more than ``n`` (a counter per
calendar minute let 2n through around a minute boundary). DRF's throttles keep the same log
in the cache but read and write it back unlocked, so parallel requests all pass; and
django-ratelimit counts per calendar window, the bug above. Hence this small module.

**Where.** In the database every process already shares (PostgreSQL; SQLite for the embedded
demo): Redis is only the Celery broker here, and the demo runs without it. Each key (scope and
client) is checked and written under a lock: ``pg_advisory_xact_lock`` on a 64-bit hash of the
key on PostgreSQL (taken in ascending order, so two keys never deadlock; no row, so a refused
request writes nothing), and on SQLite the write lock that its ``BEGIN IMMEDIATE`` transactions
(settings) take. The n-th request sees exactly n - 1 before it, however many workers serve.

**Storage.** One row (key, time) per request let through, in ``ThrottleHit``, read with one
index range scan on (key, at) and pruned by ``throttle_windows_prune`` (Celery beat, every ten
minutes). A per-key ring of timestamps in one row was the alternative: it rewrites the whole
ring (8 bytes x n, 2.4 KB at 300/min, a new tuple version on PostgreSQL) on every request,
where the log inserts ~50 bytes and deletes in bulk.

**Sign-in** (``login_attempt_begin``): what django-axes does with
``AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]`` and ``AXES_RESET_ON_SUCCESS``,
on the log above. Failed attempts are limited per pair of account and address
(``THROTTLE_LOGIN``): past it that pair, and only that pair, is answered 429 with Retry-After,
even with the right password (else the limit would be an oracle). The same account from any
other address, and other accounts from the attacker's address, sign in as usual, so guesses
cannot lock a person out. A success forgets the pair's failures. A ceiling per address across
accounts (``THROTTLE_LOGIN_ADDRESS``) stops credential stuffing; it counts failures only, so a
shared address (an office behind NAT) of people who know their passwords never reaches it;
only while an address itself fails that often does everyone there wait. An attempt holds
its slot from before the password check until it succeeds, so a parallel burst gets no more
guesses than the limit. We refuse rather than slow down: a server-side sleep holds one of the
few worker threads, and an attacker's slowdowns would then be everyone's outage. The price of
never locking an account: an attacker with many addresses gets ``THROTTLE_LOGIN`` guesses per
address per period; the password hash bounds that. Not axes itself: it brings its own tables,
middleware and authentication backend for what is here one more use of the lease limit's log.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from feedback.models import ThrottleHit

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TABLE = ThrottleHit._meta.db_table
KEY_LENGTH = 200


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests under ``key`` in any ``period_s`` seconds."""

    key: str
    count: int
    period_s: float


@dataclass(frozen=True)
class Taken:
    """The outcome of ``throttle_take``: the logged rows' ids when let through, else how many
    seconds until the request would be."""

    wait: float | None
    hit_ids: tuple[int, ...] = ()


def parse_rate(rate: str) -> tuple[int, int]:
    """``"300/min"`` → (300, 60): requests allowed and the period in seconds."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


def scope_limit(scope: str, who: str) -> Limit | None:
    """The limit ``settings.THROTTLE_RATES[scope]`` sets on ``who``; None when it is off."""
    rate = settings.THROTTLE_RATES.get(scope)
    if not rate:
        return None
    count, period = parse_rate(rate)
    return Limit(key=f"{scope}:{who}"[:KEY_LENGTH], count=count, period_s=period)


def advisory_lock_id(key: str) -> int:
    """A signed 64-bit id for ``key``, as ``pg_advisory_xact_lock`` takes."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def keys_lock(keys: Sequence[str]) -> None:
    """Serialise check-then-log per key until the transaction ends. On SQLite the IMMEDIATE
    transaction already holds the database's write lock (see the module's doc). The lease
    route's distributor serialises an annotator's leases on the same lock as the lease limit
    (``annotation.distribution.annotator_lock_key``), so it takes it once. On PostgreSQL the
    lease route checks and logs its limit inside one database function with the lease itself
    (``annotation.lease``): the same lock id, the same log, the same rule."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for lock_id in sorted({advisory_lock_id(key) for key in keys}):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])


def _wait(limit: Limit, now: float) -> float | None:
    """Seconds until ``limit`` has room at ``now``: until the n-th newest request of the last
    period leaves it; None if there is room now."""
    if limit.count <= 0:
        return float(limit.period_s)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT at FROM {_TABLE} WHERE "key" = %s AND at > %s ORDER BY at DESC '
            "LIMIT 1 OFFSET %s",
            [limit.key, now - limit.period_s, limit.count - 1],
        )
        row = cursor.fetchone()
    return None if row is None else row[0] + limit.period_s - now


def _log_if_room(limits: Sequence[Limit], now: float) -> tuple[int, ...] | None:
    """Log one hit under every limit in one statement if each has room, and return the rows'
    ids; None (and nothing logged) if any is full. Room: the n-th newest hit of the last period
    does not exist, one index range scan on (key, at) a limit.

    Hand-written rather than a count and a ``bulk_create``: it runs on every lease, and the
    ORM's compiling was most of the limiter's cost. The caller holds the keys' locks, so the
    statement sees every hit committed before it."""
    if any(limit.count <= 0 for limit in limits):
        return None
    rows = " UNION ALL ".join(['SELECT %s AS "key", %s AS at'] * len(limits))
    room = " AND ".join(
        [
            f'NOT EXISTS (SELECT 1 FROM {_TABLE} WHERE "key" = %s AND at > %s '
            "ORDER BY at DESC LIMIT 1 OFFSET %s)"
        ]
        * len(limits)
    )
    params: list[object] = [value for limit in limits for value in (limit.key, now)]
    params += [
        value for limit in limits for value in (limit.key, now - limit.period_s, limit.count - 1)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO {_TABLE} ("key", at) SELECT v."key", v.at FROM ({rows}) v '
            f"WHERE {room} RETURNING id",
            params,
        )
        ids = tuple(row[0] for row in cursor.fetchall())
    return ids or None


def throttle_take(limits: Sequence[Limit], *, now: float | None = None) -> Taken:
    """Let one request through every limit in ``limits`` and log it, or through none: then the
    wait is the longest until all have room."""
    now = time.time() if now is None else now
    # No savepoint inside a caller's transaction: the lock and the log row live and die with
    # it, and a request pays no savepoint round trips (outside one this is the transaction).
    with transaction.atomic(savepoint=False):
        keys_lock([limit.key for limit in limits])
        hit_ids = _log_if_room(limits, now)
        if hit_ids is None:
            waits = [wait for limit in limits if (wait := _wait(limit, now)) is not None]
            # Under the lock the limits are as the insert saw them: some wait is there.
            return Taken(wait=max(waits, default=0.001))
    return Taken(wait=None, hit_ids=hit_ids)


def throttle_windows_prune(*, now: float | None = None) -> int:
    """Delete log rows older than the longest configured period: no limit counts them."""
    now = time.time() if now is None else now
    periods = [parse_rate(rate)[1] for rate in settings.THROTTLE_RATES.values() if rate]
    deleted, _ = ThrottleHit.objects.filter(at__lte=now - max(periods, default=0)).delete()
    return deleted


def client_ip(request: Any) -> str:
    """The client's address: the first X-Forwarded-For hop when settings trust a proxy."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.TRUSTED_PROXIES and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= settings.TRUSTED_PROXIES:
            return hops[-settings.TRUSTED_PROXIES]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


# --- sign-in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginAttempt:
    """A sign-in attempt that holds a slot under its limits (``wait`` is None), or was refused
    (``wait``: seconds to Retry-After). Its rows count as failures until it succeeds."""

    pair_key: str
    wait: float | None
    hit_ids: tuple[int, ...] = ()


def login_attempt_begin(request: Any, *, username: str, now: float | None = None) -> LoginAttempt:
    """Before checking a password: take a slot under the pair's and the address's failure
    limits, or learn how long this pair must wait."""
    ip = client_ip(request)
    pair = scope_limit("login", f"{ip}:{username.strip().lower()[:150]}")
    limits = [limit for limit in (pair, scope_limit("login_address", ip)) if limit is not None]
    pair_key = pair.key if pair else ""
    if not limits:
        return LoginAttempt(pair_key=pair_key, wait=None)
    taken = throttle_take(limits, now=now)
    return LoginAttempt(pair_key=pair_key, wait=taken.wait, hit_ids=taken.hit_ids)


def login_attempt_succeeded(attempt: LoginAttempt) -> None:
    """The password was right: the pair's failures are forgotten, and this attempt counts
    against no limit."""
    ThrottleHit.objects.filter(pk__in=attempt.hit_ids).delete()
    if attempt.pair_key:
        ThrottleHit.objects.filter(key=attempt.pair_key).delete()


def login_attempt_void(attempt: LoginAttempt) -> None:
    """No password was checked (a field was missing): the attempt gives its slots back."""
    ThrottleHit.objects.filter(pk__in=attempt.hit_ids).delete()
