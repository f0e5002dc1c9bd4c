"""Pinned SQL query counts on the annotation hot path, as issue 19's workload makes it: a submit
of a full judgment of K = 4 completions (ranking, 3H scores for all four, strength, time on
task), and the token authentication every API request starts with.

These counts are a ceiling to lower, never to raise: a change that adds a query to the submit or
to authentication fails here, and the fix is to remove the query, not to edit the number. When a
change removes one, lower the number in the same commit so it cannot creep back.
``tests/annotation/test_distribution.py`` pins the lease (K = 3) and the submit of K = 3; these
pin what it does not: that neither the lease nor the submit grows with K (no query per
completion), and the authentication path on its own."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from ..factories import open_round
from .helpers import NEXT, lease, submit_url, valid_body

pytestmark = pytest.mark.django_db

# Measured at issue 19 (before its work to make the loop cheap); lower, never raise.
SUBMIT_QUERIES = 11  # token+user, roles, assignment, completion ids, savepoint, lock task,
# lock assignment, insert judgment, update assignment, update task, release savepoint
AUTHENTICATION_QUERIES = 2  # the token with its user (one join), the user's roles


def _issue_body(task: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark's annotators send: every completion ranked and scored on every axis of
    the 3H rubric, a strength, and time on task."""
    body = valid_body(task)
    assert len(body["ranking"]) == len(task["completions"])
    assert all(set(s) == {"helpful", "honest", "harmless"} for s in body["scores"].values())
    return body


def _lease_and_submit_counts(client: APIClient) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as leasing:
        task = lease(client)
    assert task is not None
    with CaptureQueriesContext(connection) as submitting:
        response = client.post(submit_url(task["assignment"]), _issue_body(task), format="json")
    assert response.status_code == 200, response.content
    assert response.json()["ranking"] == [[c["id"]] for c in task["completions"]]
    return len(leasing.captured_queries), len(submitting.captured_queries)


def test_submit_of_four_completions_with_3h_scores_is_pinned(api, annotator):
    open_round(n=3, k=4)
    _, submit = _lease_and_submit_counts(api(annotator))
    assert submit == SUBMIT_QUERIES


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
