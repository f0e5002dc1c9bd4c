"""PostgreSQL goes away during a load of lease and submit requests, then comes back.

A real gunicorn reaches PostgreSQL through a TCP proxy (``tcp_proxy.py``). Mid-load the proxy is
cut: every open connection closes under the server, as when PostgreSQL restarts, and new ones
are reset; then new ones hang unanswered (a host gone away), so only ``DB_CONNECT_TIMEOUT`` (3 s)
ends each attempt. Then it is restored. Throughout, the clients keep sending, a submit that got a
503 is sent again with the same body, and the test checks:

* every failure is a 503 JSON body with code ``database_unavailable`` and a Retry-After header,
  answered within the client's 15 s timeout (never a 500, never a hang); a page is a 503 page;
* the service recovers by itself: submits succeed again after the restore, and gunicorn booted
  no worker beyond its first four;
* no partial judgment: every judgment row is complete and consistent with its assignment, every
  submit that answered 200 is stored exactly once, and nothing is stored that no 200 answered;
* the task counters agree with the Assignment and Judgment rows.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Q
from django.test import Client

from annotation.judgments import body_sha256, judgment_validate
from annotation.models import Assignment, ComparisonTask, Judgment
from benchmarks.load import NEXT, annotator_body, annotator_tokens, gunicorn_serving, round_seed

from ..conftest import database_url
from .tcp_proxy import TcpProxy

CLIENTS = 6
TASKS = 400  # at overlap 2: more slots than the clients fill in the test's time
CLIENT_TIMEOUT_S = 15.0
BACKOFF_S = 0.1  # a client's pause after a 503 (the header says 5 s; a test need not wait so)
WORKERS = 4


@dataclass
class Call:
    kind: str  # lease or submit
    phase: str  # the proxy's state when the request was sent
    status: int | None  # None: no answer (the transport failed or timed out)
    body: Any = None
    retry_after: str | None = None
    content_type: str | None = None
    error: str | None = None
    assignment: str | None = None
    seconds: float = 0.0


@dataclass
class Outage:
    """What the clients share: the proxy's phase, a stop flag, and every call made."""

    phase: str = "before"
    stop: threading.Event = field(default_factory=threading.Event)
    cut: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)  # a task held for the cut
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, predicate: Callable[[Call], bool]) -> int:
        with self.lock:
            return sum(1 for c in self.calls if predicate(c))


def client_post(
    client: httpx.Client, outage: Outage, kind: str, url: str, body: Any, assignment: str | None
) -> Call:
    call = Call(kind=kind, phase=outage.phase, status=None, assignment=assignment)
    began = time.perf_counter()
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        call.error = repr(exc)
    else:
        call.status = response.status_code
        call.retry_after = response.headers.get("Retry-After")
        call.content_type = response.headers.get("Content-Type")
        call.body = response.json() if response.content else None
    call.seconds = time.perf_counter() - began
    with outage.lock:
        outage.calls.append(call)
    return call


def annotate(base_url: str, token: str, outage: Outage, *, mid_task_at_cut: bool) -> None:
    """Lease, submit; after a 503 send the same request again. On stop, finish the submit in
    hand (so every stored judgment has had its 200), within a deadline. ``mid_task_at_cut``:
    hold the first task leased until the cut, so at least one submit meets the outage."""
    pending: tuple[str, dict[str, Any]] | None = None
    holding = mid_task_at_cut
    deadline = None
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=CLIENT_TIMEOUT_S) as client:
        while True:
            if outage.stop.is_set():
                deadline = deadline or time.monotonic() + 30
                if pending is None or time.monotonic() > deadline:
                    return
            if pending is None:
                call = client_post(client, outage, "lease", NEXT, None, None)
                if call.status == 200:
                    pending = (call.body["assignment"], annotator_body(call.body))
                    if holding:
                        outage.holding.set()
                        outage.cut.wait(timeout=30)
                        holding = False
            else:
                assignment, body = pending
                url = f"/api/v1/assignments/{assignment}/submit/"
                call = client_post(client, outage, "submit", url, body, assignment)
                if call.status != 503:
                    pending = None
            if call.status not in (200, 503):
                return  # 204 (no work left), a transport failure or an unexpected answer
            if call.status == 503:
                outage.stop.wait(BACKOFF_S)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def through(proxy: TcpProxy) -> str:
    """The test database's URL, with the proxy's port in place of PostgreSQL's."""
    parts = urlsplit(database_url())
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urlunsplit(parts._replace(netloc=netloc))


def judgment_problems(judgment: Judgment, completion_ids: list[int]) -> list[str]:
    """Why a stored judgment is not a whole, valid one (empty when it is)."""
    assignment = judgment.assignment
    problems = []
    if assignment.status != Assignment.Status.SUBMITTED or assignment.finished_at is None:
        problems.append(f"assignment {assignment.pk} is {assignment.status}")
    if (assignment.task_id, assignment.annotator_id) != (judgment.task_id, judgment.annotator_id):
        problems.append("task or annotator differ from the assignment's")
    stored = {
        "ranking": judgment.ranking, "scores": judgment.scores, "strength": judgment.strength,
        "flags": judgment.flags, "rationale": judgment.rationale,
        "time_spent_ms": judgment.time_spent_ms,
    }  # fmt: skip
    clean, errors = judgment_validate(
        body=stored, completion_ids=completion_ids, rubric=judgment.rubric
    )
    if errors:
        problems.append(f"invalid as stored: {errors}")
    elif body_sha256(clean) != judgment.body_sha256:
        problems.append("stored fields do not hash to the submitted body's sha256")
    return [f"judgment {judgment.pk}: {p}" for p in problems]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_outage_gives_fast_503s_and_recovers_without_partial_judgments(
    postgres: None, capsys: pytest.CaptureFixture[str]
) -> None:
    round_ = round_seed(tasks=TASKS, overlap=2, seed=7)
    tokens = annotator_tokens(CLIENTS, prefix="outage")
    outage = Outage()
    browser = Client()  # a signed-in browser's session, for a page during the outage
    browser.force_login(get_user_model().objects.get(auth_token__key=tokens[0]))
    session = browser.cookies[settings.SESSION_COOKIE_NAME].value
    log = Path(settings.VAR_DIR) / "test-gunicorn-outage.log"
    log.unlink(missing_ok=True)
    target = (connection.settings_dict["HOST"] or "127.0.0.1",
              int(connection.settings_dict["PORT"] or 5432))  # fmt: skip

    def ok_submits(phase: str) -> int:
        return outage.count(lambda c: c.kind == "submit" and c.status == 200 and c.phase == phase)

    def unavailable(phase: str) -> int:
        return outage.count(lambda c: c.status == 503 and c.phase == phase)

    with (
        TcpProxy(target) as proxy,
        gunicorn_serving(database_url=through(proxy), log=log, workers=WORKERS,
                         env={"DB_CONNECT_TIMEOUT": "3"}) as server,
        httpx.Client(base_url=server.base_url, timeout=CLIENT_TIMEOUT_S,
                     cookies={settings.SESSION_COOKIE_NAME: session}) as page,
    ):  # fmt: skip
        clients = [
            threading.Thread(
                target=annotate,
                args=(server.base_url, token, outage),
                kwargs={"mid_task_at_cut": i == 0},
            )
            for i, token in enumerate(tokens)
        ]
        for thread in clients:
            thread.start()
        phases = {"start": time.perf_counter()}
        try:
            wait_for(lambda: ok_submits("before") >= 10 and outage.holding.is_set(), timeout=30,
                     what="load before the cut")  # fmt: skip
            outage.phase = "cut"
            phases["cut"] = time.perf_counter()
            proxy.cut()
            outage.cut.set()
            wait_for(lambda: unavailable("cut") >= 2 * CLIENTS, timeout=20, what="503s, reset")
            page_down = page.get("/annotate/")
            outage.phase = "hang"
            phases["hang"] = time.perf_counter()
            proxy.cut(hang=True)
            wait_for(lambda: unavailable("hang") >= CLIENTS // 2, timeout=20, what="503s, hung")
            outage.phase = "after"
            phases["after"] = time.perf_counter()
            proxy.restore()
            wait_for(lambda: ok_submits("after") >= 10, timeout=30, what="recovery")
            page_up = page.get("/annotate/")
            phases["end"] = time.perf_counter()
        finally:
            outage.stop.set()
            outage.cut.set()  # releases the held task if the test failed before the cut
            for thread in clients:
                thread.join(timeout=60)
    boots = log.read_text().count("Booting worker")

    calls = outage.calls
    statuses = Counter((c.phase, c.kind, c.status) for c in calls)
    failed = [c for c in calls if c.status not in (200, 503)]
    assert failed == [], failed[:5]
    unavailable_calls = [c for c in calls if c.status == 503]
    assert unavailable_calls
    for call in unavailable_calls:
        assert call.content_type == "application/json"
        assert call.body == {
            "code": "database_unavailable",
            "detail": "The database is unreachable; nothing was saved. Retry shortly.",
            "fields": {},
        }
        assert call.retry_after is not None and call.retry_after.isdigit()
    # A page (session auth, HTML) says the same in HTML, and works again after.
    assert page_down.status_code == 503, page_down.text[:500]
    assert page_down.headers["Content-Type"].startswith("text/html")
    assert "The database is unreachable" in page_down.text
    assert page_down.headers["Retry-After"].isdigit()
    assert page_up.status_code == 200
    assert boots == WORKERS, "gunicorn booted a worker again: the service did not recover alone"
    assert not [t for t in clients if t.is_alive()]

    # Every submit that answered 200 is stored once; nothing else is stored.
    acknowledged = {
        c.assignment: c.body["id"] for c in calls if c.kind == "submit" and c.status == 200
    }
    assert len(acknowledged) == sum(1 for c in calls if c.kind == "submit" and c.status == 200)
    judgments = Judgment.objects.filter(task__round=round_).select_related("assignment", "rubric")
    stored = {str(j.assignment_id): str(j.pk) for j in judgments}
    assert stored == acknowledged
    slots = {}
    for task_id, completion_id in round_.tasks.values_list("slots__task", "slots__completion"):
        slots.setdefault(task_id, []).append(completion_id)
    assert [p for j in judgments for p in judgment_problems(j, slots[j.task_id])] == []
    assert not Assignment.objects.filter(
        task__round=round_, status=Assignment.Status.SUBMITTED, judgments__isnull=True
    ).exists()
    # The counters on each task agree with its rows.
    tasks = ComparisonTask.objects.filter(round=round_).annotate(
        judged=Count("judgments", distinct=True),
        submitted=Count("assignments", filter=Q(assignments__status="submitted"), distinct=True),
        leased=Count("assignments", filter=Q(assignments__status="leased"), distinct=True),
    )
    disagree = [
        (t.pk, t.submitted_count, t.judged, t.submitted, t.leased_count, t.leased)
        for t in tasks
        if not (t.submitted_count == t.judged == t.submitted and t.leased_count == t.leased)
    ]
    assert disagree == []

    # Every submit answered 503 was sent again with the same body until a 200, and is stored
    # once: whether its first try had committed (the answer was lost, not the commit) or not.
    retried = {c.assignment for c in unavailable_calls if c.kind == "submit"}
    assert retried and retried <= set(stored)  # at least the task held through the cut
    marks = list(phases.values())
    spans = ", ".join(f"{name} {b - a:.1f} s" for name, a, b in
                      zip(["before", "cut", "hang", "after"], marks, marks[1:], strict=False))  # fmt: skip
    slowest = {p: max((c.seconds for c in unavailable_calls if c.phase == p), default=0.0)
               for p in ("cut", "hang")}  # fmt: skip
    with capsys.disabled():
        print(f"\n[database outage] phases: {spans}; {len(calls)} calls: "
              f"{dict(sorted(statuses.items(), key=str))}; slowest 503 when reset "
              f"{slowest['cut']:.2f} s, when hung {slowest['hang']:.2f} s; {len(retried)} "
              f"submits answered 503 then retried, each stored once; proxy accepted "
              f"{proxy.accepted}, reset {proxy.refused}")  # fmt: skip
