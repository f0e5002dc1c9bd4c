"""'None of these is acceptable' (issue 20, point 4), through the API as a client meets it: the
outcome stored with the ranking (and the rubric flag that says the same); the pair formats
leaving it out unless asked, on PostgreSQL's SQL path and on the Python path alike; KTO
labelling every answer undesirable; a task's consensus; the prompt offered for a demonstration
first, and after its round has closed; snapshots; and bad values named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from annotation.exports import export_filters_parse, sql
from annotation.models import ComparisonTask, Judgment
from feedback.platform.roles import Role

from ..factories import open_round
from .helpers import in_task_order, lease, submit_url, valid_body

pytestmark = pytest.mark.django_db

EXPORT = "/api/v1/exports/preferences/"
NEXT_DEMO = "/api/v1/demonstrations/next/"
PAIR_FORMATS = ("trl", "trl_implicit", "hh_rlhf")


class Judged:
    """One annotator judged the three tasks of a round (overlap 1, K = 3): none of the answers
    of the task with the newest prompt was acceptable, so that prompt is not first by id."""

    def __init__(self, api: Any, annotator: Any) -> None:
        self.round = open_round(n=3, k=3, overlap=1)
        self.client = api(annotator)
        self.bad_task = max(ComparisonTask.objects.all(), key=lambda t: t.prompt_id)
        self.judgments: dict[int, dict[str, Any]] = {}
        while (task := lease(self.client)) is not None:
            body = valid_body(task)
            if task["task"] == self.bad_task.pk:
                body["none_acceptable"] = True
            response = self.client.post(submit_url(task["assignment"]), body, format="json")
            assert response.status_code == 200, response.content
            self.judgments[task["task"]] = response.json()
        assert len(self.judgments) == 3

    @property
    def bad(self) -> dict[str, Any]:
        return self.judgments[self.bad_task.pk]


@pytest.fixture
def judged(api, annotator) -> Judged:
    return Judged(api, annotator)


def _lines(client: Any, **params: Any) -> list[dict[str, Any]]:
    response = client.get(EXPORT, params)
    assert response.status_code == 200, response.content
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def _on_both_paths(
    client: Any, monkeypatch: pytest.MonkeyPatch, **params: Any
) -> list[dict[str, Any]]:
    """The export as the API streams it, on PostgreSQL built by the database (a pair format),
    then on the Python path: the same bytes."""
    response = client.get(EXPORT, params)
    assert response.status_code == 200, response.content
    built = b"".join(response.streaming_content)
    monkeypatch.setattr(sql, "ENABLED", False)
    python = b"".join(client.get(EXPORT, params).streaming_content)
    monkeypatch.setattr(sql, "ENABLED", True)
    assert built == python, params
    return [json.loads(line) for line in python.splitlines()]


def test_the_outcome_is_stored_with_the_ranking_and_a_bad_value_is_named(api, annotator):
    open_round(n=1, k=3)
    client = api(annotator)
    task = lease(client)
    url = submit_url(task["assignment"])
    for value, described in (("yes", "a string"), (None, "null"), (1, "an integer")):
        response = client.post(url, {**valid_body(task), "none_acceptable": value}, format="json")
        assert response.status_code == 400, response.content
        assert response.json()["fields"] == {
            "none_acceptable": [f"Must be true or false, got {described}."]
        }
    # Without a ranking it is still refused: the order among bad answers is still asked for.
    unranked = {**valid_body(task), "none_acceptable": True}
    del unranked["ranking"]
    response = client.post(url, unranked, format="json")
    assert response.status_code == 400 and "ranking" in response.json()["fields"]

    body = {**valid_body(task), "none_acceptable": True}
    stored = client.post(url, body, format="json")
    assert stored.status_code == 200, stored.content
    # The rubric flag that says the same is raised with it.
    assert stored.json()["none_acceptable"] is True and stored.json()["flags"] == ["all_bad"]
    judgment = Judgment.objects.get()
    assert judgment.none_acceptable and judgment.strength == "better"
    # The same statement again, either way it is said, is the same judgment; another is a 409.
    assert client.post(url, body, format="json").json()["id"] == str(judgment.pk)
    flagged = {**valid_body(task), "flags": ["all_bad"]}
    assert client.post(url, flagged, format="json").json()["id"] == str(judgment.pk)
    acceptable = client.post(url, {**body, "none_acceptable": False}, format="json")
    assert acceptable.status_code == 409 and Judgment.objects.count() == 1


def test_pair_formats_leave_it_out_unless_asked_on_both_paths(judged, api, researcher, monkeypatch):
    client = api(researcher)
    bad = judged.bad["id"]
    asked = export_filters_parse({"include_none_acceptable": True})
    for fmt in PAIR_FORMATS:
        # On PostgreSQL the database builds these lines, asked for the outcome or not.
        assert sql.sql_applies(fmt=fmt, filters=asked) == (connection.vendor == "postgresql")
        default = _on_both_paths(client, monkeypatch, format=fmt)
        assert len(default) == 2 * 3 and bad not in {row["judgment_id"] for row in default}
        assert all("none_acceptable" not in row for row in default)  # the columns as before
        every = _on_both_paths(client, monkeypatch, format=fmt, include_none_acceptable="true")
        assert len(every) == 3 * 3
        # Its ordering is there (C(3, 2) pairs), each row telling it apart.
        assert {row["judgment_id"] for row in every if row["none_acceptable"]} == {bad}
        assert sum(row["none_acceptable"] for row in every) == 3
        # The rows of the others are the default export's, plus the column.
        others = [{k: v for k, v in row.items() if k != "none_acceptable"}
                  for row in every if not row["none_acceptable"]]  # fmt: skip
        assert others == default

    ratings = _lines(client, format="ultrafeedback")
    assert sorted(row["judgment_id"] for row in ratings) == sorted(
        j["id"] for j in judged.judgments.values() if j["id"] != bad
    )
    ratings = _lines(client, format="ultrafeedback", include_none_acceptable="true")
    assert {row["judgment_id"]: row["none_acceptable"] for row in ratings}[bad] is True
    assert len(ratings) == 3


def test_kto_labels_every_answer_undesirable_and_raw_judgments_carry_it(judged, api, researcher):
    client = api(researcher)
    rows = _lines(client, format="kto")
    bad = judged.bad
    theirs = [row for row in rows if row["judgment_ids"] == [bad["id"]]]
    ranked = [cid for group in bad["ranking"] for cid in group]
    assert [(row["completion_id"], row["label"]) for row in theirs] == [
        (cid, False) for cid in ranked
    ]
    for judgment in judged.judgments.values():
        if judgment["id"] == bad["id"]:
            continue
        labels = {row["completion_id"]: row["label"] for row in rows
                  if row["judgment_ids"] == [judgment["id"]]}  # fmt: skip
        best, worst = judgment["ranking"][0], judgment["ranking"][-1]
        assert labels == {**dict.fromkeys(best, True), **dict.fromkeys(worst, False)}

    raw = _lines(client, format="judgments")
    assert {row["judgment_id"]: row["none_acceptable"] for row in raw} == {
        j["id"]: j["id"] == bad["id"] for j in judged.judgments.values()
    }


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"include_none_acceptable": "maybe"},
         {"include_none_acceptable": ["Must be true or false, got 'maybe'."]}),
        ({"format": "kto", "include_none_acceptable": "true"},
         {"include_none_acceptable": ["Does not apply to the kto format."]}),
        ({"format": "judgments", "include_none_acceptable": "true"},
         {"include_none_acceptable": ["Does not apply to the judgments format."]}),
    ],
)  # fmt: skip
def test_a_bad_filter_value_is_a_400_naming_it(api, researcher, params, fields):
    response = api(researcher).get(EXPORT, params)
    assert response.status_code == 400, response.content
    assert response.json()["fields"] == fields


def test_a_consensus_follows_at_least_half_of_its_annotators(api, make_user, researcher):
    open_round(n=1, k=3, overlap=3)
    people = [api(make_user(Role.ANNOTATOR, username=f"judge{i}")) for i in range(3)]
    judgments = []
    for i, client in enumerate(people):
        task = in_task_order(lease(client))
        body = {**valid_body(task), "none_acceptable": i == 0}
        response = client.post(submit_url(task["assignment"]), body, format="json")
        assert response.status_code == 200, response.content
        judgments.append(response.json())
    reader = api(researcher)
    consensus = {"consensus": "bradley_terry"}

    # One of three found nothing acceptable: the task's consensus stands, from all three.
    pairs = _lines(reader, format="trl", **consensus)
    assert len(pairs) == 3 and all(row["judgments"] == 3 for row in pairs)
    labels = [row["label"] for row in _lines(reader, format="kto", **consensus)]
    assert sorted(labels) == [False, True]

    # A second one corrects their judgment to say so: two of three, and the task has no
    # acceptable answer.
    keys = ("ranking", "scores", "strength", "flags", "rationale", "time_spent_ms")
    body = {**{key: judgments[1][key] for key in keys}, "none_acceptable": True}
    revised = people[1].post(f"/api/v1/judgments/{judgments[1]['id']}/revise/", body,
                             format="json")  # fmt: skip
    assert revised.status_code == 200 and revised.json()["none_acceptable"] is True
    assert _lines(reader, format="trl", **consensus) == []
    asked = _lines(reader, format="trl", include_none_acceptable="true", **consensus)
    assert len(asked) == 3 and all(row["none_acceptable"] for row in asked)
    kto = _lines(reader, format="kto", **consensus)
    assert len(kto) == 3 and not any(row["label"] for row in kto)


def test_the_prompt_goes_first_to_the_demonstration_queue(judged, api, make_user, admin):
    bad_prompt = judged.bad_task.prompt_id
    writer, other = (api(make_user(Role.ANNOTATOR, username=name)) for name in ("w1", "w2"))
    offered = writer.get(NEXT_DEMO)
    assert offered.status_code == 200 and offered.json()["prompt"] == bad_prompt
    # Without it, prompts go by id: the bad prompt is the newest.
    assert bad_prompt == max(t.prompt_id for t in ComparisonTask.objects.all())
    saved = writer.post("/api/v1/demonstrations/", {"prompt": bad_prompt, "text": "A good one."},
                        format="json")  # fmt: skip
    assert saved.status_code == 201, saved.content
    # Once it has a demonstration it waits its turn as any prompt does (least covered first).
    assert writer.get(NEXT_DEMO).json()["prompt"] != bad_prompt
    assert other.get(NEXT_DEMO).json()["prompt"] != bad_prompt

    # After its round has closed, it is still offered (and only it), to whoever has not
    # written one for it yet.
    closed = api(admin).post(f"/api/v1/rounds/{judged.round.pk}/close/", format="json")
    assert closed.status_code == 200, closed.content
    late = other.get(NEXT_DEMO)
    assert late.status_code == 200 and late.json()["prompt"] == bad_prompt
    assert late.json()["rubric"]["label"] == judged.round.rubric.label
    assert writer.get(NEXT_DEMO).status_code == 204


def test_snapshots_take_the_same_choice(judged, api, admin):
    client = api(admin)

    def preference(**options: Any) -> list[dict[str, Any]]:
        body = {"kind": "preference", "consensus": "none", "eval_fraction": 0, **options}
        response = client.post("/api/v1/snapshots/", body, format="json")
        assert response.status_code == 201, response.content
        folder = Path(settings.ARTIFACTS_DIR) / response.json()["path"]
        assert response.json()["filters"]["include_none_acceptable"] == bool(options)
        return [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]

    assert len(preference()) == 2 * 3
    assert len(preference(include_none_acceptable=True)) == 3 * 3
    frozen = client.post(
        "/api/v1/snapshots/",
        {"kind": "export", "format": "trl", "filters": {"include_none_acceptable": True}},
        format="json",
    )
    assert frozen.status_code == 201, frozen.content
    assert frozen.json()["manifest"]["rows"]["train"] == 3 * 3
    refused = client.post(
        "/api/v1/snapshots/", {"kind": "kto", "include_none_acceptable": True}, format="json"
    )
    assert refused.status_code == 400 and list(refused.json()["fields"]) == [
        "include_none_acceptable"
    ]
    # SFT from the top-ranked answers: never the best of answers none of which is acceptable.
    sft = client.post(
        "/api/v1/snapshots/",
        {"kind": "sft", "top_ranked": True, "eval_fraction": 0},
        format="json",
    )
    assert sft.status_code == 201, sft.content
    assert sft.json()["manifest"]["rows"]["train"] == 2
