"""The progress page and the leaderboard switch, in a browser: an annotator follows their
progress through a round; an admin turns the round's leaderboard on from the round's page; the
annotator then sees it, pseudonymous, with their own row marked."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from ..annotation.helpers import in_task_order, lease, submit_url, valid_body
from ..factories import open_round


def judge(client: Any, tasks: int) -> None:
    for _ in range(tasks):
        task = lease(client)
        assert task is not None
        body = valid_body(in_task_order(task))  # everyone ranks the same way: full agreement
        assert client.post(submit_url(task["assignment"]), body, format="json").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_admin_turns_the_leaderboard_on_and_the_annotator_sees_it(
    sign_in, sign_in_elsewhere, page, admin, annotator, annotator2, api
):
    round_ = open_round(n=3, k=3, overlap=2)
    judge(api(annotator), 2)
    judge(api(annotator2), 2)  # at least one task in common with annotator's two

    sign_in(annotator.username)
    page.goto("/progress/")
    card = page.locator("section.card", has_text=f"Round {round_.number}")
    expect(card.get_by_role("progressbar")).to_have_attribute("value", "67")
    expect(card).to_contain_text("you judged 2 of its 3 tasks; 1 more may come to you.")
    expect(card.locator("table.leaderboard")).to_have_count(0)

    # The admin, in a browser of their own, turns the leaderboard on from the round's page.
    admin_page = sign_in_elsewhere(admin.username)
    admin_page.goto(f"/manage/rounds/{round_.pk}/")
    admin_page.get_by_label("Show annotators this round's leaderboard").check()
    admin_page.get_by_role("button", name="Save leaderboard").click()
    expect(admin_page.locator(".messages")).to_contain_text(
        f"Annotators now see round {round_.number}'s leaderboard, with pseudonyms."
    )
    admin_board = admin_page.locator("table.leaderboard")
    # Both judged two tasks alike: tied, in pseudonym order; the admin sees usernames.
    expect(admin_board.locator("tbody tr")).to_have_count(2)
    expect(admin_board.locator("tbody tr", has_text=annotator.username)).to_have_count(1)

    page.reload()
    board = card.locator("table.leaderboard")
    expect(board.locator("tbody tr")).to_have_count(2)
    mine = board.locator('tr[aria-current="true"]')
    expect(mine.locator("td").nth(1)).to_contain_text("Annotator ")
    expect(mine).to_contain_text("(you)")
    expect(mine.locator("td").nth(2)).to_have_text("2")
    # The tasks both judged, ranked alike: every pair agrees with the consensus.
    expect(mine.locator("td").nth(3)).to_contain_text("1.00 (")
    expect(mine.locator("td").nth(3)).to_contain_text(" pairs")
    expect(board).not_to_contain_text(annotator2.username)
    expect(board).not_to_contain_text(annotator.username)
