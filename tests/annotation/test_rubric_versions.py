"""Rubric versions through the API, as an admin makes one and annotators answer under it: a new
version never changes an old one, a round keeps the version it was opened with, every judgment
is checked against its own round's version, and exports keep the versions apart."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from django.test import Client

from annotation.models import Judgment, Rubric
from feedback.models import AuditEvent

from ..factories import prompts_with_completions
from .helpers import lease, submit_url

pytestmark = pytest.mark.django_db
RUBRICS = "/api/v1/rubrics/"


def _v2_from(v1: dict[str, Any]) -> dict[str, Any]:
    """The newest version's definition with a five-point helpfulness scale and a new axis."""
    body = {key: copy.deepcopy(v1[key]) for key in ("name", "axes", "flags", "strength_labels")}
    body["guidelines"] = v1["guidelines"] + "\nRate conciseness too."
    helpful = body["axes"][0]
    helpful["max"] = 5
    helpful["guidelines"] = {str(s): f"Helpful, level {s}." for s in range(1, 6)}
    body["axes"].append(
        {
            "key": "concise",
            "label": "Concise",
            "question": "Is it as short as it can be?",
            "min": 1,
            "max": 3,
            "guidelines": {"1": "Rambles.", "2": "Some padding.", "3": "Nothing to cut."},
        }
    )
    body["flags"].append({"key": "off_topic", "label": "Answers another question"})
    return body


def _body(task: dict[str, Any], score: dict[str, int]) -> dict[str, Any]:
    ids = [c["id"] for c in task["completions"]]
    return {
        "ranking": [[cid] for cid in ids],
        "scores": {str(cid): dict(score) for cid in ids},
        "strength": "better",
        "flags": [],
        "time_spent_ms": 900,
    }


def _open_round(client: Any, rubric_id: int | None) -> dict[str, Any]:
    prompts_with_completions(2, 3)
    body = {"k": 3, "overlap": 1} | ({"rubric": rubric_id} if rubric_id else {})
    response = client.post("/api/v1/rounds/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["round"]


def test_a_new_version_leaves_the_old_and_each_round_judges_under_its_own(
    api, admin, annotator, researcher
):
    admin_client, annotator_client = api(admin), api(annotator)
    old_round = _open_round(admin_client, None)
    v1 = admin_client.get(RUBRICS).json()[0]
    assert (v1["label"], v1["rounds"]) == ("3H@1", [old_round["number"]])

    created = admin_client.post(RUBRICS, _v2_from(v1), format="json")
    assert created.status_code == 201, created.content
    v2 = created.json()
    assert (v2["label"], v2["version"], v2["rounds"]) == ("3H@2", 2, [])
    assert [axis["key"] for axis in v2["axes"]] == ["helpful", "honest", "harmless", "concise"]
    assert "Rate conciseness too." in v2["guidelines_html"]
    assert Rubric.objects.get(name="3H", version=1).axes == v1["axes"]  # never rewritten
    assert AuditEvent.objects.filter(actor=admin, action="api:rubric-list").exists()
    assert api(researcher).get(f"{RUBRICS}{v2['id']}/").json()["label"] == "3H@2"

    new_round = _open_round(admin_client, v2["id"])
    assert new_round["rubric"] == "3H@2"
    v1_score = {"helpful": 7, "honest": 6, "harmless": 7}
    v2_score = {"helpful": 5, "honest": 6, "harmless": 7, "concise": 3}

    # Tasks come oldest round first: the old round's, under 3H@1, refuses a 3H@2 answer.
    task = lease(annotator_client)
    assert task["rubric"]["label"] == "3H@1"
    refused = annotator_client.post(
        submit_url(task["assignment"]), _body(task, v2_score), format="json"
    )
    assert refused.status_code == 400
    first = str(task["completions"][0]["id"])
    assert refused.json()["fields"][f"scores.{first}.concise"] == [
        "Unknown axis; this rubric has helpful, honest, harmless."
    ]
    ok = annotator_client.post(submit_url(task["assignment"]), _body(task, v1_score), format="json")
    assert ok.status_code == 200, ok.content
    task = lease(annotator_client)
    assert task["rubric"]["label"] == "3H@1"
    assert (
        annotator_client.post(
            submit_url(task["assignment"]), _body(task, v1_score), format="json"
        ).status_code
        == 200
    )

    # The new round's tasks are judged under 3H@2: a 7 on a five-point scale and a missing axis
    # are refused, as is the old answer shape.
    task = lease(annotator_client)
    assert task["rubric"]["label"] == "3H@2"
    assert task["rubric"]["axes"][0]["max"] == 5
    refused = annotator_client.post(
        submit_url(task["assignment"]), _body(task, v1_score), format="json"
    )
    fields = refused.json()["fields"]
    first = str(task["completions"][0]["id"])
    assert fields[f"scores.{first}.helpful"] == ["Must be an integer from 1 to 5, got 7."]
    assert fields[f"scores.{first}.concise"] == ["Missing."]
    answer = _body(task, v2_score) | {"flags": ["off_topic"]}
    ok = annotator_client.post(submit_url(task["assignment"]), answer, format="json")
    assert ok.status_code == 200, ok.content

    judged = dict(Judgment.objects.values_list("rubric__version", "task__round__number"))
    assert judged == {1: old_round["number"], 2: new_round["number"]}

    # Exports keep versions apart: a filter by version, and the version on every row.
    researcher_client = api(researcher)
    raw = researcher_client.get(
        "/api/v1/exports/preferences/", {"format": "judgments", "rubric": "3H@2"}
    )
    assert raw.status_code == 200, raw.content
    rows = [json.loads(line) for line in b"".join(raw.streaming_content).splitlines()]
    assert len(rows) == 1
    assert rows[0]["rubric"] == "3H@2"
    everything = researcher_client.get("/api/v1/exports/preferences/", {"format": "judgments"})
    labels = sorted(
        json.loads(line)["rubric"] for line in b"".join(everything.streaming_content).splitlines()
    )
    assert labels == ["3H@1", "3H@1", "3H@2"]

    # The dashboard's score histograms: an axis per version, each on its own scale.
    browser = Client()
    browser.force_login(researcher)
    page = browser.get("/research/").content.decode()
    assert "Helpful (3H@1) <span" in page and "Concise (3H@2) <span" in page
    assert 'aria-label="Histogram of Helpful (3H@2) scores' in page
    # 3H@2's helpful scale has five points: a 5 was given once per completion, nothing above.
    assert (
        '<th scope="row">Helpful (3H@2)</th><td>0</td><td>0</td><td>0</td><td>0</td><td>3</td><td></td><td></td></tr>'
        in page
    )


def _definition(api: Any, admin: Any) -> dict[str, Any]:
    v1 = api(admin).get(RUBRICS).json()[0]
    return {key: copy.deepcopy(v1[key]) for key in ("name", "axes", "flags", "strength_labels")}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            lambda d: d["axes"][0]["guidelines"].pop("3"),
            "axes.0.guidelines.3",
            "Missing: every score of the scale needs its description.",
        ),
        (
            lambda d: d["axes"][1].update(key="helpful"),
            "axes.1.key",
            "'helpful' is used twice; keys must be unique.",
        ),
        (
            lambda d: d["axes"][0].update(max=40),
            "axes.0.max",
            "The scale must run from min (0 or more) over 2 to 11 points; got 1 to 40.",
        ),
        (
            lambda d: d["axes"][0].update(min="1"),
            "axes.0.min",
            "Must be an integer, got a string.",
        ),
        (
            lambda d: d["strength_labels"][3].update(margin=2),
            "strength_labels.3.margin",
            "Strongest first: 2 is more than the margin before it (0.3333).",
        ),
        (lambda d: d.update(axes=[]), "axes", "Must have 1 to 8 entries, got 0."),
        (lambda d: d["flags"][0].update(key="Not A Key"), "flags.0.key", None),
        (lambda d: d.update(name=""), "name", None),
        (lambda d: d.update(colour="blue"), "colour", None),
        (lambda d: d.update(guidelines="a\x00b"), "guidelines", "Must not contain NUL characters."),
    ],
)
def test_a_bad_definition_is_a_400_naming_the_field(api, admin, change, field, reason):
    body = _definition(api, admin)
    change(body)
    response = api(admin).post(RUBRICS, body, format="json")
    assert response.status_code == 400, response.content
    fields = response.json()["fields"]
    assert field in fields, fields
    if reason:
        assert fields[field] == [reason]
    assert Rubric.objects.count() == 1  # nothing half-made


def test_only_admins_make_versions_and_a_new_name_starts_at_one(api, admin, annotator):
    body = _definition(api, admin)
    assert api(annotator).post(RUBRICS, body, format="json").status_code == 403
    assert api(None).get(RUBRICS).status_code == 401
    assert api(annotator).get(RUBRICS).status_code == 200
    assert api(admin).get(f"{RUBRICS}999999/").status_code == 404
    body["name"] = "Safety review"
    made = api(admin).post(RUBRICS, body, format="json").json()
    assert made["label"] == "Safety review@1"
    again = api(admin).post(RUBRICS, body, format="json").json()
    assert again["label"] == "Safety review@2"
