"""Pinned SQL query counts on the annotation hot path, as issue 19's workload makes it: a submit
of a full judgment of K = 4 completions (ranking, 3H scores for all four, strength, time on
task), the lease that precedes it, and the token authentication every API request starts with.

These counts are a ceiling to lower, never to raise: a change that adds a query to the submit or
to authentication fails here, and the fix is to remove the query, not to edit the number. When a
change removes one, lower the number in the same commit so it cannot creep back.
``tests/annotation/test_distribution.py`` pins the lease (K = 3) and the submit of K = 3 too, and
the lease of a held task; these pin issue 19's workload on both databases, that neither the
lease nor the submit grows with K (no query per completion), and the authentication path on its
own. Counts include the savepoint pair of each transaction (in a test, every transaction is
nested in the test's own). They cannot include the health check of a reused connection before a
request's first statement, which bypasses Django's query log: tests/feedback/test_health_check.py
shows that it sends nothing on a quiet connection."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from annotation.models import Rubric
from annotation.raw_sql import rubric_cached

from ..factories import open_round
from .helpers import NEXT, lease, submit_url, valid_body

pytestmark = pytest.mark.django_db

# Lower, never raise. Before issue 19's work: a lease 13 on PostgreSQL (12 on SQLite), a submit
# 11, authentication 2. (Under HOT_PATH_IN_DATABASE=0 a lease and a submit on PostgreSQL are
# the 8 and 6 that test_distribution.py pins.)
LEASE_QUERIES = {
    # token with user and roles; one call of the annotation_lease function (annotation/lease.py:
    # the lock, the rate limit, the held lease, the candidate, the assignment and its slot, the
    # content). It was 8 from Python: the advisory lock and the limit's insert, savepoint, the
    # held-lease probe, the candidate, the assignment with its slot, release savepoint.
    "postgresql": 2,
    # from Python (annotation.distribution): token; savepoint, the rate limit's conditional
    # insert (no advisory lock: the IMMEDIATE transaction's write lock serialises), the
    # held-lease probe, the candidate, the assignment inserted and its slot counted (two
    # statements: no INSERT in WITH), release savepoint
    "sqlite": 8,
}
SUBMIT_QUERIES = {
    # token with user and roles, the assignment with its round, rubric and completion ids; one
    # call of the annotation_submit function (annotation/judgments.py: the task's lock, the
    # assignment moved, the slot counted, the judgment inserted). It was 6 from Python: the
    # savepoint pair around the task's slot moved and the assignment moved with the judgment.
    "postgresql": 3,
    # from Python: savepoint, the task's slot moved (its lock), the assignment moved, the
    # judgment inserted, release savepoint
    "sqlite": 7,
}
AUTHENTICATION_QUERIES = 1  # the token with its user and the user's groups (one statement)


def _issue_body(task: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark's annotators send: every completion ranked and scored on every axis of
    the 3H rubric, a strength, and time on task."""
    body = valid_body(task)
    assert len(body["ranking"]) == len(task["completions"])
    assert all(set(s) == {"helpful", "honest", "harmless"} for s in body["scores"].values())
    return body


def rubrics_read() -> None:
    """A process reads each rubric version once (``annotation.distribution.rubric_cached``):
    read them first, so that the counts are those of every lease but a process's first."""
    for rubric in Rubric.objects.all():
        rubric_cached(rubric.pk, rubric.created_at)


def _lease_and_submit_counts(client: APIClient) -> tuple[int, int]:
    rubrics_read()
    with CaptureQueriesContext(connection) as leasing:
        task = lease(client)
    assert task is not None
    with CaptureQueriesContext(connection) as submitting:
        response = client.post(submit_url(task["assignment"]), _issue_body(task), format="json")
    assert response.status_code == 200, response.content
    assert response.json()["ranking"] == [[c["id"]] for c in task["completions"]]
    return len(leasing.captured_queries), len(submitting.captured_queries)


def test_lease_and_submit_of_four_completions_with_3h_scores_are_pinned(api, annotator):
    open_round(n=3, k=4)
    counts = _lease_and_submit_counts(api(annotator))
    assert counts == (LEASE_QUERIES[connection.vendor], SUBMIT_QUERIES[connection.vendor])


def test_lease_and_submit_do_not_grow_with_the_completions_shown(api, annotator, annotator2):
    open_round(n=3, k=2, seed=1)
    with_two = _lease_and_submit_counts(api(annotator))
    open_round(n=3, k=4, seed=2)
    # annotator2 has judged nothing yet: the same path as annotator's first loop above.
    with_four = _lease_and_submit_counts(api(annotator2))
    assert with_four == with_two


def test_token_authentication_is_pinned(api, annotator):
    """An annotator asking for an admin's page is authenticated and refused: only the
    authentication and the role check run."""
    client = api(annotator)  # makes the token: outside the count
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/api/v1/audit/")
    assert response.status_code == 403
    assert len(ctx.captured_queries) == AUTHENTICATION_QUERIES


def test_an_unknown_token_costs_one_query(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    with CaptureQueriesContext(connection) as ctx:
        response = client.post(NEXT)
    assert response.status_code == 401
    assert len(ctx.captured_queries) == 1
