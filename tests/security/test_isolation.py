"""Isolation (DESIGN §11): every route answers each persona exactly as its role allows, another
user's object looks exactly like a missing one, and server-owned fields cannot be posted.

The route table below is the one statement of who may call what. It is checked against the URL
resolver, so a new route (or a new method on an API view) fails here until it is given an entry.
Each call runs in a savepoint that is rolled back, so every call sees the same world.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from http.cookies import SimpleCookie
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.http import HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import UUIDConverter
from rest_framework.test import APIClient
from rest_framework.views import APIView

from annotation.exports.jobs import export_job_create
from annotation.models import Assignment, Demonstration, ExportJob, Judgment, Round
from feedback.models import Deployment, PolicyVersion, Prompt, Webhook
from feedback.platform.roles import Role
from feedback.serving.policies import deployment_request
from training.automation import automation_create
from training.models import Automation, DatasetSnapshot, GateEvaluation, TrainingRun
from training.runs import training_run_cancel, training_run_create

from ..annotation.helpers import lease, skip_url, submit_url, valid_body
from ..conftest import client_for
from ..factories import PolicyVersionFactory, UserFactory, open_round, prompts_with_completions

pytestmark = pytest.mark.django_db

PERSONAS = ("anonymous", "outsider", "annotator", "researcher", "admin")
PUBLIC = frozenset(PERSONAS)
SIGNED_IN = PUBLIC - {"anonymous"}
ANNOTATORS = frozenset({"annotator"})
READERS = frozenset({"researcher", "admin"})
WITH_A_ROLE = frozenset({"annotator", "researcher", "admin"})
ADMINS = frozenset({"admin"})
NO_METHOD: frozenset[str] = frozenset()  # a page that refuses the method to everyone (405)


@dataclass(frozen=True)
class Route:
    page: bool  # a page sends an anonymous caller to the login form; the API answers 401
    methods: dict[str, frozenset[str]]


def api(**methods: frozenset[str]) -> Route:
    return Route(page=False, methods=methods)


def page(**methods: frozenset[str]) -> Route:
    """A page: GET and POST are both listed, since a function view takes any method."""
    assert set(methods) == {"GET", "POST"}
    return Route(page=True, methods=methods)


# Route name -> method -> the personas the role rules let through. Everyone else is refused:
# 401 (API) or a redirect to the login form (page) when anonymous, 403 when signed in.
ROUTES: dict[str, Route] = {
    "api:auth-token": api(POST=PUBLIC),
    "api:audit-list": api(GET=ADMINS),
    "api:policy-list": api(GET=READERS, POST=ADMINS),
    "api:policy-deploy": api(POST=ADMINS),
    "api:policy-rollback": api(POST=ADMINS),
    "api:deployment-detail": api(GET=READERS),
    "api:webhook-list": api(GET=ADMINS, POST=ADMINS),
    "api:webhook-detail": api(GET=ADMINS, DELETE=ADMINS),
    "api:webhook-ping": api(POST=ADMINS),
    "api:webhook-delivery-list": api(GET=ADMINS),
    "api:task-next": api(POST=ANNOTATORS),
    "api:assignment-submit": api(POST=ANNOTATORS),
    "api:assignment-skip": api(POST=ANNOTATORS),
    "api:judgment-revise": api(POST=ANNOTATORS),
    "api:my-judgments": api(GET=ANNOTATORS),
    "api:demonstration-next": api(GET=ANNOTATORS),
    "api:demonstration-create": api(POST=ANNOTATORS),
    "api:demonstration-last": api(GET=ANNOTATORS),
    "api:demonstration-edit": api(PUT=ANNOTATORS),
    "api:demonstration-skip": api(POST=ANNOTATORS),
    "api:demonstration-preview": api(POST=ANNOTATORS),
    "api:me-stats": api(GET=ANNOTATORS),
    "api:me-progress": api(GET=ANNOTATORS),
    "api:task-gold": api(GET=ADMINS, PUT=ADMINS, DELETE=ADMINS),
    "api:quality-agreement": api(GET=READERS),
    "api:quality-annotators": api(GET=READERS),
    "api:quality-disagreements": api(GET=READERS),
    "api:prompt-import": api(POST=ADMINS),
    "api:rubric-list": api(GET=WITH_A_ROLE, POST=ADMINS),
    "api:rubric-detail": api(GET=WITH_A_ROLE),
    "api:round-list": api(GET=ADMINS, POST=ADMINS),
    "api:round-detail": api(GET=ADMINS, PATCH=ADMINS),
    "api:round-close": api(POST=ADMINS),
    # Everyone with a role once an admin turns it on; the world's round has it off.
    "api:round-leaderboard": api(GET=ADMINS),
    "api:policy-gate": api(POST=ADMINS),
    "api:round-automation": api(GET=ADMINS, POST=ADMINS),
    "api:round-automation-stop": api(POST=ADMINS),
    "api:gate-detail": api(GET=ADMINS),
    "api:training-run-list": api(GET=ADMINS, POST=ADMINS),
    # Researchers may freeze exports (kind "export"); the training kinds are the view's 403.
    "api:snapshot-list": api(GET=READERS, POST=READERS),
    "api:snapshot-text": api(POST=ADMINS),
    "api:snapshot-detail": api(GET=READERS),
    "api:snapshot-datasheet": api(GET=READERS),
    "api:training-run-detail": api(GET=ADMINS),
    "api:training-run-cancel": api(POST=ADMINS),
    "api:export-preferences": api(GET=READERS),
    "api:export-job-list": api(GET=READERS, POST=READERS),
    "api:export-job-detail": api(GET=READERS),
    "api:export-job-download": api(GET=READERS),
    "schema": api(GET=PUBLIC),
    "api-docs": api(GET=PUBLIC),
    "frontend:home": page(GET=SIGNED_IN, POST=SIGNED_IN),
    "frontend:login": page(GET=PUBLIC, POST=PUBLIC),
    "frontend:logout": page(GET=NO_METHOD, POST=PUBLIC),
    "frontend:workspace": page(GET=ANNOTATORS, POST=ANNOTATORS),
    "frontend:demonstrate": page(GET=ANNOTATORS, POST=ANNOTATORS),
    "frontend:progress": page(GET=ANNOTATORS, POST=ANNOTATORS),
    "frontend:manage": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-import": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:manage-round-open": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:manage-round": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-round-stop": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:manage-round-close": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:manage-round-leaderboard": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:manage-round-priority": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:manage-rubrics": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-rubric": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-rubric-new": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-policies": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-policy-action": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:manage-training": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-training-run": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-training-compare": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-audit": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-webhooks": page(GET=ADMINS, POST=ADMINS),
    "frontend:manage-webhook-action": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:research": page(GET=READERS, POST=READERS),
    "frontend:research-task": page(GET=READERS, POST=READERS),
    "frontend:research-task-gold": page(GET=NO_METHOD, POST=ADMINS),
    "frontend:research-snapshot": page(GET=READERS, POST=READERS),
    "frontend:research-snapshot-push": page(GET=NO_METHOD, POST=READERS),
}
# Routes whose objects belong to one user: their ids must not be guessable.
OWNED = ("api:assignment-submit", "api:assignment-skip", "api:judgment-revise",
         "api:export-job-detail", "api:export-job-download")  # fmt: skip


@cache
def resolver_routes() -> dict[str, URLPattern]:
    """Every named route the URL resolver serves, by its namespaced name."""
    found: dict[str, URLPattern] = {}

    def walk(patterns: list[Any], namespace: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry.url_patterns, inner)
            else:
                assert entry.name, f"route {entry.pattern} has no name"
                found[namespace + entry.name] = entry

    walk(get_resolver().url_patterns, "")
    return found


def api_view_methods(entry: URLPattern) -> set[str] | None:
    """The methods a DRF view implements (None for a page or another kind of view)."""
    view = getattr(entry.callback, "cls", None)
    if view is None or not issubclass(view, APIView):
        return None
    names = set(view.http_method_names) - {"options", "head", "trace"}
    return {name.upper() for name in names if hasattr(view, name)}


# ---- The world


@dataclass
class World:
    users: dict[str, Any]
    annotator2: Any
    researcher2: Any
    round: Round
    base: PolicyVersion
    candidate: PolicyVersion
    deployment: Deployment
    run: TrainingRun
    snapshot: DatasetSnapshot
    gate: GateEvaluation
    automation: Automation
    export_job: ExportJob
    held: Assignment  # the annotator's current lease
    webhook: Webhook
    mine: dict[str, list[Assignment]] = field(default_factory=dict)  # by state, annotator2's

    def url_kwargs(self) -> dict[str, Any]:
        return {
            "policy_id": self.candidate.pk, "deployment_id": self.deployment.pk,
            "assignment_id": self.held.pk, "task_id": self.held.task_id,
            "round_id": self.round.pk, "gate_id": self.gate.pk, "run_id": self.run.pk,
            "snapshot_id": self.snapshot.pk, "job_id": self.export_job.pk, "action": "deploy",
            "demonstration_id": Demonstration.objects.order_by("pk").first().pk,
            "rubric_id": self.round.rubric_id, "webhook_id": self.webhook.pk,
            "judgment_id": Judgment.objects.filter(annotator=self.users["annotator"])
            .order_by("pk").first().pk,
        }  # fmt: skip


def judge(client: APIClient) -> Assignment:
    task = lease(client)
    assert task is not None
    response = client.post(submit_url(task["assignment"]), valid_body(task), format="json")
    assert response.status_code == 200, response.content
    return Assignment.objects.get(pk=task["assignment"])


def demonstrate(client: APIClient, text: str) -> None:
    prompt = client.get("/api/v1/demonstrations/next/").json()["prompt"]
    response = client.post("/api/v1/demonstrations/", {"prompt": prompt, "text": text}, "json")
    assert response.status_code == 201, response.content


@pytest.fixture
def world(
    admin: Any,
    researcher: Any,
    annotator: Any,
    annotator2: Any,
    outsider: Any,
    tiny_model_path: str,
) -> World:
    """Two annotators with judgments, skips, leases and demonstrations in an automated round; a
    serving and a candidate policy with a deployment; a reward run on its snapshot, a gate;
    a researcher's export job."""
    round_ = open_round(n=8, k=3, overlap=2)
    first, second = client_for(annotator), client_for(annotator2)
    judge(first)
    judge(first)
    mine = {"submitted": [judge(second)]}
    skipped = lease(second)
    response = second.post(skip_url(skipped["assignment"]), {"reason": "unsure"}, "json")
    assert response.status_code == 200, response.content
    mine["skipped"] = [Assignment.objects.get(pk=skipped["assignment"])]
    held = Assignment.objects.get(pk=lease(first)["assignment"])
    mine["leased"] = [Assignment.objects.get(pk=lease(second)["assignment"])]
    demonstrate(first, "the first annotator's own ideal answer")
    demonstrate(second, "the second annotator's own ideal answer")

    # A run's base must be weights on this machine: the tiny model's.
    base = PolicyVersionFactory(
        name="base-v0", base_model=tiny_model_path, status=PolicyVersion.Status.ACTIVE
    )
    candidate = PolicyVersionFactory(
        name="candidate-v1", status=PolicyVersion.Status.CANDIDATE, parent=base
    )
    run = training_run_create(kind="reward", base_policy_id=base.pk, created_by=admin)
    return World(
        users={"anonymous": None, "outsider": outsider, "annotator": annotator,
               "researcher": researcher, "admin": admin},
        annotator2=annotator2, researcher2=UserFactory(role=Role.RESEARCHER), round=round_,
        base=base, candidate=candidate,
        deployment=deployment_request(policy_id=candidate.pk, requested_by=admin),
        run=run, snapshot=run.snapshot,
        gate=GateEvaluation.objects.create(
            candidate=candidate, baseline=base, reward_run=run, prompt_count=8, threshold=0.5
        ),
        automation=automation_create(round_=round_, created_by=admin),
        export_job=export_job_create(fmt="trl", file_format="jsonl", filters={},
                                     created_by=researcher),
        held=held, mine=mine,
        webhook=Webhook.objects.create(
            url="https://hooks.example.org/feedback", events=["gate.decided"], secret="whsec_x"
        ),
    )  # fmt: skip


# ---- Calling a route the way each persona would


@dataclass(frozen=True)
class Call:
    status: int
    outcome: str  # ok, login, 401, 403, 404, 405, 5xx, or shape:<status> for a bad error body
    body: bytes


def outcome_of(response: HttpResponse, *, is_page: bool) -> str:
    status = response.status_code
    if status >= 500:
        return "5xx"
    login = reverse(settings.LOGIN_URL) + "?next="
    if is_page and status == 302 and response["Location"].startswith(login):
        return "login"
    if not is_page and status >= 400:
        is_json = response.get("Content-Type", "").startswith("application/json")
        body = response.json() if is_json else None
        if not isinstance(body, dict) or not {"code", "detail", "fields"} <= set(body):
            return f"shape:{status}"
    return str(status) if status in (401, 403, 404, 405) else "ok"


class Caller:
    """A persona's two clients: a token for the API (as a script signs in), a session for pages."""

    def __init__(self, user: Any) -> None:
        self.api = client_for(user)
        self.api.raise_request_exception = False
        self.page = Client(raise_request_exception=False)
        if user is not None:
            self.page.force_login(user)
        self.cookies = self.page.cookies

    def call(self, name: str, method: str, kwargs: dict[str, Any]) -> Call:
        """One request with an empty body, in a savepoint that is rolled back afterwards."""
        route = ROUTES[name]
        converters = resolver_routes()[name].pattern.converters
        url = reverse(name, kwargs={key: kwargs[key] for key in converters})
        with transaction.atomic():
            if route.page:
                self.page.cookies = SimpleCookie(self.cookies)  # signing out is undone too
                response = self.page.generic(method, url, b"", "application/x-www-form-urlencoded")
            else:
                body = b"" if method in ("GET", "DELETE") else b"{}"
                response = self.api.generic(method, url, body, "application/json")
            # Reading a streamed body to its end closes it (the client's wrapper does).
            content = (
                b"".join(response.streaming_content) if response.streaming else response.content
            )
            transaction.set_rollback(True)
        return Call(response.status_code, outcome_of(response, is_page=route.page), content)


def expected(name: str, method: str, persona: str) -> str:
    route = ROUTES[name]
    allowed = route.methods[method]
    if route.page and not allowed:
        return "405"
    if persona in allowed:
        return "ok"
    if persona == "anonymous":
        return "login" if route.page else "401"
    return "403"


def cases() -> Iterator[tuple[str, str]]:
    for name, route in ROUTES.items():
        for method in route.methods:
            yield name, method


# ---- The table matches the resolver


def test_every_route_and_method_has_an_entry_in_the_table():
    served = resolver_routes()
    assert sorted(set(served) - set(ROUTES)) == [], "routes with no entry in ROUTES"
    assert sorted(set(ROUTES) - set(served)) == [], "entries for routes that are gone"
    for name, entry in served.items():
        implemented = api_view_methods(entry)
        if implemented is not None:
            assert set(ROUTES[name].methods) == implemented, name
            assert not ROUTES[name].page, name
        else:
            assert ROUTES[name].page, name


def test_owned_objects_have_unguessable_ids():
    served = resolver_routes()
    for name in OWNED:
        converters = served[name].pattern.converters.values()
        assert converters and all(isinstance(c, UUIDConverter) for c in converters), name


# ---- Every route, every method, every persona


def test_each_route_answers_each_persona_as_its_role_allows(world):
    kwargs = world.url_kwargs()
    wrong = []
    for persona in PERSONAS:
        caller = Caller(world.users[persona])
        for name, method in cases():
            got = caller.call(name, method, kwargs)
            want = expected(name, method, persona)
            # For the note: `pytest -s` prints the observed table.
            print(f"ISOLATION\t{name}\t{method}\t{persona}\t{got.outcome}\t{got.status}")
            if got.outcome != want:
                wrong.append(f"{persona} {method} {name}: {got.outcome} ({got.status}), "
                             f"expected {want}: {got.body[:200]!r}")  # fmt: skip
    assert wrong == []


# ---- Another user's object is a missing one


def assert_indistinguishable(
    client: APIClient, method: str, route: str, kwarg: str, theirs: Any,
    body: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Same status, same body and the same database queries for someone else's id as for an id
    that does not exist: one code path, so no timing tell either."""
    answers = []
    for value in (theirs, uuid.uuid4()):
        url = reverse(route, kwargs={kwarg: value})
        payload = b"" if body is None else json.dumps(body).encode()
        with CaptureQueriesContext(connection) as queries:
            response = client.generic(method, url, payload, "application/json")
        sql = [
            q["sql"].replace(str(value), "?").replace(value.hex, "?")
            for q in queries.captured_queries
        ]
        answers.append((response.status_code, response.json(), sql))
    assert answers[0][0] == 404, answers[0]
    assert answers[0][1] == answers[1][1]
    assert answers[0][2] == answers[1][2]


def body_for(assignment: Assignment) -> dict[str, Any]:
    """A valid judgment body for an assignment's task, built the way its client would."""
    task = assignment.task
    shown = task.slots.order_by("position").values_list("completion_id", flat=True)
    return valid_body(
        {"completions": [{"id": i} for i in shown], "rubric": {"axes": task.round.rubric.axes}}
    )


@pytest.mark.parametrize("state", ["leased", "submitted", "skipped"])
def test_another_annotators_assignment_is_a_404_like_a_missing_one(world, annotator, state):
    """The second annotator's assignment, whether held, judged or skipped, is invisible to the
    first: submit and skip answer exactly as for an id that never existed, and change nothing."""
    theirs = world.mine[state][0]
    before = (theirs.status, Judgment.objects.filter(assignment=theirs).count())
    client = client_for(annotator)
    for route, body in (
        ("api:assignment-submit", body_for(theirs)),
        ("api:assignment-skip", {"reason": "mine now"}),
    ):
        assert_indistinguishable(client, "POST", route, "assignment_id", theirs.pk, body)
    theirs.refresh_from_db()
    assert (theirs.status, Judgment.objects.filter(assignment=theirs).count()) == before
    assert not Judgment.objects.filter(assignment=theirs, annotator=annotator).exists()


def test_another_annotators_judgment_is_a_404_like_a_missing_one(world, annotator):
    """A correction of the second annotator's judgment answers exactly as for an id that never
    existed, changes nothing, and their judgments are not among the first one's."""
    assignment = world.mine["submitted"][0]
    theirs = Judgment.objects.get(assignment=assignment)
    client = client_for(annotator)
    assert_indistinguishable(
        client, "POST", "api:judgment-revise", "judgment_id", theirs.pk, body_for(assignment)
    )
    assert not Judgment.all_versions.filter(superseded_by__isnull=False).exists()
    listed = client.get(reverse("api:my-judgments")).json()
    assert listed and all(j["assignment"] != str(assignment.pk) for j in listed)


def test_another_researchers_export_job_is_a_404_like_a_missing_one(world, admin):
    other, theirs = client_for(world.researcher2), world.export_job.pk
    for route in ("api:export-job-detail", "api:export-job-download"):
        assert_indistinguishable(other, "GET", route, "job_id", theirs)
    listed = other.get(reverse("api:export-job-list")).json()
    assert str(theirs) not in {job["id"] for job in listed}
    detail = reverse("api:export-job-detail", args=[theirs])
    assert client_for(admin).get(detail).status_code == 200


def test_an_annotators_stats_count_only_their_own_work(world, annotator):
    mine = client_for(annotator).get(reverse("api:me-stats")).json()
    theirs = client_for(world.annotator2).get(reverse("api:me-stats")).json()
    assert (mine["judgments_total"], mine["skipped"]) == (2, 0)
    assert (theirs["judgments_total"], theirs["skipped"]) == (1, 1)
    assert Judgment.objects.count() == 3


def test_another_annotators_demonstration_is_never_shown(world, annotator):
    """No route reads a demonstration by id, and the one that edits by id answers another
    author's as missing; the routes that serve prompts to demonstrate show the prompt's
    completions, never what another annotator wrote for it."""
    served = resolver_routes()
    by_id = [n for n, e in served.items() if "demonstration_id" in e.pattern.converters]
    assert by_id == ["api:demonstration-edit"]
    theirs = Demonstration.objects.exclude(author=annotator).get()
    response = client_for(annotator).put(
        reverse("api:demonstration-edit", args=[theirs.pk]), {"text": "overwritten"}, "json"
    )
    assert response.status_code == 404, response.content
    assert theirs.text.encode() not in response.content
    theirs.refresh_from_db()
    assert theirs.text != "overwritten" and theirs.edited_at is None
    mine = client_for(annotator).get(reverse("api:demonstration-last"))
    assert theirs.text.encode() not in mine.content
    for _ in range(3):
        response = client_for(annotator).get(reverse("api:demonstration-next"))
        assert theirs.text.encode() not in response.content
        if response.status_code == 204:
            break
        demonstrate(client_for(annotator), "another of my answers")
    # Writing for a prompt someone else demonstrated tells nothing about it either.
    response = client_for(annotator).post(
        reverse("api:demonstration-create"), {"prompt": theirs.prompt_id, "text": "mine"}, "json"
    )
    assert response.status_code == 201, response.content
    assert set(response.json()) == {"id", "prompt"}


def test_a_demonstration_for_a_prompt_never_offered_is_refused_like_a_missing_one(world, annotator):
    """Annotators are offered prompts of open rounds; any other prompt (never put in a round,
    or in a closed one) is treated as one that does not exist, and nothing is saved."""
    closed = open_round(n=1, k=3, overlap=1)
    closed_prompt = closed.tasks.get().prompt_id
    Round.objects.filter(pk=closed.pk).update(status=Round.Status.CLOSED)
    unused = prompts_with_completions(1, 3)[0].pk
    missing = Prompt.objects.order_by("-id").first().pk + 1000
    answers = []
    for prompt_id in (unused, closed_prompt, missing):
        response = client_for(annotator).post(
            reverse("api:demonstration-create"), {"prompt": prompt_id, "text": "ideal"}, "json"
        )
        answers.append((response.status_code, response.content.replace(b"%d" % prompt_id, b"?")))
    assert answers[0][0] == 400, answers
    assert answers[0] == answers[1] == answers[2]
    assert not Demonstration.objects.filter(prompt_id__in=[unused, closed_prompt]).exists()


def test_researchers_cannot_unmask_annotators_or_cut_training_snapshots(world, researcher):
    """Inside the routes researchers may call, the admin-only options are refused."""
    client = client_for(researcher)
    refused = [
        client.get(reverse("api:export-preferences"), {"pseudonymous": "false"}),
        client.post(reverse("api:export-job-list"), {"pseudonymous": False}, "json"),
        client.post(
            reverse("api:snapshot-list"), {"kind": "export", "pseudonymous": False}, "json"
        ),
        client.post(reverse("api:snapshot-list"), {"kind": "preference"}, "json"),
    ]
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "permission_denied")] * 4
    assert ExportJob.objects.count() == 1 and DatasetSnapshot.objects.count() == 1
    names = {world.users["annotator"].username, world.annotator2.username}
    rows = client.get(reverse("api:quality-annotators")).json()
    assert rows and not [row for row in rows if "username" in row or row["annotator"] in names]
    page = Client()
    page.force_login(researcher)
    for url in (
        reverse("frontend:research"),
        reverse("frontend:research-task", args=[world.mine["submitted"][0].task_id]),
    ):
        html = page.get(url).content.decode()
        assert not [name for name in names if name in html], url
    page.force_login(world.users["admin"])
    assert all(name in page.get(reverse("frontend:research")).content.decode() for name in names)


# ---- Server-owned fields cannot be posted


def test_a_judgment_body_cannot_name_its_owner_or_ids(world, annotator):
    task = lease(client_for(annotator))
    owned = {"id": str(uuid.uuid4()), "annotator": world.annotator2.pk, "task": 1,
             "assignment": str(uuid.uuid4()), "created_at": "2000-01-01T00:00:00Z",
             "body_sha256": "0" * 64, "rubric": 1}  # fmt: skip
    response = client_for(annotator).post(
        submit_url(task["assignment"]), {**valid_body(task), **owned}, format="json"
    )
    assert response.status_code == 400
    assert set(owned) <= set(response.json()["fields"])
    assert not Judgment.objects.filter(assignment_id=task["assignment"]).exists()


def refused_naming(response: HttpResponse, owned: dict[str, Any]) -> None:
    """A 400 whose ``fields`` name each server-owned key sent, and only those, as unknown."""
    assert response.status_code == 400, response.content
    fields = response.json()["fields"]
    assert set(fields) == set(owned), fields
    assert all(reasons[0].startswith("Unknown field; allowed:") for reasons in fields.values())


def test_a_skip_cannot_set_status_or_owner(world, annotator):
    held = world.held
    owned = {"status": "submitted", "annotator": world.annotator2.pk,
             "task": world.mine["leased"][0].task_id}  # fmt: skip
    response = client_for(annotator).post(
        skip_url(held.pk), {"reason": "unclear", **owned}, format="json"
    )
    refused_naming(response, owned)
    held.refresh_from_db()
    assert (held.status, held.annotator_id) == (Assignment.Status.LEASED, annotator.pk)
    assert held.task_id == world.url_kwargs()["task_id"]


def test_a_demonstration_cannot_name_its_author(world, annotator):
    prompt = Prompt.objects.order_by("id").first()
    before = Demonstration.objects.count()
    owned = {"author": world.annotator2.pk, "id": 999_999, "created_at": "2000-01-01T00:00:00Z"}
    response = client_for(annotator).post(
        reverse("api:demonstration-create"),
        {"prompt": prompt.pk, "text": "ideal", **owned},
        format="json",
    )
    refused_naming(response, owned)
    assert Demonstration.objects.count() == before
    assert not Demonstration.objects.filter(pk=999_999).exists()


def test_a_round_cannot_be_opened_with_server_fields(world, admin, researcher):
    rounds = list(Round.objects.values_list("pk", "number", "status", "gold_rate", "k"))
    owned = {"id": 9999, "number": 77, "status": "closed", "created_by": researcher.pk,
             "closed_at": "2000-01-01T00:00:00Z", "gold_count": 5, "progress_done": 9,
             "generation_error": "x"}  # fmt: skip
    response = client_for(admin).post(
        reverse("api:round-list"), {"k": 3, "overlap": 1, "include_used": True, **owned}, "json"
    )
    refused_naming(response, owned)

    owned = {"status": "closed", "k": 9, "overlap": 9, "number": 1}
    response = client_for(admin).patch(
        reverse("api:round-detail", args=[world.round.pk]), {"gold_rate": 0.2, **owned}, "json"
    )
    refused_naming(response, owned)
    # No round opened, and the gold rate sent beside them was not set either.
    assert list(Round.objects.values_list("pk", "number", "status", "gold_rate", "k")) == rounds


def test_an_export_job_cannot_be_posted_done_or_as_someone_else(world, admin, researcher):
    owned = {"id": str(uuid.uuid4()), "status": "succeeded", "created_by": admin.pk, "rows": 5,
             "sha256": "0" * 64, "path": "../../../etc/passwd", "progress_done": 10,
             "size_bytes": 1}  # fmt: skip
    response = client_for(researcher).post(reverse("api:export-job-list"), owned, format="json")
    refused_naming(response, owned)
    assert list(ExportJob.objects.values_list("pk", flat=True)) == [world.export_job.pk]


def test_a_snapshot_cannot_be_posted_with_its_path_or_hash(world, admin, researcher):
    owned = {"path": "/etc", "sha256": "0" * 64, "id": 1, "created_by": admin.pk,
             "manifest": {"rows": {"train": 10**9}}}  # fmt: skip
    response = client_for(researcher).post(
        reverse("api:snapshot-list"), {"kind": "export", **owned}, format="json"
    )
    refused_naming(response, owned)
    assert list(DatasetSnapshot.objects.values_list("pk", flat=True)) == [world.snapshot.pk]


def test_a_training_run_cannot_be_posted_finished(world, admin):
    training_run_cancel(run_id=world.run.pk)  # one active run per base policy
    owned = {"status": "succeeded", "id": 4242, "produced_policy": world.candidate.pk,
             "artifact_path": "/etc", "metrics": {"x": 1}, "provenance": {"git": "forged"},
             "created_by": world.users["researcher"].pk, "progress_step": 5,
             "cancel_requested": True}  # fmt: skip
    response = client_for(admin).post(
        reverse("api:training-run-list"),
        {"kind": "reward", "snapshot": world.snapshot.pk, **owned},
        format="json",
    )
    refused_naming(response, owned)
    # No run, and no snapshot cut for one.
    assert list(TrainingRun.objects.values_list("pk", flat=True)) == [world.run.pk]
    assert DatasetSnapshot.objects.count() == 1


def test_a_deploy_or_gate_request_cannot_set_a_policys_status(world, admin):
    deployments = Deployment.objects.count()
    owned = {"status": "active", "policy_version": world.base.pk, "backend": "evil"}
    response = client_for(admin).post(
        reverse("api:policy-deploy", args=[world.candidate.pk]), owned, format="json"
    )
    refused_naming(response, owned)
    assert Deployment.objects.count() == deployments

    TrainingRun.objects.filter(pk=world.run.pk).update(status="succeeded")
    owned = {"status": "passed", "win_rate": 1.0, "candidate": world.base.pk,
             "baseline": world.candidate.pk}  # fmt: skip
    response = client_for(admin).post(
        reverse("api:policy-gate", args=[world.candidate.pk]), owned, format="json"
    )
    refused_naming(response, owned)
    assert list(GateEvaluation.objects.values_list("pk", flat=True)) == [world.gate.pk]
    statuses = dict(PolicyVersion.objects.values_list("pk", "status"))
    assert (statuses[world.candidate.pk], statuses[world.base.pk]) == ("candidate", "active")


def test_an_automation_cannot_be_posted_finished(world, admin):
    other = open_round(n=2, k=3, overlap=1)
    owned = {"stage": "done", "history": [], "stop_requested": True, "round": world.round.pk,
             "snapshot": world.snapshot.pk, "policy_run": world.run.pk, "error": "x",
             "webhook": "http://example.invalid/hook"}  # fmt: skip
    response = client_for(admin).post(
        reverse("api:round-automation", args=[other.pk]), owned, format="json"
    )
    refused_naming(response, owned)
    assert not Automation.objects.filter(round=other).exists()
    assert Automation.objects.get().stage == world.automation.stage


def test_gold_cannot_set_a_tasks_counts(world, admin):
    task = world.held.task
    ids = list(task.slots.order_by("position").values_list("completion_id", flat=True))
    owned = {"judgments": 99, "submitted_count": 99, "round": 9}
    response = client_for(admin).put(
        reverse("api:task-gold", args=[task.pk]),
        {"ranking": [[i] for i in ids], **owned},
        format="json",
    )
    refused_naming(response, owned)
    before = task.submitted_count
    task.refresh_from_db()
    assert (task.submitted_count, task.round_id) == (before, world.round.pk)
    # The ranking sent beside them was not made gold either.
    assert not task.is_gold
