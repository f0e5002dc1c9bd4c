"""Submitting judgments: every validation rule with its exact 4xx body, idempotency, the 409 for a
different body, the 404 for another annotator's assignment, and late submits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, ComparisonTask, Judgment

from ..factories import open_round
from .helpers import lease, submit_url, valid_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def leased(api, annotator):
    open_round(n=2, k=3, overlap=1)
    client = api(annotator)
    return client, lease(client)


def post(client, task, body):
    return client.post(submit_url(task["assignment"]), body, format="json")


def fields_of(response):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    return body["fields"]


def test_valid_submit_stores_exactly_what_was_sent(leased, annotator):
    client, task = leased
    body = valid_body(task, tie_last=True)
    body["strength"] = "significantly_better"
    body["flags"] = ["pii", "unsafe"]
    response = post(client, task, body)
    assert response.status_code == 200
    judgment = Judgment.objects.get()
    assert response.json()["id"] == str(judgment.pk)
    assert judgment.ranking == body["ranking"]
    assert judgment.scores == body["scores"]
    assert judgment.strength == "significantly_better"
    assert judgment.flags == ["pii", "unsafe"]
    assert judgment.time_spent_ms == 1234
    assert judgment.rubric.label == "3H@1"
    assert judgment.annotator == annotator
    assert Assignment.objects.get().status == "submitted"
    task_row = ComparisonTask.objects.get(pk=task["task"])
    assert (task_row.submitted_count, task_row.leased_count) == (1, 0)


def test_same_body_twice_is_one_judgment_and_the_same_response(leased):
    client, task = leased
    first = post(client, task, valid_body(task))
    second = post(client, task, valid_body(task))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert Judgment.objects.count() == 1


def test_a_different_body_after_submit_is_409_naming_the_judgment(leased):
    client, task = leased
    first = post(client, task, valid_body(task))
    changed = valid_body(task)
    changed["rationale"] = "changed my mind"
    response = post(client, task, changed)
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert response.json()["judgment"] == first.json()["id"]
    assert first.json()["id"] in response.json()["detail"]
    assert Judgment.objects.get().rationale == "first is clearly right"


def test_another_annotators_assignment_is_404(leased, api, annotator2):
    _, task = leased
    response = post(api(annotator2), task, valid_body(task))
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "No such assignment.", "fields": {}}
    assert api(annotator2).post("/api/v1/assignments/not-a-uuid/submit/", {}).status_code == 404


def test_outsider_and_anonymous_cannot_submit(leased, api, outsider):
    _, task = leased
    assert post(api(outsider), task, valid_body(task)).status_code == 403
    response = post(api(None), task, valid_body(task))
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda b, ids: b.update(extra=1),
            {
                "extra": [
                    "Unknown field; allowed: ranking, scores, strength, flags, rationale, time_spent_ms, none_acceptable."
                ]
            },
        ),
        (lambda b, ids: b.pop("ranking"), {"ranking": ["This field is required."]}),
        (lambda b, ids: b.pop("scores"), {"scores": ["This field is required."]}),
        (lambda b, ids: b.pop("time_spent_ms"), {"time_spent_ms": ["This field is required."]}),
        (
            lambda b, ids: b.update(ranking=[]),
            {"ranking": ["Must be a non-empty list of groups of completion ids, best first."]},
        ),
        (
            lambda b, ids: b.update(ranking=[ids[0], ids[1], ids[2]]),
            {
                f"ranking.{i}": [
                    "Must be a non-empty list of completion ids (a tie if several), got an integer."
                ]
                for i in range(3)
            },
        ),
        (
            lambda b, ids: b.update(ranking=[[ids[0]], [ids[1]]]),
            {"ranking": ["Every completion must be ranked; missing: [{2}]."]},
        ),
        (
            lambda b, ids: b.update(ranking=[[ids[0]], [ids[1]], [ids[2], ids[0]]]),
            {"ranking.2.1": ["Completion {0} is ranked more than once."]},
        ),
        (
            lambda b, ids: b.update(ranking=[[ids[0]], [ids[1]], [ids[2]], [99999]]),
            {"ranking.3.0": ["99999 is not a completion of this task."]},
        ),
        (
            lambda b, ids: b.update(ranking=[[ids[0]], [str(ids[1])], [ids[2]]]),
            {"ranking.1.0": ["Must be an integer completion id, got a string."]},
        ),
        (
            lambda b, ids: b.update(ranking=[[ids[0]], [True], [ids[2]]]),
            {"ranking.1.0": ["Must be an integer completion id, got a boolean."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(helpful="5"),
            {"scores.{0}.helpful": ["Must be an integer from 1 to 7, got a string."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(helpful=5.0),
            {"scores.{0}.helpful": ["Must be an integer from 1 to 7, got a float."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(helpful=5.5),
            {
                "scores.{0}.helpful": [
                    "Must be an integer from 1 to 7, got a number with a fraction part."
                ]
            },
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(helpful=True),
            {"scores.{0}.helpful": ["Must be an integer from 1 to 7, got a boolean."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(helpful=None),
            {"scores.{0}.helpful": ["Must be an integer from 1 to 7, got null."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(helpful=0),
            {"scores.{0}.helpful": ["Must be an integer from 1 to 7, got 0."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(helpful=8),
            {"scores.{0}.helpful": ["Must be an integer from 1 to 7, got 8."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].pop("honest"),
            {"scores.{0}.honest": ["Missing."]},
        ),
        (
            lambda b, ids: b["scores"][str(ids[0])].update(funny=3),
            {"scores.{0}.funny": ["Unknown axis; this rubric has helpful, honest, harmless."]},
        ),
        (
            lambda b, ids: b["scores"].pop(str(ids[1])),
            {"scores.{1}": ["Missing: every completion needs a score on every axis."]},
        ),
        (
            lambda b, ids: b["scores"].update({"4242": {}}),
            {"scores.4242": ["4242 is not a completion of this task."]},
        ),
        (
            lambda b, ids: b.update(scores=[1, 2]),
            {"scores": ["Must be an object keyed by completion id, got a list."]},
        ),
        (
            lambda b, ids: b["scores"].update({str(ids[2]): 7}),
            {"scores.{2}": ["Must be an object of axis scores, got an integer."]},
        ),
        (
            lambda b, ids: b.update(strength="way_better"),
            {
                "strength": [
                    "Must be one of: significantly_better, better, slightly_better, negligibly_better."
                ]
            },
        ),
        (
            lambda b, ids: b.pop("strength"),
            {
                "strength": [
                    "Required when one completion is ranked best: how much better is it than the next? One of: significantly_better, better, slightly_better, negligibly_better."
                ]
            },
        ),
        (
            lambda b, ids: b.update(ranking=[[ids[0], ids[1]], [ids[2]]]),
            {"strength": ["Must be empty when the best completions are tied."]},
        ),
        (
            lambda b, ids: b.update(flags=["nope"]),
            {"flags.0": ["Must be one of: unsafe, pii, gibberish, prompt_issue, all_bad."]},
        ),
        (lambda b, ids: b.update(flags=["pii", "pii"]), {"flags.1": ["pii is listed twice."]}),
        (
            lambda b, ids: b.update(flags="pii"),
            {"flags": ["Must be a list of flag keys, got a string."]},
        ),
        (
            lambda b, ids: b.update(rationale="x" * 5001),
            {"rationale": ["At most 5000 characters, got 5001."]},
        ),
        (
            lambda b, ids: b.update(rationale=7),
            {"rationale": ["Must be a string, got an integer."]},
        ),
        (
            lambda b, ids: b.update(rationale="a\x00b"),
            {"rationale": ["Must not contain NUL characters."]},
        ),
        (
            lambda b, ids: b.update(time_spent_ms="12"),
            {
                "time_spent_ms": [
                    "Must be an integer number of milliseconds from 0 to 86400000, got a string."
                ]
            },
        ),
        (
            lambda b, ids: b.update(time_spent_ms=-1),
            {
                "time_spent_ms": [
                    "Must be an integer number of milliseconds from 0 to 86400000, got -1."
                ]
            },
        ),
    ],
)
def test_each_validation_rule_names_the_field_and_reason(leased, mutate, expected):
    client, task = leased
    ids = [c["id"] for c in task["completions"]]
    body = valid_body(task)
    mutate(body, ids)

    def fill(text):
        return text.format(*ids)

    expected = {
        fill(key): [fill(reason) for reason in reasons] for key, reasons in expected.items()
    }
    assert fields_of(post(client, task, body)) == expected
    assert Judgment.objects.count() == 0
    assert Assignment.objects.get().status == "leased"


def test_body_that_is_not_an_object(leased):
    client, task = leased
    assert fields_of(post(client, task, [1, 2])) == {"body": ["Must be a JSON object, got a list."]}


def test_malformed_json_and_nan_are_400(leased):
    client, task = leased
    url = submit_url(task["assignment"])
    for raw in ("{not json", '{"time_spent_ms": NaN}'):
        response = client.post(url, raw, content_type="application/json")
        assert response.status_code == 400
        assert response.json()["code"] == "parse_error"


def test_tie_at_the_top_needs_no_strength(leased):
    client, task = leased
    ids = [c["id"] for c in task["completions"]]
    body = valid_body(task)
    body["ranking"] = [[ids[0], ids[1]], [ids[2]]]
    body.pop("strength")
    assert post(client, task, body).status_code == 200
    assert Judgment.objects.get().strength == ""


def expire(task):
    past = timezone.now() - timedelta(seconds=1)
    Assignment.objects.filter(pk=task["assignment"]).update(lease_expires_at=past)
    ComparisonTask.objects.filter(pk=task["task"]).update(leases_expire_at=past)


def test_late_submit_is_accepted_while_the_slot_is_free(leased):
    client, task = leased
    expire(task)
    response = post(client, task, valid_body(task))
    assert response.status_code == 200
    row = ComparisonTask.objects.get(pk=task["task"])
    assert (row.submitted_count, row.leased_count) == (1, 0)


def test_late_submit_after_the_slot_was_taken_is_a_409_not_a_silent_drop(leased, api, annotator2):
    client, task = leased
    ComparisonTask.objects.exclude(pk=task["task"]).delete()
    expire(task)
    other = lease(api(annotator2))
    assert other["task"] == task["task"]
    response = post(client, task, valid_body(task))
    assert response.status_code == 409
    assert response.json()["code"] == "lease_expired"
    assert post(api(annotator2), other, valid_body(other)).status_code == 200
    assert Judgment.objects.count() == 1


def test_submit_after_skip_is_409(leased):
    client, task = leased
    client.post(
        f"/api/v1/assignments/{task['assignment']}/skip/", {"reason": "unsure"}, format="json"
    )
    response = post(client, task, valid_body(task))
    assert response.status_code == 409
    assert response.json()["code"] == "skipped"
