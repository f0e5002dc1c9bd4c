"""Rate limits (issue 18, items 3 and 5): no window of a limit's length lets more than the limit
through, a burst across a minute boundary included, however many processes serve; and a blast
of wrong passwords cannot lock a person out (feedback/platform/throttle.py says why it is
keyed by account and address, and counts failures only).

The limiter is driven with explicit clock values (no sleeping); the HTTP tests go through the
real routes: the lease API on a real gunicorn, the sign-in page and the token API."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client, RequestFactory
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from benchmarks.load import gunicorn_serving
from feedback.platform.roles import Role
from feedback.platform.throttle import (
    Limit,
    login_attempt_begin,
    login_attempt_succeeded,
    scope_limit,
    throttle_take,
    throttle_windows_prune,
)

from ..conftest import database_url
from ..factories import open_round

NEXT = "/api/v1/tasks/next/"
TOKEN = "/api/v1/auth/token/"
NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp()
ATTACKER, HOME, OFFICE = "203.0.113.66", "198.51.100.7", "192.0.2.10"
_keys = itertools.count()


def taken(limit: Limit, at: float) -> bool:
    return throttle_take([limit], now=at).wait is None


# --- the limiter, on a clock the test drives ----------------------------------------------------


@pytest.mark.django_db
def test_a_burst_across_a_minute_boundary_gets_the_limit_not_twice_it(settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "lease": "300/min"}
    limit = scope_limit("lease", "user:1")
    before, after = NOON + 59.5, NOON + 60.5  # 12:00:59.5 and 12:01:00.5

    assert all(taken(limit, before) for _ in range(300))
    refused = [throttle_take([limit], now=after) for _ in range(300)]
    assert all(outcome.wait is not None for outcome in refused)
    # Retry-After: when the first burst leaves the window, at 12:01:59.5.
    assert [outcome.wait for outcome in refused] == pytest.approx([59.0] * 300)
    assert not taken(limit, NOON + 119.4)
    assert all(taken(limit, NOON + 119.5) for _ in range(300))
    assert not taken(limit, NOON + 119.5)


PROPERTY = hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(
    count=st.integers(1, 6),
    period=st.sampled_from([1.0, 60.0]),
    gaps=st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=40),
)
def test_no_window_of_the_period_holds_more_than_the_limit(db, count, period, gaps):
    """Requests at any times (gaps in seconds, zero for a burst): every window of the period's
    length holds at most ``count`` let through, and a refusal happens only when one would
    hold more, with a Retry-After no longer than the period."""
    limit = Limit(key=f"property:{next(_keys)}", count=count, period_s=period)
    times = list(itertools.accumulate(gap / 10 for gap in gaps))
    accepted: list[float] = []
    for at in times:
        outcome = throttle_take([limit], now=NOON + at)
        recent = [a for a in accepted if a > at - period]
        if outcome.wait is None:
            accepted.append(at)
        else:
            assert len(recent) >= count and 0 < outcome.wait <= period
    for start in accepted:  # the fullest window starts at a request let through
        assert sum(start <= a < start + period for a in accepted) <= count


@pytest.mark.django_db
def test_pruning_keeps_what_a_limit_still_counts(settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "lease": "2/min"}
    old, recent = scope_limit("lease", "user:old"), scope_limit("lease", "user:recent")
    assert taken(old, NOON) and taken(recent, NOON + 50) and taken(recent, NOON + 51)

    assert throttle_windows_prune(now=NOON + 70) == 1  # only the row no minute reaches back to
    assert not taken(recent, NOON + 70)  # still counted: still refused
    assert taken(old, NOON + 70)


# --- many processes: a real gunicorn ------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_parallel_lease_burst_on_gunicorn_never_gets_past_the_limit(postgres, make_user):
    """Sixty leases at once from one annotator, over HTTP, served by two gunicorn processes of
    eight threads each: exactly 20 (the limit) are served, the rest are told to wait."""
    annotator = make_user(Role.ANNOTATOR, username="eager")
    bystander = make_user(Role.ANNOTATOR, username="bystander")
    open_round(n=5, overlap=1)
    eager, other = (
        f"Token {Token.objects.create(user=user).key}" for user in (annotator, bystander)
    )
    log = Path(django_settings.VAR_DIR) / "test-gunicorn-throttle.log"
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()
    with gunicorn_serving(
        database_url=database_url(), log=log, env={"THROTTLE_LEASE": "20/min"}, workers=2, threads=8
    ) as server:
        gate = threading.Barrier(60)

        def lease() -> None:
            with httpx.Client(base_url=server.base_url, timeout=60) as http:
                gate.wait(timeout=60)
                response = http.post(NEXT, headers={"Authorization": eager})
            statuses[response.status_code] += 1
            retry_after.add(response.headers.get("Retry-After", ""))

        threads = [threading.Thread(target=lease) for _ in range(60)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            served_other = http.post(NEXT, headers={"Authorization": other}).status_code

    assert statuses[200] + statuses[204] == 20 and statuses[429] == 40, statuses
    assert all(0 < int(seconds) <= 60 for seconds in retry_after - {""}), retry_after
    assert served_other == 200  # the limit is per annotator


# --- sign-in: a blast of wrong passwords locks nobody out ---------------------------------------


def page_sign_in(address: str, username: str, password: str) -> Any:
    return Client(REMOTE_ADDR=address).post("/login/", {"username": username, "password": password})


def token_sign_in(address: str, username: str, password: str) -> Any:
    body = {"username": username, "password": password}
    return APIClient(REMOTE_ADDR=address).post(TOKEN, body, format="json")


@pytest.fixture
def login_rates(settings: Any) -> None:
    settings.THROTTLE_RATES = {
        **settings.THROTTLE_RATES,
        "login": "10/min",
        "login_address": "100/min",
    }


@pytest.mark.django_db
def test_a_login_blast_does_not_lock_the_real_user_out(login_rates, make_user):
    make_user(Role.ANNOTATOR, username="target", password="target-password")
    make_user(Role.ANNOTATOR, username="colleague", password="colleague-password")

    # 200 wrong passwords for one account from one address, half on the page, half the API.
    answers = Counter(
        sign_in(ATTACKER, "target", f"guess-{i}").status_code
        for i in range(100)
        for sign_in in (page_sign_in, token_sign_in)
    )
    # Ten passwords were checked (the page shows the form again: 200; the API says 400), then
    # the attacker's pair is refused without a check.
    assert answers == Counter({429: 190, 200: 5, 400: 5}), answers

    # The account's own person, from anywhere else: signed in, on the page and the API.
    assert page_sign_in(HOME, "target", "target-password").status_code == 302
    token = token_sign_in(HOME, "target", "target-password")
    assert token.status_code == 200 and token.json()["username"] == "target"
    # Another account from the attacking address: signed in.
    assert page_sign_in(ATTACKER, "colleague", "colleague-password").status_code == 302
    assert token_sign_in(ATTACKER, "colleague", "colleague-password").status_code == 200

    # The attacker's pair stays refused, with when to try again, right password or not (a
    # check past the limit would tell the attacker the password).
    for password in ("guess-201", "target-password"):
        page = page_sign_in(ATTACKER, "target", password)
        assert page.status_code == 429 and "Too many sign-in attempts" in page.content.decode()
        assert 0 < int(page["Retry-After"]) <= 60
        api = token_sign_in(ATTACKER, "target", password)
        assert api.status_code == 429 and api.json()["code"] == "throttled"
        assert 0 < int(api["Retry-After"]) <= 60


@pytest.mark.django_db
def test_the_pairs_refusal_ends_with_its_window_and_a_success_forgets_its_failures(login_rates):
    from_attacker = RequestFactory().post("/login/", REMOTE_ADDR=ATTACKER)
    for second in range(10):
        assert login_attempt_begin(from_attacker, username="target", now=NOON + second).wait is None
    refused = login_attempt_begin(from_attacker, username="target", now=NOON + 30)
    assert refused.wait == pytest.approx(30.0)  # the first failure leaves at 12:01:00

    # At 12:01:00 one slot is free again; a right password then clears the pair's failures.
    attempt = login_attempt_begin(from_attacker, username="target", now=NOON + 60)
    assert attempt.wait is None
    login_attempt_succeeded(attempt)
    assert all(
        login_attempt_begin(from_attacker, username="target", now=NOON + 61).wait is None
        for _ in range(10)
    )


@pytest.mark.django_db
def test_the_address_ceiling_counts_failures_only(settings, make_user):
    """Credential stuffing (one password tried on many accounts) meets the per-address ceiling;
    people behind one shared address who know their passwords never do."""
    settings.THROTTLE_RATES = {
        **settings.THROTTLE_RATES,
        "login": "10/min",
        "login_address": "5/min",
    }
    for i in range(8):
        make_user(Role.ANNOTATOR, username=f"staff{i}", password=f"password-{i}")

    # Eight people sign in from the office's one address, more than the ceiling: all in.
    office = [page_sign_in(OFFICE, f"staff{i}", f"password-{i}").status_code for i in range(8)]
    assert office == [302] * 8

    # One password on many accounts from one address: five are checked, then the address waits.
    stuffed = [token_sign_in(ATTACKER, f"user{i}", "Summer2026!").status_code for i in range(8)]
    assert stuffed == [400] * 5 + [429] * 3
    assert page_sign_in(ATTACKER, "staff0", "password-0").status_code == 429
    # Those accounts, and the office, are untouched.
    assert token_sign_in(OFFICE, "staff0", "password-0").status_code == 200
