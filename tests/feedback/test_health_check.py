"""The per-request health check of a reused PostgreSQL connection
(``feedback/platform/postgresql/base.py``): no round trip while the connection is quiet, and a
connection the server closed is still found and replaced before a request uses it."""

from __future__ import annotations

import time

import pytest
from django.db import connection, connections


def _backend_query(pid: int) -> str | None:
    """The last statement PostgreSQL's backend ``pid`` ran (None once it is gone)."""
    with connection.cursor() as cursor:
        # The test's transaction would otherwise see one snapshot of the activity throughout.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row[0] if row else None


@pytest.mark.postgres
def test_a_quiet_connection_is_checked_without_a_query_and_a_closed_one_is_replaced(postgres):
    reused = connections.create_connection("default")  # a request's connection, not the test's
    try:
        with reused.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), 'marker'")
            pid = cursor.fetchone()[0]
        assert reused.health_check_enabled  # CONN_HEALTH_CHECKS, as the settings have it
        # A new request: the check runs before its first statement.
        reused.health_check_done = False
        reused.close_if_health_check_failed()
        assert reused.health_check_done and reused.connection is not None
        # The backend's last statement is still ours: the check sent nothing.
        assert _backend_query(pid) == "SELECT pg_backend_pid(), 'marker'"

        # PostgreSQL closes it between requests (a restart, an administrator).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 30
        while _backend_query(pid) is not None:  # the backend has exited
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.05)  # polling PostgreSQL's own view of its backends
        reused.health_check_done = False
        reused.close_if_health_check_failed()
        assert reused.connection is None  # found and dropped, before any request used it
        with reused.cursor() as cursor:  # the request's first statement reconnects
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] != pid
    finally:
        reused.close()
