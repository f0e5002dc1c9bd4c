"""Web hardening: rate limits that hold under concurrency, the audit log of admin actions, and
`check --deploy` clean under production settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from django.test import Client

from feedback.models import AuditEvent
from feedback.platform.roles import Role

from ..conftest import ROOT, client_for
from ..factories import open_round
from ..racing import race

NEXT = "/api/v1/tasks/next/"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_lease_limit_holds_exactly_under_concurrent_requests(settings, make_user):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "lease": "10/min"}
    annotator = make_user(Role.ANNOTATOR, username="eager")
    open_round(n=20, overlap=1)

    statuses = race(30, lambda: client_for(annotator).post(NEXT).status_code)
    # Exactly the limit gets through (served, or told the pool is empty); the rest are refused.
    assert statuses[429] == 20 and statuses[200] + statuses[204] == 10, statuses

    refused = client_for(annotator).post(NEXT)
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled" and "Retry-After" in refused
    assert 0 < int(refused["Retry-After"]) <= 60
    # The limit is per annotator: another is served.
    assert client_for(make_user(Role.ANNOTATOR)).post(NEXT).status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sign_in_is_limited_per_account_on_the_page_and_the_token_route(settings, make_user):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "login": "5/min"}
    make_user(Role.ANNOTATOR, username="target", password="right-password")

    def guess() -> int:
        body = {"username": "target", "password": "wrong"}
        return Client().post("/login/", body).status_code

    statuses = race(12, guess)
    assert statuses == Counter({200: 5, 429: 7}), statuses  # 200: the form again, with the error

    # Past the limit even the right password is refused from this address, on the page and
    # through the API (a check would tell a guesser the password), and the page says when to
    # try again.
    page = Client().post("/login/", {"username": "target", "password": "right-password"})
    assert page.status_code == 429 and "Too many sign-in attempts" in page.content.decode()
    token = client_for(None).post(
        "/api/v1/auth/token/", {"username": "target", "password": "right-password"}, format="json"
    )
    assert token.status_code == 429 and token.json()["code"] == "throttled"
    # Another account from the same address is not locked out by these guesses.
    make_user(Role.ANNOTATOR, username="bystander", password="pw-bystander")
    other = Client().post("/login/", {"username": "bystander", "password": "pw-bystander"})
    assert other.status_code == 302
    # Nor is the account itself from another address (tests/security/test_rate_limits.py).
    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    right = {"username": "target", "password": "right-password"}
    assert elsewhere.post("/login/", right).status_code == 302


@pytest.mark.django_db
def test_admin_actions_are_audited_and_only_admins_read_the_log(api, admin, annotator):
    from feedback.models import PolicyVersion

    candidate = PolicyVersion.objects.create(name="candidate-v1", base_model="models/candidate")
    client = api(admin)
    opened = client.post("/api/v1/rounds/", {"k": 3, "overlap": 1}, format="json")
    assert opened.status_code in (400, 409)  # nothing imported yet: refused, and still recorded
    closed = client.post("/api/v1/rounds/999/close/", {}, format="json")
    assert closed.status_code == 404
    # Reads and an admin's own annotation work are not admin actions.
    client.get("/api/v1/rounds/")
    client.post(NEXT)

    events = client.get("/api/v1/audit/").json()["results"]
    assert [(e["action"], e["status_code"]) for e in events] == [
        ("api:round-close", 404),
        ("api:round-list", opened.status_code),
    ]
    assert events[0]["actor"] == admin.username and events[0]["target"] == {"round_id": "999"}
    assert events[0]["method"] == "POST" and events[0]["path"] == "/api/v1/rounds/999/close/"
    assert events[0]["at"] and events[0]["ip"] == "127.0.0.1"

    # Paging back and filtering.
    first = client.get("/api/v1/audit/?limit=1").json()
    assert len(first["results"]) == 1 and first["next_before"] == events[0]["id"]
    older = client.get(f"/api/v1/audit/?before={first['next_before']}").json()
    assert [e["action"] for e in older["results"]] == ["api:round-list"]
    assert client.get("/api/v1/audit/?actor=nobody").json()["results"] == []
    bad = client.get("/api/v1/audit/?limit=0")
    assert bad.status_code == 400 and "limit" in bad.json()["fields"]

    # A page post is audited the same way, and the page shows the log.
    page = Client()
    page.force_login(admin)
    page.post(f"/manage/policies/{candidate.pk}/deploy/")
    assert AuditEvent.objects.filter(action="frontend:manage-policy-action").exists()
    html = page.get("/manage/audit/").content.decode()
    assert "frontend:manage-policy-action" in html and "/api/v1/rounds/999/close/" in html

    # Nobody else reads it, and their own posts are not admin actions.
    assert api(annotator).get("/api/v1/audit/").status_code == 403
    assert api(annotator).post("/api/v1/rounds/", {}, format="json").status_code == 403
    assert not AuditEvent.objects.filter(actor=annotator).exists()
    viewer = Client()
    viewer.force_login(annotator)
    assert viewer.get("/manage/audit/").status_code == 403


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    # A production process has no DJANGO_ALLOW_ASYNC_UNSAFE; the browser tests set it in this
    # one (tests/frontend/conftest.py), so it is not inherited.
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {
        **inherited,
        "FEEDBACK_ENV": "production",
        "SECRET_KEY": "a-long-random-production-key-" + "x" * 40,
        "ALLOWED_HOSTS": "feedback.example.org",
        "VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
