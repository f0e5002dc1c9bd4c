"""Each annotator's progress through every round, and a round's leaderboard: off until an admin
turns it on, pseudonymous unless the admin chooses names, counts with agreement beside them."""

from __future__ import annotations

import pytest

from annotation.exports import annotator_pseudonym
from feedback.platform.roles import Role

from ..factories import open_round
from .helpers import in_task_order, lease, skip_url, submit_url, valid_body

pytestmark = pytest.mark.django_db

PROGRESS = "/api/v1/me/progress/"


def board_url(round_id: int) -> str:
    return f"/api/v1/rounds/{round_id}/leaderboard/"


def judge(client, *, tasks: int, reverse: bool = False) -> None:
    """Judge ``tasks`` tasks, all ranked in the tasks' own order (or all reversed)."""
    for _ in range(tasks):
        task = lease(client)
        assert task is not None
        body = valid_body(in_task_order(task))
        if reverse:
            body["ranking"] = body["ranking"][::-1]
        response = client.post(submit_url(task["assignment"]), body, format="json")
        assert response.status_code == 200, response.content


def test_annotators_see_their_progress_through_every_round(api, annotator, annotator2, researcher):
    first = open_round(n=4, k=3, overlap=2)
    mine = api(annotator)
    judge(mine, tasks=2)
    held = lease(mine)
    skipped = mine.post(skip_url(held["assignment"]), {"reason": "not my language"}, format="json")
    assert skipped.status_code == 200, skipped.content
    judge(api(annotator2), tasks=4)
    second = open_round(n=2, k=3, overlap=1)

    rows = mine.get(PROGRESS).json()
    assert [r["number"] for r in rows] == [second.number, first.number]  # newest first
    now, before = rows
    # Round 1: 2 judged and 1 skipped of 4; the fourth still wants a judgment and may be theirs.
    assert before == {
        "round_id": first.pk, "number": first.number, "status": "open", "tasks": 4,
        "judged": 2, "skipped": 1, "available": 1, "percent": 75, "leaderboard": False,
    }  # fmt: skip
    assert (now["tasks"], now["judged"], now["available"], now["percent"]) == (2, 0, 2, 0)
    theirs = api(annotator2).get(PROGRESS).json()
    assert [(r["judged"], r["available"]) for r in theirs] == [(0, 2), (4, 0)]
    for other, status in ((researcher, 403), (None, 401)):
        assert api(other).get(PROGRESS).status_code == status


def test_leaderboard_is_off_until_an_admin_turns_it_on_and_pseudonymous_by_default(
    api, admin, researcher, annotator, annotator2, make_user
):
    third = make_user(Role.ANNOTATOR, username="ann3")
    round_ = open_round(n=3, k=3, overlap=3)
    judge(api(annotator), tasks=3)
    judge(api(annotator2), tasks=2)
    judge(api(third), tasks=2, reverse=True)
    url = board_url(round_.pk)

    off = api(annotator).get(url)
    assert off.status_code == 403 and "turned it on" in off.json()["detail"]
    assert api(researcher).get(url).status_code == 403
    seen = api(admin).get(url).json()  # an admin always can, with usernames
    assert seen["enabled"] is False
    assert seen["rows"][0]["username"] == "ann1"

    turned = api(admin).patch(f"/api/v1/rounds/{round_.pk}/", {"leaderboard_enabled": True}, "json")
    assert turned.status_code == 200, turned.content
    assert turned.json()["leaderboard_enabled"] is True
    assert turned.json()["leaderboard_names"] is False
    assert api(annotator).get(PROGRESS).json()[0]["leaderboard"] is True

    board = api(annotator2).get(url).json()
    rows = board["rows"]
    assert board["enabled"] is True and board["names"] is False
    assert [r["rank"] for r in rows] == [1, 2, 2]  # as many judgments, the same rank
    assert [r["judged"] for r in rows] == [3, 2, 2]
    assert all("username" not in r for r in rows)
    names = [r["annotator"] for r in rows]
    assert all(n.startswith("Annotator ") for n in names) and len(set(names)) == 3
    for user in (annotator, annotator2, third):
        # Not the export's pseudonym, and no trace of the username.
        assert annotator_pseudonym(user.pk) not in names
        assert not any(user.username in n for n in names)
    assert [r["you"] for r in rows].count(True) == 1
    assert next(r for r in rows if r["you"])["judged"] == 2
    # ann3 reversed everyone else: it agrees with none of the consensus pairs.
    reversed_row = [r for r in rows if r["agreement"]["value"] == 0.0]
    assert len(reversed_row) == 1 and reversed_row[0]["agreement"]["n"] > 0
    assert api(researcher).get(url).status_code == 200

    named = api(admin).patch(f"/api/v1/rounds/{round_.pk}/", {"leaderboard_names": True}, "json")
    assert named.status_code == 200
    rows = api(annotator).get(url).json()["rows"]
    assert rows[0]["annotator"] == "ann1" and rows[0]["you"] is True
    assert {r["annotator"] for r in rows[1:]} == {"ann2", "ann3"}


def test_leaderboard_switch_is_admin_only_and_strict(api, admin, annotator):
    round_ = open_round(n=1, k=2, overlap=1)
    detail = f"/api/v1/rounds/{round_.pk}/"
    refused = api(annotator).patch(detail, {"leaderboard_enabled": True}, "json")
    assert refused.status_code == 403
    for body, field in (
        ({}, ""),
        ({"leaderboard_enabled": "maybe"}, "leaderboard_enabled"),
        ({"leaderboard": True}, "leaderboard"),
    ):
        response = api(admin).patch(detail, body, "json")
        assert response.status_code == 400 and field in response.json()["fields"], body
    assert api(admin).get(board_url(round_.pk + 1000)).status_code == 404
    # The gold rate still changes alone, and leaves the leaderboard as it was.
    gold = api(admin).patch(detail, {"gold_rate": 0.2}, "json").json()
    assert gold["gold_rate"] == 0.2 and gold["leaderboard_enabled"] is False
