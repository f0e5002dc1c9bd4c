"""Trust in training snapshots: the export's ``min_trust`` and ``weighting``, under the same
names and with the same errors, recorded in the manifest and the datasheet."""

from __future__ import annotations

import json

import pytest

from feedback.platform.roles import Role

from ..annotation.helpers import in_task_order, lease, submit_url, valid_body
from ..factories import open_round
from .test_snapshots import rows_of

pytestmark = pytest.mark.django_db

SNAPSHOTS = "/api/v1/snapshots/"
EXPORT = "/api/v1/exports/preferences/"


def judge(client, *, reverse: bool) -> int:
    """Judge every task the client is given, all in the tasks' own order (or all reversed)."""
    judged = 0
    while (task := lease(client)) is not None:
        body = valid_body(in_task_order(task))
        if reverse:
            body["ranking"] = body["ranking"][::-1]
        response = client.post(submit_url(task["assignment"]), body, format="json")
        assert response.status_code == 200, response.content
        judged += 1
    return judged


@pytest.fixture
def trusted_and_not(api, annotator, annotator2, make_user):
    """Round 1 (2 tasks, overlap 3): ann1 and ann2 agree, ann3 reverses them. Round 2 (2 tasks,
    overlap 2): ann1 and ann3 disagree, and only trust can settle a task. Trust over both
    rounds: ann2 0.5 (the others split on each of its tasks: no evidence), ann1
    (0 + 2) / (6 + 4) = 0.2, ann3 (0 + 2) / (12 + 4) = 0.125."""
    third = make_user(Role.ANNOTATOR, username="ann3")
    open_round(n=2, k=3, overlap=3)
    assert judge(api(annotator), reverse=False) == 2
    assert judge(api(annotator2), reverse=False) == 2
    assert judge(api(third), reverse=True) == 2
    open_round(n=2, k=3, overlap=2)
    assert judge(api(annotator), reverse=False) == 2
    assert judge(api(third), reverse=True) == 2
    return annotator, annotator2, third


def pairs(rows: list[dict]) -> list[tuple[str, str]]:
    return sorted((r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows)


def cut(client, **body) -> dict:
    response = client.post(SNAPSHOTS, {"eval_fraction": 0, **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_trust_options_cut_training_snapshots_as_they_cut_exports(api, admin, trusted_and_not):
    client = api(admin)
    equal = cut(client, kind="preference")
    # Round 2's two annotators weigh the same and cancel: only round 1's pairs (3 a task).
    assert len(rows_of(equal)) == 2 * 3
    assert equal["filters"]["min_trust"] is None and equal["filters"]["weighting"] == "equal"
    assert "trust" not in equal["manifest"]

    weighted = cut(client, kind="preference", weighting="trust")
    assert len(rows_of(weighted)) == 4 * 3  # ann1 outweighs ann3 in round 2
    exported = [json.loads(line) for line in b"".join(
        client.get(EXPORT, {"consensus": "bradley_terry", "weighting": "trust"}).streaming_content
    ).splitlines()]  # fmt: skip
    assert pairs(rows_of(weighted)) == pairs(exported)
    record = weighted["manifest"]["trust"]
    assert record["weighting"] == "trust" and record["annotators_left_out"] == 0
    assert [a["trust"] for a in record["annotators"]] == [0.5, 0.2, 0.125]
    assert weighted["filters"]["weighting"] == "trust"

    strict = cut(client, kind="preference", min_trust=0.3)
    assert len(rows_of(strict)) == 2 * 3  # ann2's round-1 judgments alone
    record = strict["manifest"]["trust"]
    assert record["min_trust"] == 0.3 and record["annotators_left_out"] == 2
    assert record["judgments_left_out"] == 8
    assert [a["kept"] for a in record["annotators"]] == [True, False, False]
    sheet = client.get(f"{SNAPSHOTS}{strict['id']}/datasheet/").content.decode()
    assert "## Trust" in sheet
    assert "trust below 0.3 were left out: 2 of 3 annotators, 8 judgments" in sheet
    assert '"min_trust": 0.3' in sheet  # the exact filters

    # KTO weighs its consensus the same way; SFT drops the untrusted judges' best answers.
    kto_equal, kto_trust = (
        len(rows_of(cut(client, kind="kto", **extra))) for extra in ({}, {"weighting": "trust"})
    )
    assert (kto_equal, kto_trust) == (2 * 2, 4 * 2)  # best and worst of each ordered task
    sft = cut(client, kind="sft", top_ranked=True, min_trust=0.3)
    assert len(rows_of(sft)) == 2 and sft["manifest"]["trust"]["annotators_left_out"] == 2


def test_bad_trust_options_are_the_exports_field_errors(api, admin, researcher, trusted_and_not):
    client = api(admin)
    for body, query in (
        ({"min_trust": 2}, {"min_trust": 2}),
        ({"consensus": "none", "weighting": "trust"}, {"weighting": "trust"}),
    ):
        snapshot = client.post(SNAPSHOTS, {"kind": "preference", **body}, format="json")
        export = client.get(EXPORT, query)
        assert snapshot.status_code == export.status_code == 400
        (name,) = export.json()["fields"]
        # The same check, word for word, but for the value it quotes (JSON 2.0, query '2').
        said = [r.json()["fields"][name][0].split(", got")[0] for r in (snapshot, export)]
        assert said[0] == said[1]
    bad_choice = client.post(SNAPSHOTS, {"kind": "kto", "weighting": "loud"}, format="json")
    assert bad_choice.status_code == 400 and "weighting" in bad_choice.json()["fields"]
    sft = client.post(SNAPSHOTS, {"kind": "sft", "weighting": "trust"}, format="json")
    assert sft.status_code == 400 and "weighting" in sft.json()["fields"]
    # An export snapshot takes them in its filters, as an export job does.
    misplaced = {"kind": "export", "format": "trl", "min_trust": 0.3}
    response = api(researcher).post(SNAPSHOTS, misplaced, format="json")
    assert response.status_code == 400 and "filters" in response.json()["fields"]["min_trust"][0]
    frozen = {"kind": "export", "format": "trl", "filters": {"min_trust": 0.3}}
    response = api(researcher).post(SNAPSHOTS, frozen, format="json")
    assert response.status_code == 201, response.content
    sheet = client.get(f"{SNAPSHOTS}{response.json()['id']}/datasheet/").content.decode()
    assert "Judgments of annotators with trust below 0.3 were left out." in sheet
