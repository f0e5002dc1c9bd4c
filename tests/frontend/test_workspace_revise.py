"""Revising a judgment from the workspace (issue 20, point 5): the annotator opens a judgment
they sent from "Your recent judgments" or right after a submit, finds it as they sent it in the
same editor, changes it and sends the revision; a refusal (the round closed meanwhile) says so,
and the task in hand keeps its draft throughout. Each test drives Chromium as an annotator
would and checks what the database holds."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from annotation.models import Judgment
from annotation.rounds import round_close

from ..factories import open_round
from .test_workspace import answer_ids, rank_all_and_score, wait_saved

pytestmark = pytest.mark.django_db(transaction=True)
REVISING = re.compile(r"^Revising your judgment of round 1")


def judge_first_task(page: Any) -> tuple[list[int], list[int]]:
    """Rank the first task A > B > C, score every answer 5, 'Better', submit; the ids of its
    answers and of the next task's, once that one is on the page."""
    first = answer_ids(page)
    rank_all_and_score(page, first)
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)
    expect(page.locator(f'.answer[data-id="{first[0]}"]')).to_have_count(0)
    return first, answer_ids(page)


def test_the_annotator_revises_a_judgment_from_the_recent_list(
    sign_in, page, annotator, screenshot
):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    first = answer_ids(page)
    page.get_by_label("Personal data").check()
    (a, b, c), second = judge_first_task(page)
    sent = Judgment.objects.get()
    # The next task, half done: its draft must come through the revision.
    page.keyboard.press("2")  # the focus starts on its answer A
    page.get_by_label("Rationale").fill("half done")

    page.get_by_role("button", name="Your recent judgments").click()
    revise = page.get_by_role("button", name=re.compile(r"^Revise your judgment of round 1"))
    expect(revise).to_have_count(1)
    revise.click()
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    # As it was sent, the answers in the order they were shown.
    assert answer_ids(page) == first == [a, b, c]
    for cid, badge in ((a, "Best"), (b, "2nd"), (c, "3rd")):
        expect(page.locator(f'[data-rank-for="{cid}"]')).to_have_text(badge)
    expect(page.locator(f"#score-{c}-helpful-5")).to_be_checked()
    expect(page.get_by_label("Better", exact=True)).to_be_checked()
    expect(page.get_by_label("Personal data")).to_be_checked()
    expect(page.get_by_label("Rationale")).to_have_value("")
    expect(page.get_by_role("button", name="Submit")).to_be_hidden()
    expect(page.get_by_role("button", name="Skip…")).to_be_hidden()
    screenshot("workspace-revise")

    # C to the top (A takes its 3rd place), and C's helpfulness to 7.
    page.locator(".answer").nth(2).focus()
    page.keyboard.press("1")
    page.click(f'label[for="score-{c}-helpful-7"]')
    # A field the server refuses is marked next to it, as on a submit.
    page.get_by_label("Rationale").fill("x" * 5001)
    page.get_by_role("button", name="Send revision").click()
    expect(page.locator('[data-error-for="rationale"]')).to_have_text(
        "At most 5000 characters, got 5001."
    )
    page.get_by_label("Rationale").fill("C is the only right one")
    page.get_by_role("button", name="Send revision").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Revision saved: your judgment of round 1 now ranks C > B > A"
    )

    # Back to the task in hand, with its draft.
    expect(page.get_by_role("heading", name=REVISING)).to_be_hidden()
    assert answer_ids(page) == second
    expect(page.locator(f'[data-rank-for="{second[0]}"]')).to_have_text("2nd")
    expect(page.get_by_label("Rationale")).to_have_value("half done")
    expect(page.get_by_role("button", name="Submit")).to_be_visible()

    old = Judgment.all_versions.get(pk=sent.pk)
    new = Judgment.objects.get(assignment=sent.assignment)
    assert old.superseded_by_id == new.pk and old.superseded_at is not None
    assert old.ranking == [[a], [b], [c]] and old.rationale == ""
    assert new.ranking == [[c], [b], [a]]
    assert new.scores[str(c)] == {"helpful": 7, "honest": 5, "harmless": 5}
    assert new.scores[str(a)] == old.scores[str(a)]
    assert new.strength == "better" and new.flags == ["pii"]
    assert new.rationale == "C is the only right one"
    assert new.display_order == old.display_order
    assert new.time_spent_ms >= old.time_spent_ms
    # The list now offers the revision, the judgment that stands.
    expect(page.locator(f'#recent-list [data-judgment="{new.pk}"]')).to_have_count(1)
    expect(page.locator(f'#recent-list [data-judgment="{old.pk}"]')).to_have_count(0)


def test_a_revision_sent_after_its_round_closed_is_refused_with_the_reason(
    sign_in, page, annotator
):
    round_ = open_round(n=2, k=3)
    sign_in(annotator.username)
    (a, b, c), second = judge_first_task(page)
    page.get_by_label("Rationale").fill("my draft")

    page.get_by_role("button", name="Revise the judgment you just sent").click()
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    page.locator(".answer").nth(1).focus()
    page.keyboard.press("1")  # B best, A to 2nd
    expect(page.locator("#ranking-words")).to_have_text("B is best; A is 2nd; C is 3rd.")
    round_close(round_id=round_.pk)  # an admin closes the round meanwhile
    page.get_by_role("button", name="Send revision").click()

    refusal = page.get_by_role("alert").filter(has_text="Round 1 is closed")
    expect(refusal).to_contain_text("this revision was not saved")
    expect(page.get_by_role("button", name="Send revision")).to_be_hidden()
    judgment = Judgment.all_versions.get()
    assert judgment.superseded_by_id is None and judgment.ranking == [[a], [b], [c]]

    page.get_by_role("button", name="Back to your task").click()
    expect(page.get_by_role("heading", name=REVISING)).to_be_hidden()
    assert answer_ids(page) == second
    expect(page.get_by_label("Rationale")).to_have_value("my draft")


def test_a_revision_by_keyboard_and_a_cancel_that_changes_nothing(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    (a, b, c), second = judge_first_task(page)
    page.keyboard.press("3")  # the next task's draft: its A 3rd

    page.keyboard.press("r")  # the list of recent judgments, from the keyboard
    revise = page.get_by_role("button", name=re.compile(r"^Revise your judgment of round 1"))
    expect(revise).to_be_visible()
    for _ in range(10):  # back from the answer in focus to the list's Revise button
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.dataset.judgment || ''"):
            break
    expect(revise).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    expect(page.locator(".answer").first).to_be_focused()
    page.keyboard.press("3")  # A 3rd: C takes its place at the top
    expect(page.locator("#ranking-words")).to_have_text("C is best; B is 2nd; A is 3rd.")

    page.get_by_role("button", name="Cancel revision").click()
    expect(page.get_by_role("status")).to_contain_text("Revision cancelled")
    expect(revise).to_be_focused()  # back where the revision was opened
    assert answer_ids(page) == second
    expect(page.locator(f'[data-rank-for="{second[0]}"]')).to_have_text("3rd")
    assert Judgment.all_versions.count() == 1

    page.keyboard.press("Enter")  # again: as it was sent, the cancelled change gone
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    expect(page.locator("#ranking-words")).to_have_text("A is best; B is 2nd; C is 3rd.")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("1")  # B best, A takes 2nd
    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("status")).to_contain_text("now ranks B > A > C")
    assert Judgment.all_versions.count() == 2
    assert Judgment.objects.get(supersedes__isnull=False).ranking == [[b], [a], [c]]


def test_a_revision_that_gets_no_answer_is_sent_again_after_a_reload(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    (a, b, c), second = judge_first_task(page)
    outage = [True]

    def lose_while_the_outage_lasts(route: Any) -> None:
        if outage[0]:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/revise/", lose_while_the_outage_lasts)
    page.get_by_role("button", name="Revise the judgment you just sent").click()
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    page.locator(".answer").nth(2).focus()
    page.keyboard.press("1")  # C best, A takes its 3rd place
    page.get_by_role("button", name="Send revision").click()
    expect(page.get_by_role("status")).to_contain_text("Connection problem")

    # A reload ends it: the old page never got through, the new one sends the outbox first (a
    # try made before the outage is over is retried, as every send is).
    page.reload(wait_until="commit")
    outage[0] = False
    expect(page.get_by_role("status")).to_contain_text(
        "sent before the page was reloaded, is saved"
    )
    assert answer_ids(page) == second
    assert Judgment.all_versions.count() == 2
    assert Judgment.objects.get(supersedes__isnull=False).ranking == [[c], [b], [a]]


def test_a_score_alone_is_a_revision_and_no_change_sends_nothing(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    (a, b, c), _ = judge_first_task(page)
    revise_last = page.get_by_role("button", name="Revise the judgment you just sent")
    revise_last.click()
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    page.get_by_role("button", name="Send revision").click()
    expect(page.get_by_role("status")).to_contain_text("Nothing changed, so nothing was sent")
    expect(revise_last).to_be_focused()
    assert Judgment.all_versions.count() == 1

    revise_last.click()
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    page.click(f'label[for="score-{b}-honest-2"]')
    page.get_by_role("button", name="Send revision").click()
    expect(page.get_by_role("status")).to_contain_text("Revision saved")
    revised = Judgment.objects.get()
    assert revised.scores[str(b)] == {"helpful": 5, "honest": 2, "harmless": 5}
    assert revised.ranking == [[a], [b], [c]]
    assert Judgment.all_versions.count() == 2


def test_a_revision_opens_while_the_next_task_is_on_its_way(sign_in, page, annotator):
    """On a busy server the next task can take a while after a submit; the judgment just sent
    can be revised meanwhile, the next task waits behind the revision, and the task that was
    judged keeps no draft."""
    open_round(n=2, k=3)
    sign_in(annotator.username)
    first = answer_ids(page)
    held: list[Any] = []
    rank_all_and_score(page, first)

    def hold(route: Any) -> None:  # the next lease waits until it is let go
        held.append(route)

    page.route("**/tasks/next/", hold)
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)

    page.get_by_role("button", name="Your recent judgments").click()
    page.get_by_role("button", name=re.compile(r"^Revise your judgment of round 1")).click()
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    assert answer_ids(page) == first
    assert len(held) == 1  # the lease was asked for before the list was
    held[0].continue_()
    expect(page.locator("#stats")).to_contain_text("Total: 1")  # the lease came back
    expect(page.get_by_role("heading", name=REVISING)).to_be_visible()
    assert answer_ids(page) == first

    page.locator(".answer").nth(2).focus()
    page.keyboard.press("1")  # C best
    page.get_by_role("button", name="Send revision").click()
    expect(page.get_by_role("status")).to_contain_text("Revision saved")
    second = answer_ids(page)
    assert set(second).isdisjoint(first)
    assert Judgment.objects.get().ranking[0] == [first[2]]
    kept = page.evaluate("Object.keys(localStorage)")
    assert f"feedback-loop.draft.{Judgment.objects.get().assignment_id}" not in kept
