"""Django's PostgreSQL backend, with a health check that needs no round trip on a quiet
connection.

With ``CONN_HEALTH_CHECKS`` (on here: a connection that PostgreSQL closed between requests is
replaced before a request uses it, instead of failing that request), Django checks a reused
connection at a request's first query by sending ``SELECT 1``. That is one more round trip on
every request: on the annotation loop, two of its fifteen, and a sampling profile of the
gunicorn workers under issue 19's load put a quarter of the request threads' time in it.

A connection that PostgreSQL closed (a restart, ``pg_terminate_backend``, an idle timeout, a
proxy or network cut that resets it; a silent death is found by the TCP keepalives set in
settings) has something to read: the server's goodbye, or the end of the stream. An idle
connection that nobody closed has nothing: between requests the server sends nothing
unasked (no ``LISTEN`` here). So the check here asks the kernel, without waiting, whether the
socket has anything to read: nothing, and the connection is idle and open on our side, means
usable; anything else falls back to Django's ``SELECT 1``. Errors during a request still close
the connection as Django does (``close_if_unusable_or_obsolete`` keeps the real check)."""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and self._quiet()
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def _quiet(self) -> bool:
        """Open and idle on our side, and nothing from the server waiting to be read."""
        connection = self.connection
        if (
            connection.closed
            or connection.pgconn.status != pq.ConnStatus.OK
            or connection.info.transaction_status != pq.TransactionStatus.IDLE
        ):
            return False
        poller = select.poll()  # not select.select: a descriptor may be above FD_SETSIZE
        poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
