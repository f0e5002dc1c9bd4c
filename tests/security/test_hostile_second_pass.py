"""Issue 18, what a hostile client still broke after the first pass (items 1, 2, 6 and the
charset of 7), each attack sent the way the probe sent it and the answer a client would see:

1. a 3 MB submit whose ranking or flags holds 1,000,000 entries: a 400 whose body is a few
   hundred bytes and names the count (the validators read the length, not the entries); a list
   under the parser's cap but over what the task shows is refused by the task's own numbers;
2. two tabs of one annotator asking for work at the same moment, and a burst of 100, against a
   real gunicorn (2 workers x 4 threads) on PostgreSQL: one lease, the same assignment for all;
3. unknown fields and query parameters on every route (annotation, core, training): a 400
   naming each, and nothing stored; the training routes' lists refused by their length;
4. a JSON body declared in another charset than UTF-8: a 415 naming the charset.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from annotation import urls as annotation_urls
from annotation.models import Assignment, ComparisonTask, Demonstration, ExportJob, Judgment, Round
from benchmarks.load import NEXT, annotator_tokens, gunicorn_serving, round_seed
from feedback import api_urls as feedback_urls
from feedback.models import Deployment, PolicyVersion
from feedback.platform.roles import HasAnyRole, IsAdmin, IsAnnotator, IsResearcherOrAdmin
from training import urls as training_urls
from training.models import Automation, DatasetSnapshot, GateEvaluation, TrainingRun

from ..annotation.helpers import lease, valid_body
from ..conftest import database_url
from ..factories import PolicyVersionFactory, open_round

# ---------------------------------------------------------------------------------------------
# 2. One live lease per annotator, whatever the timing.


def _leases_at_once(base_url: str, token: str, count: int) -> list[tuple[int, str | None]]:
    """``count`` clients of one annotator (one token, as tabs share a session) send
    ``POST /api/v1/tasks/next/`` released together by a barrier; each answer's status and
    assignment id."""
    headers = {"Authorization": f"Token {token}"}
    clients = [httpx.Client(base_url=base_url, headers=headers, timeout=60) for _ in range(count)]
    gate = threading.Barrier(count)
    answers: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def tab(client: httpx.Client) -> None:
        # Not connected before the barrier: gunicorn closes a keep-alive connection idle for 2 s,
        # which a hundred threads lining up can take.
        gate.wait(timeout=60)
        response = client.post(NEXT)
        assignment = response.json()["assignment"] if response.status_code == 200 else None
        with lock:
            answers.append((response.status_code, assignment))

    threads = [threading.Thread(target=tab, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return answers


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("lease_rate", ["300/min", ""], ids=["rate-limited", "no-rate-limit"])
def test_two_tabs_and_a_burst_of_a_hundred_get_one_lease(postgres: None, lease_rate: str) -> None:
    """With the lease limit on, its lock is the annotator's lock too (taken once); with it off,
    the distributor takes that lock itself. Either way one lease."""
    round_seed(tasks=30, overlap=3)
    pair_token, burst_token = annotator_tokens(2, prefix="tabs")
    log = Path(settings.VAR_DIR) / "test-gunicorn-tabs.log"
    env = {"THROTTLE_LEASE": lease_rate}
    with gunicorn_serving(
        database_url=database_url(), log=log, env=env, workers=2, threads=4
    ) as server:
        pair = _leases_at_once(server.base_url, pair_token, 2)
        burst = _leases_at_once(server.base_url, burst_token, 100)

    for answers in (pair, burst):
        assert {status for status, _ in answers} == {200}, Counter(answers)
        assert len({assignment for _, assignment in answers}) == 1, Counter(answers)
    leased = Assignment.objects.filter(status=Assignment.Status.LEASED)
    per_annotator = Counter(leased.values_list("annotator__username", flat=True))
    assert sorted(per_annotator.values()) == [1, 1], per_annotator
    # The task counters agree: two slots taken in all, not one per request.
    assert sum(ComparisonTask.objects.values_list("leased_count", flat=True)) == 2


# ---------------------------------------------------------------------------------------------
# 1. Huge arrays under the body limit.

J = "application/json"
SUBMIT = "/api/v1/assignments/{assignment}/submit/"
# An error body a client can read: the probe got 113 MB back for one of these.
BOUNDED = 2048


@pytest.fixture
def world(api: Any, admin: Any, researcher: Any, annotator: Any) -> dict[str, Any]:
    """A round of 3-completion tasks, one leased to the annotator; a client for each persona."""
    round_ = open_round(n=3, k=3, overlap=1)
    annotator_client = api(annotator)
    task = lease(annotator_client)
    return {
        "clients": {
            "annotator": annotator_client,
            "admin": api(admin),
            "researcher": api(researcher),
        },
        "task": task,
        "ids": {"assignment": task["assignment"], "task": task["task"], "round": round_.pk},
    }


def send(
    world: dict[str, Any], who: str, method: str, url: str, body: Any, content_type: str = J
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    client = world["clients"][who]
    return client.generic(method, url.format(**world["ids"]), raw, content_type=content_type)


def refusal(response: Any, status: int = 400, *, bounded: int = BOUNDED) -> dict[str, Any]:
    """The API's error body, after checking it is one and that it is small."""
    assert response.status_code == status, response.content[:500]
    assert len(response.content) < bounded, len(response.content)
    body = response.json()
    assert set(body) == {"code", "detail", "fields"}, body
    return body


def _judgment(world: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**valid_body(world["task"]), **changes}


MILLION = 1_000_000
# (persona, method, url, body with a list of a million entries, the field named)
HUGE_LISTS = [
    ("annotator", "POST", SUBMIT, lambda w: _judgment(w, ranking=[[1]] * MILLION), "ranking"),
    ("annotator", "POST", SUBMIT, lambda w: _judgment(w, flags=["x"] * MILLION), "flags"),
    ("annotator", "POST", SUBMIT, lambda w: _judgment(w, ranking=[[1] * MILLION]), "ranking.0"),
    ("admin", "PUT", "/api/v1/tasks/{task}/gold/", lambda w: {"ranking": [[1]] * MILLION},
     "ranking"),
    ("admin", "POST", "/api/v1/rounds/", lambda w: {"k": 3, "prompt_ids": [1] * MILLION},
     "prompt_ids"),
    ("admin", "POST", "/api/v1/rounds/", lambda w: {"k": 3, "tags": ["a"] * MILLION}, "tags"),
    ("researcher", "POST", "/api/v1/exports/",
     lambda w: {"filters": {"rounds": [1] * MILLION}}, "filters.rounds"),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "method", "url", "build", "field"), HUGE_LISTS, ids=[c[4] for c in HUGE_LISTS]
)
def test_a_list_of_a_million_entries_is_a_small_400_naming_its_length(
    world: dict[str, Any], who: str, method: str, url: str, build: Any, field: str
) -> None:
    raw = json.dumps(build(world), separators=(",", ":")).encode()
    assert len(raw) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # 2 to 4 MB: under the body limit
    body = refusal(send(world, who, method, url, raw))
    # One message, which says the count: the entries were never looked at one by one.
    assert body["fields"] == {field: ["At most 100000 entries; got 1000000."]}, body
    assert not Judgment.objects.exists() and not ExportJob.objects.exists()
    assert Round.objects.count() == 1


@pytest.mark.django_db
def test_a_long_list_under_the_parsers_cap_is_refused_by_the_tasks_own_numbers(
    world: dict[str, Any],
) -> None:
    """50,000 entries pass the parser (a round may name 100,000 prompts) but are refused by what
    the task shows, by their length: one message each, not one per entry."""
    many = 50_000
    rubric = world["task"]["rubric"]
    flags = len(rubric["flags"])
    shows = "At most 3 entries (this task shows 3 completions); got"
    ids = [c["id"] for c in world["task"]["completions"]]
    cases = [
        (_judgment(world, ranking=[1] * many), "ranking", f"{shows} {many}."),
        (_judgment(world, ranking=[ids + [1] * many]), "ranking.0", f"{shows} {many + 3}."),
        (_judgment(world, scores={str(i): 1 for i in range(many)}), "scores", f"{shows} {many}."),
        (_judgment(world, flags=["x"] * many), "flags",
         f"At most {flags} entries (this rubric has {flags} flags, each listed once); got {many}."),
    ]  # fmt: skip
    for judgment, field, reason in cases:
        body = refusal(send(world, "annotator", "POST", SUBMIT, judgment))
        assert body["fields"] == {field: [reason]}, body
    filters = {"filters": {"policies": ["p"] * 5000}}
    body = refusal(send(world, "researcher", "POST", "/api/v1/exports/", filters))
    assert body["fields"] == {"filters.policies": ["At most 1000 entries; got 5000."]}
    tags = {"k": 3, "tags": ["t"] * 10_000}
    body = refusal(send(world, "admin", "POST", "/api/v1/rounds/", tags))
    assert body["fields"] == {"tags": ["At most 50 entries; got 10000."]}
    assert not Judgment.objects.exists() and not ExportJob.objects.exists()
    assert Round.objects.count() == 1


@pytest.mark.django_db
def test_an_error_body_names_at_most_twenty_fields_and_says_how_many_more(
    world: dict[str, Any],
) -> None:
    unknown = {f"field_{i:03}": i for i in range(500)}
    judgment = _judgment(world, **unknown)
    body = refusal(send(world, "annotator", "POST", SUBMIT, judgment), bounded=8192)
    assert list(body["fields"]) == [f"field_{i:03}" for i in range(20)]
    assert body["detail"].endswith("… and 480 more.")
    # A serializer's errors (a round's body) are cut the same way.
    round_body = {"k": 3, **unknown}
    body = refusal(send(world, "admin", "POST", "/api/v1/rounds/", round_body), bounded=8192)
    assert len(body["fields"]) == 20 and body["detail"].endswith("… and 480 more.")
    # A name sent back is cut too: a 100,000-character key is not echoed whole.
    body = refusal(send(world, "annotator", "POST", SUBMIT, _judgment(world, **{"k" * 100_000: 1})))
    assert [len(name) for name in body["fields"]] == [100]


# ---------------------------------------------------------------------------------------------
# 3. Unknown fields and query parameters are a 400 naming them, on every annotation route.

# (persona, method, url, body, the fields named)
UNKNOWN_BODY_FIELDS = [
    ("admin", "POST", "/api/v1/rounds/",
     {"k": 3, "endpoint": "http://x", "status": "closed", "id": 4242, "created_by": 1},
     ["endpoint", "status", "id", "created_by"]),
    ("admin", "PATCH", "/api/v1/rounds/{round}/", {"gold_rate": 0.5, "status": "closed"},
     ["status"]),
    ("admin", "POST", "/api/v1/rounds/{round}/close/", {"reason": "done"}, ["reason"]),
    ("admin", "PUT", "/api/v1/tasks/{task}/gold/", {"ranking": [[1]], "note": "x"}, ["note"]),
    ("researcher", "POST", "/api/v1/exports/", {"callback_url": "http://x"}, ["callback_url"]),
    ("annotator", "POST", "/api/v1/assignments/{assignment}/skip/",
     {"reason": "unclear", "status": "submitted"}, ["status"]),
    ("annotator", "POST", "/api/v1/tasks/next/", {"round": 2}, ["round"]),
    ("annotator", "POST", "/api/v1/demonstrations/", {"prompt": 1, "text": "x", "author": 2},
     ["author"]),
    ("annotator", "POST", "/api/v1/demonstrations/preview/", {"text": "x", "html": "<b>"},
     ["html"]),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "method", "url", "body", "fields"),
    UNKNOWN_BODY_FIELDS,
    ids=[f"{c[1]} {c[2]}" for c in UNKNOWN_BODY_FIELDS],
)
def test_an_unknown_body_field_is_a_400_naming_it(
    world: dict[str, Any], who: str, method: str, url: str, body: Any, fields: list[str]
) -> None:
    answer = refusal(send(world, who, method, url, body))
    assert list(answer["fields"]) == fields, answer
    assert all(
        reasons[0].startswith("Unknown field; allowed:") for reasons in answer["fields"].values()
    )
    # Nothing took effect.
    assert Round.objects.get().status == Round.Status.OPEN
    assert Round.objects.get().gold_rate != 0.5
    assert not ExportJob.objects.exists() and not Demonstration.objects.exists()
    assert Assignment.objects.get().status == Assignment.Status.LEASED


def _routes() -> list[tuple[str, str, str]]:
    """Every annotation route with each method its view answers, and the persona it serves."""
    personas = {IsAnnotator: "annotator", IsAdmin: "admin", IsResearcherOrAdmin: "researcher",
                HasAnyRole: "admin"}  # fmt: skip
    routes = []
    for pattern in annotation_urls.urlpatterns:
        view = pattern.callback.view_class
        (permission,) = view.permission_classes
        url = "/api/v1/" + str(pattern.pattern)
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view, method):
                routes.append((personas[permission], method.upper(), url))
    return routes


ROUTES = _routes()


@pytest.mark.django_db
@pytest.mark.parametrize(("who", "method", "url"), ROUTES, ids=[f"{m} {u}" for _, m, u in ROUTES])
def test_an_unknown_query_parameter_is_a_400_naming_it_on_every_route(
    world: dict[str, Any], who: str, method: str, url: str
) -> None:
    for placeholder, value in (
        ("<uuid:assignment_id>", "{assignment}"), ("<int:task_id>", "{task}"),
        ("<int:round_id>", "{round}"), ("<int:demonstration_id>", "1"),
        ("<uuid:job_id>", "00000000-0000-0000-0000-000000000001"),
        ("<uuid:judgment_id>", "00000000-0000-0000-0000-000000000002"), ("<int:rubric_id>", "1"),
    ):  # fmt: skip
        url = url.replace(placeholder, value)
    for parameter in ("ordering", "file_format"):
        answer = refusal(send(world, who, method, f"{url}?{parameter}=x", b""))
        assert list(answer["fields"]) == [parameter], answer
        assert answer["fields"][parameter][0].startswith("Unknown query parameter; allowed:")


@pytest.mark.django_db
def test_the_parameters_a_route_reads_still_work(world: dict[str, Any]) -> None:
    researcher, annotator = world["clients"]["researcher"], world["clients"]["annotator"]
    export = "/api/v1/exports/preferences/"
    assert researcher.get(f"{export}?round=1&rounds=1&format=trl").status_code == 200
    assert researcher.get("/api/v1/quality/annotators/?round=1").status_code == 200
    assert annotator.get("/api/v1/me/stats/?round=1").status_code == 200
    assert annotator.post("/api/v1/tasks/next/", {}, format="json").status_code == 200
    # The refusal lists what the route reads.
    (reason,) = refusal(researcher.get(f"{export}?ordering=-id&round=1"))["fields"]["ordering"]
    assert reason.startswith("Unknown query parameter; allowed: axis, consensus, exclude_flag,")


def _core_and_training_routes() -> list[tuple[str, str]]:
    """Every route of the core and training APIs with each method its view answers (an admin
    may call them all)."""
    routes = []
    for pattern in (*feedback_urls.urlpatterns, *training_urls.urlpatterns):
        view = pattern.callback.view_class
        url = "/api/v1/" + str(pattern.pattern)
        routes += [
            (m.upper(), url) for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)
        ]
    return routes


CORE_ROUTES = _core_and_training_routes()
WRITES = ("POST", "PUT", "PATCH")


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url"), CORE_ROUTES, ids=[f"{m} {u}" for m, u in CORE_ROUTES])
def test_core_and_training_routes_refuse_unknown_parameters_and_fields_naming_them(
    world: dict[str, Any], method: str, url: str
) -> None:
    """What issue 18 found ignored (``webhook`` on an automation, ``status`` and ``id`` on a
    training run, ``ordering`` anywhere) is a 400 naming it on every route, before anything is
    looked up or written."""
    policy = PolicyVersionFactory(name="candidate-v1", status=PolicyVersion.Status.CANDIDATE)
    ids = {"policy_id": policy.pk, "round_id": world["ids"]["round"]}
    url = re.sub(r"<int:(\w+)>", lambda m: str(ids.get(m.group(1), 1)), url)
    for parameter in ("ordering", "file_format"):
        answer = refusal(send(world, "admin", method, f"{url}?{parameter}=x", b""))
        assert list(answer["fields"]) == [parameter], answer
        assert answer["fields"][parameter][0].startswith("Unknown query parameter; allowed:")
    if method in WRITES:
        body = {"webhook": "http://example.invalid/", "status": "succeeded", "id": 4242}
        if url.endswith("/snapshots/text/"):  # a multipart upload (or raw text) only
            response = world["clients"]["admin"].post(url, body, format="multipart")
        else:
            response = send(world, "admin", method, url, body)
        answer = refusal(response)
        for name in body:
            assert answer["fields"][name][0].startswith("Unknown field; allowed:"), answer
    # Nothing took effect.
    assert not Deployment.objects.exists() and not TrainingRun.objects.exists()
    assert not GateEvaluation.objects.exists() and not Automation.objects.exists()
    assert not DatasetSnapshot.objects.exists()
    assert PolicyVersion.objects.get(pk=policy.pk).status == PolicyVersion.Status.CANDIDATE


@pytest.mark.django_db
def test_the_training_routes_lists_are_refused_by_their_length(world: dict[str, Any]) -> None:
    round_ = "/api/v1/rounds/{round}/automation/"
    recipe = {f"field_{i}": 1 for i in range(101)}
    cases = [
        ("/api/v1/training-runs/", {"kind": "dpo", "rounds": [1] * 5000}, "rounds", 1000, 5000),
        ("/api/v1/training-runs/", {"kind": "dpo", "recipe": recipe}, "recipe", 100, 101),
        (round_, {"prompt_tags": ["t"] * 51}, "prompt_tags", 50, 51),
        (round_, {"policy_recipe": recipe}, "policy_recipe", 100, 101),
        ("/api/v1/snapshots/", {"kind": "sft", "rounds": [1] * 5000}, "rounds", 1000, 5000),
        ("/api/v1/snapshots/", {"kind": "export", "filters": {"rounds": [1] * 5000}},
         "filters.rounds", 1000, 5000),
    ]  # fmt: skip
    for url, body, field, limit, count in cases:
        answer = refusal(send(world, "admin", "POST", url, body))
        assert answer["fields"] == {field: [f"At most {limit} entries; got {count}."]}, answer
    assert not TrainingRun.objects.exists() and not Automation.objects.exists()
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.django_db
def test_the_core_and_training_routes_still_read_their_parameters(world: dict[str, Any]) -> None:
    admin = world["clients"]["admin"]
    page = admin.get("/api/v1/audit/?limit=5&actor=admin&action=api:round-close")
    assert page.status_code == 200, page.content
    corpus = "/api/v1/snapshots/text/?name=notes&eval_fraction=0"
    made = admin.generic("POST", corpus, b"one document\n\nanother\n", content_type="text/plain")
    assert made.status_code == 201, made.content
    assert DatasetSnapshot.objects.get().filters["corpus"] == "notes"
    # The refusal lists what the route reads.
    (reason,) = refusal(admin.get("/api/v1/audit/?ordering=-id"))["fields"]["ordering"]
    assert reason == "Unknown query parameter; allowed: actor, action, since, before, limit."


# ---------------------------------------------------------------------------------------------
# 4. JSON is UTF-8.


@pytest.mark.django_db
@pytest.mark.parametrize("charset", ["latin-1", "ISO-8859-1", "utf-16"])
def test_a_json_body_in_another_charset_is_refused_naming_it(
    world: dict[str, Any], charset: str
) -> None:
    raw = json.dumps(_judgment(world, rationale="café"), ensure_ascii=False).encode("latin-1")
    answer = refusal(send(world, "annotator", "POST", SUBMIT, raw, f"{J}; charset={charset}"), 415)
    assert f"charset={charset.lower()}" in answer["detail"] and "UTF-8" in answer["detail"]
    assert answer["fields"] == {"body": [answer["detail"]]}
    assert not Judgment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", [J, f"{J}; charset=utf-8", f"{J}; charset=UTF-8"])
def test_a_utf8_body_is_read_with_or_without_its_charset(
    world: dict[str, Any], content_type: str
) -> None:
    raw = json.dumps(_judgment(world, rationale="café ☕"), ensure_ascii=False).encode()
    response = send(world, "annotator", "POST", SUBMIT, raw, content_type)
    assert response.status_code == 200, response.content
    assert Judgment.objects.get().rationale == "café ☕"
