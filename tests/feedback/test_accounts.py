"""Accounts and roles: adduser, token sign-in, and who may call which route."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from feedback.platform.roles import Role, user_roles

pytestmark = pytest.mark.django_db


def test_adduser_creates_an_account_with_its_role():
    call_command("adduser", "alice", "--role", "annotator", "--password", "s3cret-pass")
    alice = get_user_model().objects.get(username="alice")
    assert alice.check_password("s3cret-pass")
    assert user_roles(alice) == {Role.ANNOTATOR}


def test_adduser_admin_is_staff_and_password_can_come_from_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-pw\n"))
    call_command("adduser", "root2", "--role", "admin", "--password-stdin")
    root = get_user_model().objects.get(username="root2")
    assert root.is_staff and root.check_password("from-stdin-pw")


def test_adduser_refuses_an_existing_name_unless_updating():
    call_command("adduser", "bob", "--role", "annotator", "--password", "pw-one-long")
    with pytest.raises(CommandError, match="exists"):
        call_command("adduser", "bob", "--role", "researcher", "--password", "pw-two-long")
    call_command("adduser", "bob", "--role", "researcher", "--password", "pw-two-long", "--update")
    bob = get_user_model().objects.get(username="bob")
    assert user_roles(bob) == {Role.ANNOTATOR, Role.RESEARCHER}


def test_adduser_rejects_a_short_password():
    with pytest.raises(CommandError, match="too short"):
        call_command("adduser", "carol", "--role", "annotator", "--password", "x")


def test_token_sign_in_and_use(annotator):
    client = APIClient()
    response = client.post(
        "/api/v1/auth/token/", {"username": "ann1", "password": "pw-for-tests"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["roles"] == ["annotator"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get("/api/v1/me/stats/").status_code == 200


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {"username": "ann1", "password": "wrong"},
            {"password": ["Unable to sign in with this username and password."]},
        ),
        ({"username": "ann1"}, {"password": ["This field is required."]}),
        ({}, {"username": ["This field is required."], "password": ["This field is required."]}),
    ],
)
def test_token_sign_in_errors_name_the_field(annotator, body, fields):
    response = APIClient().post("/api/v1/auth/token/", body, format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == fields


ROUTES = [
    ("post", "/api/v1/tasks/next/", {"annotator"}),
    ("get", "/api/v1/me/stats/", {"annotator"}),
    ("post", "/api/v1/prompts/import/", {"admin"}),
    ("get", "/api/v1/rounds/", {"admin"}),
    ("get", "/api/v1/policies/", {"admin", "researcher"}),
    ("get", "/api/v1/exports/preferences/", {"admin", "researcher"}),
]


@pytest.mark.parametrize(("method", "url", "allowed"), ROUTES)
@pytest.mark.parametrize("persona", ["annotator", "admin", "researcher", "outsider"])
def test_each_role_reaches_only_its_routes(api, request, method, url, allowed, persona):
    response = getattr(api(request.getfixturevalue(persona)), method)(url)
    if persona in allowed:
        assert response.status_code not in (401, 403), response.content
    else:
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize(("method", "url", "allowed"), ROUTES)
def test_anonymous_gets_401(method, url, allowed):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_unknown_api_route_is_a_json_404(api, admin):
    response = api(admin).get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
