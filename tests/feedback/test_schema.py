"""OpenAPI: every DESIGN §9 route that exists is documented with its shapes; the docs page loads
its assets locally under the Content-Security-Policy."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db

ROUTES = {
    "/api/v1/auth/token/": ["post"],
    "/api/v1/tasks/next/": ["post"],
    "/api/v1/assignments/{assignment_id}/submit/": ["post"],
    "/api/v1/assignments/{assignment_id}/skip/": ["post"],
    "/api/v1/me/stats/": ["get"],
    "/api/v1/me/judgments/": ["get"],
    "/api/v1/judgments/{judgment_id}/revise/": ["post"],
    "/api/v1/prompts/import/": ["post"],
    "/api/v1/rubrics/": ["get", "post"],
    "/api/v1/rubrics/{rubric_id}/": ["get"],
    "/api/v1/rounds/": ["get", "post"],
    "/api/v1/rounds/{round_id}/": ["get"],
    "/api/v1/rounds/{round_id}/close/": ["post"],
    "/api/v1/policies/": ["get", "post"],
    "/api/v1/policies/{policy_id}/deploy/": ["post"],
    "/api/v1/policies/{policy_id}/rollback/": ["post"],
    "/api/v1/deployments/{deployment_id}/": ["get"],
    "/api/v1/demonstrations/": ["post"],
    "/api/v1/demonstrations/next/": ["get"],
    "/api/v1/demonstrations/mine/last/": ["get"],
    "/api/v1/demonstrations/{demonstration_id}/": ["put"],
    "/api/v1/demonstrations/skip/": ["post"],
    "/api/v1/demonstrations/preview/": ["post"],
    "/api/v1/training-runs/": ["get", "post"],
    "/api/v1/policies/{policy_id}/gate/": ["post"],
    "/api/v1/gates/{gate_id}/": ["get"],
    "/api/v1/training-runs/{run_id}/": ["get"],
    "/api/v1/training-runs/{run_id}/cancel/": ["post"],
    "/api/v1/exports/preferences/": ["get"],
}


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        from django.test import Client

        response = Client().get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_schema_is_valid_and_warning_free(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))


def test_every_route_is_documented_with_shapes(schema):
    for path, methods in ROUTES.items():
        assert path in schema["paths"], path
        for method in methods:
            operation = schema["paths"][path][method]
            assert operation["responses"], (path, method)
    submit = schema["paths"]["/api/v1/assignments/{assignment_id}/submit/"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][body]["properties"]) == {
        "ranking",
        "scores",
        "strength",
        "flags",
        "rationale",
        "time_spent_ms",
        "none_acceptable",
    }
    assert "409" in submit["responses"] and "404" in submit["responses"]
    # A correction's body is a submit's.
    revise = schema["paths"]["/api/v1/judgments/{judgment_id}/revise/"]["post"]
    assert revise["requestBody"] == submit["requestBody"]
    assert {"200", "400", "404", "409"} <= set(revise["responses"])
    lease = schema["paths"]["/api/v1/tasks/next/"]["post"]["responses"]
    assert set(lease) >= {"200", "204"}
    export = schema["paths"]["/api/v1/exports/preferences/"]["get"]
    assert "application/x-ndjson" in export["responses"]["200"]["content"]


def test_docs_page_serves_under_the_csp(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    # Swagger UI needs inline styles; scripts stay same-origin only.
    assert "script-src 'self';" in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert b"cdn" not in response.content.lower()
