"""The workspace records what the annotator meant, and explains itself (issue 15).

Stray digits and the order of key presses must never change a ranking; answers are shown as the
model wrote them; the scales, the action bar, progress, the phone layout and skipping say what
they do. Each test drives Chromium as an annotator would."""

from __future__ import annotations

from typing import Any

import pytest

from annotation.models import Assignment, Judgment
from annotation.rounds import round_open_from_imported
from feedback.models import Completion, PolicyVersion, Prompt, messages_hash

from ..factories import open_round
from .conftest import PAGE_TIMEOUT_MS
from .test_workspace import AXES, answer_ids, wait_saved

pytestmark = pytest.mark.django_db(transaction=True)


def focus_answer(page: Any, index: int) -> None:
    page.locator(".answer").nth(index).focus()


def score_all(page: Any, ids: list[int], value: int = 4) -> None:
    for cid in ids:
        for axis in AXES:
            page.click(f'label[for="score-{cid}-{axis}-{value}"]')


def in_viewport(page: Any, locator: Any) -> bool:
    box = locator.bounding_box()
    size = page.viewport_size
    return (
        box is not None
        and box["y"] >= 0
        and box["y"] + box["height"] <= size["height"]
        and box["x"] >= 0
        and box["x"] + box["width"] <= size["width"]
    )


def test_a_digit_typed_off_an_answer_card_ranks_nothing(sign_in, page, annotator):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    a, b, c = answer_ids(page)
    for index, rank in ((0, "1"), (2, "2"), (1, "3")):  # A > C > B
        focus_answer(page, index)
        page.keyboard.press(rank)
    score_all(page, [a, b, c])
    significantly = page.get_by_label("Significantly better")
    significantly.check()
    page.keyboard.press("2")  # focus is on the strength option: a stray digit
    page.get_by_label("Personal data").focus()
    page.keyboard.press("3")
    page.locator(f'.chip[data-id="{a}"]').focus()
    page.keyboard.press("2")
    badges = [page.locator(f'[data-rank-for="{cid}"]').inner_text() for cid in (a, b, c)]
    assert badges == ["Best", "3rd", "2nd"]
    assert significantly.is_checked()
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)
    assert Judgment.objects.get().ranking == [[a], [c], [b]]


def test_a_number_means_that_rank_whatever_the_order_of_presses(sign_in, page, annotator):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    a, b, c = answer_ids(page)
    for index, rank in ((0, "1"), (1, "3"), (2, "2")):  # A→1, B→3, C→2
        focus_answer(page, index)
        page.keyboard.press(rank)
    assert page.locator(f'[data-rank-for="{b}"]').inner_text() == "3rd"
    assert page.locator(f'[data-rank-for="{c}"]').inner_text() == "2nd"
    assert page.locator("#ranking-words").inner_text() == "A is best; C is 2nd; B is 3rd."

    # A number already held swaps: B to 2nd sends C to B's old 3rd. No tie by accident.
    focus_answer(page, 1)
    page.keyboard.press("2")
    assert page.locator("#ranking-words").inner_text() == "A is best; B is 2nd; C is 3rd."
    # A tie is made on purpose (t, then the rank to share), shown as such, and undone with u.
    focus_answer(page, 2)
    page.keyboard.press("t")
    page.keyboard.press("2")
    assert page.locator(f'[data-rank-for="{c}"]').inner_text() == "2nd (tie with B)"
    assert page.locator("#ranking-words").inner_text() == "A is best; B and C tie for 2nd."
    page.keyboard.press("u")
    assert page.locator("#ranking-words").inner_text() == "A is best; B is 2nd; C is 3rd."

    score_all(page, [a, b, c])
    page.get_by_label("Better", exact=True).check()
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)
    assert Judgment.objects.get().ranking == [[a], [b], [c]]


ANSWERS = ["10. Happy to help!", "4. Happy to help!", "def f():\n    return  2   # kept"]


def round_with_answers(texts: list[str]) -> None:
    policy = PolicyVersion.objects.create(name="imported", status="external")
    messages = [{"role": "user", "content": "1 + 1"}]
    prompt = Prompt.objects.create(messages=messages, content_hash=messages_hash(messages))
    for i, text in enumerate(texts):
        Completion.objects.create(prompt=prompt, policy_version=policy, sample_index=i, text=text)
    round_open_from_imported(k=len(texts), overlap=1, seed=3)


def test_answers_are_shown_as_written_with_markdown_a_choice(sign_in, page, annotator):
    round_with_answers(ANSWERS)
    sign_in(annotator.username)
    ids = answer_ids(page)
    by_id = {c.pk: c.text for c in Completion.objects.all()}
    for cid in ids:
        # Every character, spaces and line breaks kept.
        assert by_id[cid] in page.locator(f'.answer[data-id="{cid}"]').inner_text()
        assert page.locator(f'[data-text-for="{cid}"]').inner_text() == by_id[cid]
    assert page.locator("[data-text-for] ol, [data-text-for] li").count() == 0

    page.get_by_label("Render Markdown").check()
    assert page.locator("#cards .md ol").count() == 2  # "10." and "4." as list items
    page.reload()  # the choice is remembered
    answer_ids(page)
    assert page.get_by_label("Render Markdown").is_checked()
    page.get_by_label("Render Markdown").uncheck()
    assert page.locator("#cards .md").count() == 0
    assert "10. Happy to help!" in page.locator("#cards").inner_text()


def test_scales_show_anchors_and_the_guidelines_are_a_rendered_panel(sign_in, page, annotator):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    a, _, _ = answer_ids(page)
    anchors = page.locator(f'fieldset.score[data-completion="{a}"][data-axis="helpful"] .anchors')
    assert anchors.locator("li").all_inner_texts() == [
        "1 Ignores or refuses a reasonable request, or answers something else.",
        "4 Addresses the request, but partly, vaguely or with needless padding.",
        "7 Fully solves the request, clearly and concisely; nothing important is missing.",
    ]
    explained = page.locator("#strength-explained")
    assert "compares only the answer you ranked best" in explained.inner_text()

    page.mouse.wheel(0, 2000)  # wherever the page is scrolled
    page.get_by_role("button", name="Guidelines (g)").click()
    panel = page.locator("#guidelines-panel")
    assert in_viewport(page, panel.get_by_role("heading", name="Guidelines"))
    assert panel.locator("strong").first.inner_text() == "Rank"
    assert "**" not in panel.inner_text()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Close").click()
    assert panel.is_hidden()


def test_one_action_bar_says_what_is_done_and_what_is_missing(sign_in, page, annotator):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    a, b, c = answer_ids(page)
    submit = page.get_by_role("button", name="Submit")
    checklist = page.locator("#checklist")
    assert checklist.inner_text() == "ranked 0/3 · scored 0/9 · strength not needed"
    assert in_viewport(page, submit)
    page.mouse.wheel(0, 3000)
    page.wait_for_function("() => window.scrollY > 0")
    assert in_viewport(page, submit)  # sticky at the bottom

    for index in range(3):
        focus_answer(page, index)
        page.keyboard.press(str(index + 1))
    for cid, axes in ((a, AXES), (b, ("honest", "harmless")), (c, ("helpful", "harmless"))):
        for axis in axes:
            page.click(f'label[for="score-{cid}-{axis}-5"]')
    assert checklist.inner_text() == "ranked 3/3 · scored 7/9 · strength —"
    submit.click()
    banner = page.locator("#banner")
    assert banner.inner_text() == "Still missing: helpful for B; honest for C; the strength."
    # One banner instead of a red line under each score.
    assert page.locator(".field-error:visible").count() == 0
    assert page.locator('fieldset.score[aria-invalid="true"]').count() == 2
    page.click(f'label[for="score-{b}-helpful-5"]')
    assert banner.inner_text() == "Still missing: honest for C; the strength."
    assert Judgment.objects.count() == 0


def test_progress_counts_tasks_skips_and_only_active_time(sign_in, page, annotator):
    open_round(n=3, k=3)
    page.clock.install()
    sign_in(annotator.username)
    progress = page.locator("#progress")
    progress.filter(has_text="Round 1 · task 1 of 3 · 0 skipped").wait_for()
    first = answer_ids(page)
    page.get_by_role("button", name="Skip…").click()
    page.get_by_role("button", name="I lack the expertise").click()
    progress.filter(has_text="Round 1 · task 2 of 3 · 1 skipped").wait_for()
    page.wait_for_function(
        "id => document.querySelector('.answer').dataset.id !== id", arg=str(first[0])
    )
    ids = answer_ids(page)
    for index in range(3):
        focus_answer(page, index)
        page.keyboard.press(str(index + 1))
    score_all(page, ids)
    page.get_by_label("Better", exact=True).check()
    page.clock.fast_forward("10:00")  # ten minutes away from the keyboard
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)
    progress.filter(has_text="Round 1 · task 3 of 3 · 1 skipped").wait_for()
    page.locator("#stats").filter(has_text="Skipped: 1").wait_for()
    spent = Judgment.objects.get().time_spent_ms
    # The idle ten minutes count as at most the one-minute idle allowance.
    assert 0 < spent < 120_000, spent


def test_a_phone_ranks_by_tapping_without_sideways_scroll(
    browser, live_server, annotator, screenshot
):
    open_round(n=1, k=3)
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, base_url=live_server.url, has_touch=True
    )
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto("/login/")
    page.get_by_label("Username").fill(annotator.username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Sign in").click()
    a, b, c = answer_ids(page)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert in_viewport(page, page.get_by_role("button", name="Sign out"))
    assert in_viewport(page, page.get_by_role("button", name="Submit"))
    page.get_by_role("button", name="Answer B, rank 1").tap()
    page.get_by_role("button", name="Answer C, rank 2").tap()
    page.get_by_role("button", name="Answer A, rank 3").tap()
    words = page.locator("#ranking-words")
    assert words.inner_text() == "B is best; C is 2nd; A is 3rd."
    assert in_viewport(page, words)  # the ranking in words rides in the bar
    page.get_by_role("button", name="Tie… answer A with a rank").tap()
    page.get_by_role("button", name="Answer A, rank 2").tap()
    assert words.inner_text() == "B is best; A and C tie for 2nd."
    page.get_by_role("button", name="Undo").tap()
    assert words.inner_text() == "B is best; C is 2nd; A is 3rd."
    for cid in (a, b, c):
        for axis in AXES:
            page.locator(f'label[for="score-{cid}-{axis}-6"]').tap()
    page.get_by_label("Slightly better").check()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot("workspace-phone", of=page)
    page.get_by_role("button", name="Submit").tap()
    page.get_by_role("status").filter(has_text="Saved").wait_for()
    assert Judgment.objects.get().ranking == [[b], [c], [a]]
    context.close()


def test_skip_offers_reasons_and_says_when_one_is_missing(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    answer_ids(page)
    page.get_by_role("button", name="Skip…").click()
    page.get_by_role("button", name="Skip task").click()
    error = page.locator('[data-error-for="reason"]')
    assert error.inner_text().startswith("Say why you skip this task")
    assert page.evaluate("document.querySelector('#skip-reason').validationMessage") == ""
    assert Assignment.objects.get().status == "leased"
    page.get_by_role("button", name="Content I do not want to review").click()
    page.get_by_role("status").filter(has_text="Skipped").wait_for()
    skipped = Assignment.objects.get(status="skipped")
    assert skipped.skip_reason == "Content I do not want to review"
