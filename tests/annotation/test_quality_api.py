"""The quality routes: agreement per round, the annotator trust table, disagreements; who may
read them, and what each role sees of annotators' identity."""

from __future__ import annotations

import pytest

from annotation.exports import annotator_pseudonym

from ..factories import open_round
from .helpers import in_task_order, lease, submit_url, valid_body

pytestmark = pytest.mark.django_db


def judge_all(client, *, reverse: bool) -> int:
    judged = 0
    while (task := lease(client)) is not None:
        body = valid_body(in_task_order(task))  # both annotators rank the same way round
        if reverse:
            body["ranking"] = body["ranking"][::-1]
        assert client.post(submit_url(task["assignment"]), body, format="json").status_code in (
            200,
            201,
        )
        judged += 1
    return judged


def test_quality_routes_for_researchers_and_admins(api, admin, researcher, annotator, annotator2):
    round_ = open_round(n=3, k=3, overlap=2)
    assert judge_all(api(annotator), reverse=False) == 3
    assert judge_all(api(annotator2), reverse=True) == 3

    agreement = api(researcher).get("/api/v1/quality/agreement/").json()
    (row,) = agreement
    assert row["round"] == round_.number and row["tasks"] == 3 and row["annotators"] == 2
    # Every pair reversed: pairwise agreement is 0, and alpha is negative.
    assert row["pairwise"]["value"] == 0.0 and row["pairwise"]["n"] == 9
    assert row["ranking_alpha"]["value"] < 0
    assert set(row["axis_alpha"]) == {"helpful", "honest", "harmless"}

    table = api(researcher).get("/api/v1/quality/annotators/").json()
    assert {r["annotator"] for r in table} == {
        annotator_pseudonym(annotator.pk),
        annotator_pseudonym(annotator2.pk),
    }
    assert all("username" not in r for r in table)
    for r in table:
        # 9 consensus pairs each, all reversed: trust = (0 + 4 * 0.5) / (9 + 4).
        assert r["agreement"]["value"] == 0.0
        assert r["trust"] == pytest.approx(2 / 13)
    admin_table = api(admin).get("/api/v1/quality/annotators/").json()
    assert {r["username"] for r in admin_table} == {annotator.username, annotator2.username}

    split = api(researcher).get("/api/v1/quality/disagreements/").json()
    assert len(split) == 3 and all(r["agreement"] == 0.0 for r in split)
    assert api(researcher).get("/api/v1/quality/annotators/?round=99").status_code == 400
    for user in (annotator, None):
        for route in ("agreement", "annotators", "disagreements"):
            assert api(user).get(f"/api/v1/quality/{route}/").status_code in (401, 403)
