"""Rate limits that hold under concurrency: one atomic counter per client and fixed window.

DRF's own throttles keep a list of request times in the cache and write it back: two processes
that read it at once both pass, so a burst of parallel requests goes over the limit. Here each
request is one ``INSERT … ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count`` on the
database every process already shares (PostgreSQL, and SQLite for the embedded demo), so the
n-th request of a window sees exactly n, however many workers and threads serve it, with no
extra service to run. The cost is one indexed write per throttled request, and only the lease
and login routes are throttled.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from rest_framework.throttling import BaseThrottle

from feedback.models import ThrottleWindow

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"300/min"`` → (300, 60): requests allowed and the window in seconds."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


def throttle_hit(*, key: str, period_s: int, now: float | None = None) -> tuple[int, float]:
    """Count one request under ``key``; return the count so far in this window and the seconds
    until the window ends."""
    now = time.time() if now is None else now
    bucket = int(now // period_s)
    q = connection.ops.quote_name
    table = q(ThrottleWindow._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({q('key')}, {q('bucket')}, {q('count')}) VALUES (%s, %s, 1) "
            f"ON CONFLICT ({q('key')}, {q('bucket')}) "
            f"DO UPDATE SET {q('count')} = {table}.{q('count')} + 1 RETURNING {q('count')}",
            [key[:200], bucket],
        )
        (count,) = cursor.fetchone()
    return count, (bucket + 1) * period_s - now


def throttle_windows_prune(*, now: float | None = None) -> int:
    """Delete windows that ended (every period is at most a day)."""
    now = time.time() if now is None else now
    oldest = min(int(now // period) for period in _PERIODS.values())
    deleted, _ = ThrottleWindow.objects.filter(bucket__lt=oldest - 1).delete()
    return deleted


def client_ip(request: Any) -> str:
    """The client's address: the first X-Forwarded-For hop when settings trust a proxy."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.TRUSTED_PROXIES and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= settings.TRUSTED_PROXIES:
            return hops[-settings.TRUSTED_PROXIES]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def rate_exceeded(*, scope: str, who: str) -> float | None:
    """Count a request of ``who`` under ``scope``'s rate; the seconds to wait if it is over."""
    rate = settings.THROTTLE_RATES.get(scope)
    if not rate:
        return None
    limit, period = parse_rate(rate)
    count, remaining = throttle_hit(key=f"{scope}:{who}", period_s=period)
    return None if count <= limit else remaining


def login_rate_exceeded(request: Any, *, username: str) -> float | None:
    """Sign-in attempts: per account from one address (guessing one password), and per address
    across accounts (trying one password on many). Both count every attempt."""
    ip = client_ip(request)
    waits = [
        rate_exceeded(scope="login", who=f"{ip}:{username.strip().lower()[:150]}"),
        rate_exceeded(scope="login_address", who=ip),
    ]
    return max((wait for wait in waits if wait is not None), default=None)


class AtomicRateThrottle(BaseThrottle):
    """A DRF throttle on the counter above: per user when signed in, else per address. The rate
    is ``settings.THROTTLE_RATES[scope]``; an exceeded one is a 429 with Retry-After."""

    scope = ""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        user = request.user
        who = f"user:{user.pk}" if user and user.is_authenticated else f"ip:{client_ip(request)}"
        self._wait = rate_exceeded(scope=self.scope, who=who)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


class LeaseThrottle(AtomicRateThrottle):
    scope = "lease"


class LoginThrottle(BaseThrottle):
    """The token route: the same limits as the sign-in page, keyed by the username posted."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        username = request.data.get("username", "") if isinstance(request.data, dict) else ""
        self._wait = login_rate_exceeded(request, username=str(username))
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
