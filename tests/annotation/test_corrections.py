"""Corrections (issue 20, point 5), through the API as an annotator's client makes them: a
submitted judgment revised while its round is open; the earlier one kept as it was, marked
superseded and audited; exports (a pair format and the raw judgments, on the Python path and on
PostgreSQL's SQL path) and snapshots holding the correction only; the errors a client sees;
idempotency; a closed round refusing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from annotation.exports import ExportFilters, sql
from annotation.models import Assignment, ComparisonTask, Judgment
from feedback.models import AuditEvent

from ..factories import open_round
from ..racing import race
from .helpers import lease, submit_url, valid_body

pytestmark = pytest.mark.django_db

EXPORT = "/api/v1/exports/preferences/"
MINE = "/api/v1/me/judgments/"


def revise_url(judgment_id: str) -> str:
    return f"/api/v1/judgments/{judgment_id}/revise/"


def reversed_body(task: dict[str, Any]) -> dict[str, Any]:
    """The annotator changed their mind: the order they were shown, worst first."""
    body = valid_body(task)
    ids = [c["id"] for c in task["completions"]][::-1]
    axes = [axis["key"] for axis in task["rubric"]["axes"]]
    body["ranking"] = [[cid] for cid in ids]
    body["scores"] = {str(cid): dict.fromkeys(axes, 7 - i) for i, cid in enumerate(ids)}
    body["strength"] = "slightly_better"
    body["rationale"] = "on second reading the last one is right"
    body["time_spent_ms"] = 4321
    return body


class Judged:
    """An annotator who judged both tasks of a round (overlap 1, K = 3)."""

    def __init__(self, api: Any, annotator: Any) -> None:
        self.round = open_round(n=2, k=3, overlap=1)
        self.client = api(annotator)
        self.tasks: list[dict[str, Any]] = []
        self.judgments: list[dict[str, Any]] = []
        while (task := lease(self.client)) is not None:
            response = self.client.post(
                submit_url(task["assignment"]), valid_body(task), format="json"
            )
            assert response.status_code == 200, response.content
            self.tasks.append(task)
            self.judgments.append(response.json())
        assert len(self.tasks) == 2

    def revise(self, judgment_id: str, body: dict[str, Any], client: Any = None) -> Any:
        return (client or self.client).post(revise_url(judgment_id), body, format="json")


@pytest.fixture
def judged(api, annotator) -> Judged:
    return Judged(api, annotator)


def _stored(pk: str) -> dict[str, Any]:
    """Every column of a judgment's row, superseded or not."""
    return Judgment.all_versions.filter(pk=pk).values().get()


def test_a_correction_supersedes_the_judgment_which_is_kept_as_it_was(
    judged, api, annotator, admin
):
    task, first = judged.tasks[0], judged.judgments[0]
    before = _stored(first["id"])
    counters = ComparisonTask.objects.filter(pk=task["task"]).values_list(
        "submitted_count", "leased_count"
    )
    assert counters.get() == (1, 0)

    body = reversed_body(task)
    response = judged.revise(first["id"], body)
    assert response.status_code == 200, response.content
    revised = response.json()
    assert revised["id"] != first["id"] and revised["supersedes"] == first["id"]
    assert (revised["assignment"], revised["task"]) == (first["assignment"], first["task"])
    assert revised["ranking"] == body["ranking"] and revised["scores"] == body["scores"]
    assert (revised["strength"], revised["rationale"]) == ("slightly_better", body["rationale"])
    assert revised["rubric"] == first["rubric"] == "3H@1"
    assert revised["display_order"] == first["display_order"]

    # The old row: every field as it was, only marked superseded by the correction.
    after = _stored(first["id"])
    assert after.pop("superseded_by_id") == Judgment.all_versions.get(pk=revised["id"]).pk
    assert after.pop("superseded_at") is not None
    assert before.pop("superseded_by_id") is None and before.pop("superseded_at") is None
    assert after == before
    # Current readers see the correction only; the history holds both.
    assert list(Judgment.objects.filter(task_id=task["task"]).values_list("pk", flat=True)) == [
        Judgment.all_versions.get(pk=revised["id"]).pk
    ]
    assert Judgment.all_versions.filter(assignment_id=task["assignment"]).count() == 2
    # Still one judgment for the assignment: no counter moved.
    assert counters.get() == (1, 0)
    assert Assignment.objects.get(pk=task["assignment"]).status == "submitted"
    stats = judged.client.get("/api/v1/me/stats/", {"round": judged.round.number}).json()
    assert stats["judgments_total"] == 2 and stats["round"]["judged"] == 2

    # The audit log says who replaced which judgment with which.
    event = AuditEvent.objects.get()
    assert (event.actor, event.actor_name) == (annotator, annotator.username)
    assert (event.action, event.method, event.status_code) == ("api:judgment-revise", "POST", 200)
    assert event.path == revise_url(first["id"])
    assert event.target == {
        "judgment_id": first["id"],
        "superseded_by": revised["id"],
        "assignment_id": first["assignment"],
        "round": str(judged.round.number),
    }
    # An admin reads it in the audit log.
    logged = api(admin).get("/api/v1/audit/", {"action": "api:judgment-revise"}).json()
    assert [(e["actor"], e["target"]) for e in logged["results"]] == [
        (annotator.username, event.target)
    ]


def test_the_same_correction_twice_is_one_new_judgment(judged):
    task, first = judged.tasks[0], judged.judgments[0]
    body = reversed_body(task)
    once, twice = judged.revise(first["id"], body), judged.revise(first["id"], body)
    assert once.status_code == twice.status_code == 200
    assert once.json() == twice.json()
    # A body equal to the current judgment's own corrects nothing.
    same = judged.revise(once.json()["id"], body)
    assert same.status_code == 200 and same.json() == once.json()
    assert Judgment.all_versions.filter(assignment_id=task["assignment"]).count() == 2
    assert AuditEvent.objects.count() == 1


def test_a_superseded_judgment_is_409_naming_the_current_one(judged):
    task, first = judged.tasks[0], judged.judgments[0]
    second = judged.revise(first["id"], reversed_body(task)).json()
    other = reversed_body(task) | {"rationale": "third thoughts"}
    response = judged.revise(first["id"], other)
    assert response.status_code == 409
    refused = response.json()
    assert refused["code"] == "superseded" and refused["judgment"] == second["id"]
    assert second["id"] in refused["detail"] and first["id"] in refused["detail"]

    # The current one may be revised again: a chain, each kept.
    third = judged.revise(second["id"], other)
    assert third.status_code == 200 and third.json()["supersedes"] == second["id"]
    chain = {
        str(j.pk): j.superseded_by_id and str(j.superseded_by_id)
        for j in Judgment.all_versions.filter(assignment_id=task["assignment"])
    }
    assert chain == {first["id"]: second["id"], second["id"]: third.json()["id"],
                     third.json()["id"]: None}  # fmt: skip
    # Now the first correction's replay names the newest judgment, and nothing is stored.
    replay = judged.revise(first["id"], reversed_body(task))
    assert replay.status_code == 409 and replay.json()["judgment"] == third.json()["id"]
    assert Judgment.all_versions.filter(assignment_id=task["assignment"]).count() == 3
    # A plain submit of the first body names the current judgment too (submit's own 409).
    resubmit = judged.client.post(submit_url(task["assignment"]), valid_body(task), format="json")
    assert resubmit.status_code == 409 and resubmit.json()["judgment"] == third.json()["id"]


def test_someone_elses_judgment_is_404_and_an_outsider_403(judged, api, annotator2, outsider):
    task, first = judged.tasks[0], judged.judgments[0]
    for pk in (first["id"], "00000000-0000-4000-8000-000000000000"):
        response = judged.revise(pk, reversed_body(task), client=api(annotator2))
        assert response.status_code == 404
        assert response.json() == {
            "code": "not_found", "detail": "No such judgment.", "fields": {},
        }  # fmt: skip
    assert api(annotator2).post("/api/v1/judgments/not-a-uuid/revise/", {}).status_code == 404
    assert judged.revise(first["id"], reversed_body(task), client=api(outsider)).status_code == 403
    assert judged.revise(first["id"], reversed_body(task), client=api(None)).status_code == 401
    assert Judgment.all_versions.count() == 2 and not AuditEvent.objects.exists()
    # Nor does the other annotator see it among theirs.
    assert api(annotator2).get(MINE).json() == []


def test_an_invalid_correction_is_400_naming_each_field(judged):
    task, first = judged.tasks[0], judged.judgments[0]
    ids = [c["id"] for c in task["completions"]]
    foreign = judged.tasks[1]["completions"][0]["id"]
    body = reversed_body(task) | {"ranking": [[ids[0]], [ids[1]], [foreign]], "mood": "sure"}
    body["scores"][str(ids[0])]["helpful"] = "7"
    response = judged.revise(first["id"], body)
    assert response.status_code == 400
    refused = response.json()
    assert refused["code"] == "invalid"
    assert set(refused["fields"]) >= {"mood", "ranking.2.0", f"scores.{ids[0]}.helpful"}
    assert refused["fields"][f"scores.{ids[0]}.helpful"] == [
        "Must be an integer from 1 to 7, got a string."
    ]
    assert judged.revise(first["id"], []).json()["fields"] == {
        "body": ["Must be a JSON object, got a list."]
    }
    assert Judgment.all_versions.count() == 2 and _stored(first["id"])["superseded_by_id"] is None


def test_a_closed_round_refuses_corrections(judged, api, admin):
    task, first = judged.tasks[0], judged.judgments[0]
    body = reversed_body(task)
    assert judged.revise(first["id"], body).status_code == 200  # while it is open
    revised = Judgment.objects.get(assignment_id=task["assignment"])
    closed = api(admin).post(f"/api/v1/rounds/{judged.round.pk}/close/")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"

    second = judged.judgments[1]
    response = judged.revise(second["id"], reversed_body(judged.tasks[1]))
    assert response.status_code == 409
    assert response.json() == {
        "code": "round_closed",
        "detail": f"Round {judged.round.number} is closed: its judgments can no longer be revised.",
        "fields": {},
        "round": judged.round.number,
    }
    assert judged.revise(str(revised.pk), body | {"rationale": "late"}).status_code == 409
    # The correction made while it was open stays the answer to its replay.
    assert judged.revise(first["id"], body).json()["id"] == str(revised.pk)
    assert Judgment.all_versions.count() == 3
    # The list says what can no longer be revised.
    assert {j["id"]: j["revisable"] for j in judged.client.get(MINE).json()} == {
        str(revised.pk): False, second["id"]: False,
    }  # fmt: skip


def test_my_judgments_lists_the_current_ones_newest_first(judged):
    task, first = judged.tasks[0], judged.judgments[0]
    revised = judged.revise(first["id"], reversed_body(task)).json()
    listed = judged.client.get(MINE).json()
    assert [j["id"] for j in listed] == [revised["id"], judged.judgments[1]["id"]]
    newest = listed[0]
    assert newest["supersedes"] == first["id"] and listed[1]["supersedes"] is None
    assert newest["revisable"] is True and newest["round"] == judged.round.number
    assert newest["ranking"] == revised["ranking"]
    # The task as the annotator saw it: prompt, completions in their own order.
    assert newest["prompt"] == task["prompt"]
    assert newest["completions"] == task["completions"]
    assert [j["id"] for j in judged.client.get(MINE, {"limit": 1}).json()] == [revised["id"]]
    assert judged.client.get(MINE, {"round": judged.round.number + 1}).json() == []
    bad = judged.client.get(MINE, {"limit": 0})
    assert bad.status_code == 400 and "limit" in bad.json()["fields"]
    assert judged.client.get(MINE, {"page": 2}).status_code == 400


def _export(client: Any, fmt: str) -> bytes:
    response = client.get(EXPORT, {"format": fmt})
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def _on_both_paths(client: Any, fmt: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The export as the API streams it: on PostgreSQL built by the database for a pair format,
    then again on the Python path; the bytes are the same."""
    if connection.vendor == "postgresql" and fmt in sql.SIDES:
        assert sql.sql_applies(fmt=fmt, filters=ExportFilters())
    built = _export(client, fmt)
    monkeypatch.setattr(sql, "ENABLED", False)
    python = _export(client, fmt)
    monkeypatch.setattr(sql, "ENABLED", True)
    assert built == python
    return built


def test_exports_and_snapshots_hold_the_correction_only(
    judged, api, researcher, admin, monkeypatch
):
    task, first = judged.tasks[0], judged.judgments[0]
    body = reversed_body(task)
    revised = judged.revise(first["id"], body).json()
    kept = judged.judgments[1]["id"]
    rank = {group[0]: i for i, group in enumerate(body["ranking"])}

    pairs = [json.loads(line) for line in _on_both_paths(api(researcher), "trl", monkeypatch)
             .splitlines()]  # fmt: skip
    assert sorted({row["judgment_id"] for row in pairs}) == sorted([revised["id"], kept])
    corrected = [row for row in pairs if row["judgment_id"] == revised["id"]]
    assert len(corrected) == 3  # C(3, 2), the new ranking has no ties
    for row in corrected:
        chosen, rejected = row["chosen_completion_id"], row["rejected_completion_id"]
        assert rank[chosen] < rank[rejected]
        assert row["chosen_rank"] == rank[chosen] + 1
        assert row["chosen_scores"] == body["scores"][str(chosen)]

    raw = [json.loads(line) for line in _on_both_paths(api(researcher), "judgments", monkeypatch)
           .splitlines()]  # fmt: skip
    assert sorted(row["judgment_id"] for row in raw) == sorted([revised["id"], kept])
    row = next(row for row in raw if row["judgment_id"] == revised["id"])
    assert row["ranking"] == body["ranking"] and row["rationale"] == body["rationale"]

    response = api(admin).post(
        "/api/v1/snapshots/", {"kind": "preference", "consensus": "none", "eval_fraction": 0},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    folder = Path(settings.ARTIFACTS_DIR) / response.json()["path"]
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3
    # Completion texts are distinct across prompts: the corrected task's rows are these.
    texts = {c["text"]: c["id"] for c in task["completions"]}
    ours = [r for r in rows if r["chosen"][0]["content"] in texts]
    assert len(ours) == 3
    for r in ours:
        chosen, rejected = (texts[r[side][0]["content"]] for side in ("chosen", "rejected"))
        assert rank[chosen] < rank[rejected]


def test_the_database_allows_one_current_judgment_per_assignment(judged):
    # A second current judgment of one assignment, written past every service.
    stored = Judgment.objects.get(pk=judged.judgments[0]["id"])
    stored.id = uuid.uuid4()
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.all_versions.bulk_create([stored])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_corrections_take_turns(api, annotator):
    judged = Judged(api, annotator)
    (task, first), (task2, second) = zip(judged.tasks, judged.judgments, strict=True)

    def revise(judgment_id: str, body: dict[str, Any]) -> tuple[int, str]:
        response = api(annotator).post(revise_url(judgment_id), body, format="json")
        answer = response.json()
        return response.status_code, answer["id"] if "id" in answer else answer["code"]

    # The same correction from four clients at once: one new judgment, the same answer to all.
    same = race(4, lambda: revise(first["id"], reversed_body(task)))
    assert len(same) == 1 and next(iter(same))[0] == 200, same
    # Four different corrections at once: one is stored, the others told it superseded theirs.
    bodies = iter([reversed_body(task2) | {"rationale": f"take {i}"} for i in range(4)])
    different = race(4, lambda: revise(second["id"], next(bodies)))
    assert sorted(status for status, _ in different.elements()) == [200, 409, 409, 409]
    assert different[(409, "superseded")] == 3
    for assignment in (task["assignment"], task2["assignment"]):
        assert Judgment.all_versions.filter(assignment_id=assignment).count() == 2
    assert AuditEvent.objects.count() == 2
