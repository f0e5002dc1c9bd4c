"""Schemathesis against our own OpenAPI schema, through the WSGI app, once per role.

Every documented operation gets a few generated requests (valid by the schema, so they reach the
views rather than stopping at a 400) as an anonymous caller, an outsider with a token but no role,
an annotator, a researcher and an admin. Whatever comes back must not be a 5xx, and a response
whose status the schema documents must match the documented body. Work a request enqueues is
recorded on commit, which the test's transaction never reaches, so nothing starts training or
generating.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import yaml
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from feedback.models import PolicyVersion
from feedback.platform.roles import Role

from ..factories import open_round

pytestmark = pytest.mark.django_db

# Cases per operation. Without a role every route but two answers 401 or 403 before reading the
# input, so more cases there would only repeat that.
EXAMPLES = {"anonymous": 2, "outsider": 2, "annotator": 4, "researcher": 4, "admin": 4}
ROLES = {"annotator": Role.ANNOTATOR, "researcher": Role.RESEARCHER, "admin": Role.ADMIN}


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """Django's real WSGI handler, on the test's connection and transaction. Like Django's own
    test client, it must not close that connection between requests (request_started and
    request_finished would, since the test transaction is not autocommit)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def data(make_user: Any, annotator: Any) -> None:
    """Something for the requests to find: an open round with tasks (so the annotator's lease is
    a 200 with the whole documented payload) and a policy in the list."""
    open_round(n=3, k=3, overlap=2)
    PolicyVersion.objects.create(name="schemathesis-policy", status=PolicyVersion.Status.EXTERNAL)


def headers_for(persona: str, make_user: Any, annotator: Any) -> dict[str, str]:
    if persona == "anonymous":
        return {}
    user = annotator if persona == "annotator" else make_user(ROLES.get(persona))
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


def check_operation(operation: Any, headers: dict[str, str], examples: int) -> str | None:
    """Run a few generated cases; the first failure's report, or None."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    try:
        run()
    except Exception as failure:  # each operation's failure is collected, not just the first
        return f"{operation.label}: {failure}"
    return None


@pytest.fixture(scope="module")
def openapi(django_db_blocker: Any) -> dict[str, Any]:
    """The schema as /api/schema/ serves it, fetched once for every persona."""
    with django_db_blocker.unblock():
        response = Client().get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


@pytest.mark.parametrize("persona", list(EXAMPLES))
def test_no_server_error_and_documented_shapes_for_each_role(
    persona: str,
    openapi: dict[str, Any],
    wsgi_app: Any,
    data: None,
    make_user: Any,
    annotator: Any,
) -> None:
    schema = schemathesis.openapi.from_dict(copy.deepcopy(openapi))
    schema.app = wsgi_app
    headers = headers_for(persona, make_user, annotator)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    failures = [
        report
        for operation in operations
        if (report := check_operation(operation, headers, EXAMPLES[persona]))
    ]
    assert failures == [], "\n\n".join(failures)
