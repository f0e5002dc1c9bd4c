"""Writing demonstrations in a real browser (issue 15, point 9): the model's answers are shown
before one starts from them, the answer is previewed as Markdown, the guidelines say what an
ideal answer is, a prompt can be skipped with a reason, and the last demonstration can be
edited while its round is open."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from annotation.models import Demonstration, DemonstrationSkip, Round
from feedback.models import Completion

from ..factories import open_round

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_answers_guidelines_and_a_preview_come_before_saving(
    sign_in, page, annotator, screenshot
):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    page.goto("/demonstrate/")
    candidates = page.locator("#candidates")
    answer_b = candidates.get_by_role("article", name="Answer B")
    answer_b.wait_for()
    shown = answer_b.locator("[data-text-for]")
    completion = Completion.objects.get(pk=int(shown.get_attribute("data-text-for")))
    assert shown.inner_text() == completion.text  # read before starting from it
    ideal = page.locator("#ideal")
    assert "Fully solves the request, clearly and concisely" in ideal.inner_text()
    assert "Polite and respectful" in ideal.inner_text()

    answer = page.get_by_label("Ideal answer (Markdown)")
    answer.fill("The sum is **2**.\n\n- first\n- second")
    preview = page.locator("#preview")
    preview.locator("strong").filter(has_text="2").wait_for()
    assert preview.locator("li").all_inner_texts() == ["first", "second"]
    screenshot("demonstrate", full_page=True)
    answer_b.get_by_role("button", name="Start from answer B").click()
    expect(answer).to_have_value(completion.text)
    page.get_by_role("button", name="Save and next").click()
    page.get_by_text("Saved. Here is the next prompt.").wait_for()
    saved = Demonstration.objects.get()
    assert (saved.text, saved.source_completion_id) == (completion.text.strip(), completion.pk)


def test_skip_a_prompt_with_a_reason_and_it_is_not_offered_again(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    page.goto("/demonstrate/")
    page.locator("#candidates article").first.wait_for()
    first_prompt = page.locator("#thread").inner_text()
    page.get_by_role("button", name="Skip…").click()
    page.get_by_role("button", name="Skip prompt").click()
    expect(page.locator('[data-error-for="reason"]')).to_contain_text("Say why you skip")
    assert DemonstrationSkip.objects.count() == 0
    page.get_by_role("button", name="I lack the expertise").click()
    page.get_by_text("Skipped: you will not be offered this prompt again.").wait_for()
    skip = DemonstrationSkip.objects.get()
    assert (skip.annotator, skip.reason) == (annotator, "I lack the expertise")
    expect(page.locator("#thread")).not_to_have_text(first_prompt, use_inner_text=True)
    page.reload()
    page.locator("#candidates article").first.wait_for()
    expect(page.locator("#thread")).not_to_have_text(first_prompt, use_inner_text=True)


def test_edit_my_last_demonstration_while_its_round_is_open(sign_in, page, annotator):
    round_ = open_round(n=2, k=3)
    sign_in(annotator.username)
    page.goto("/demonstrate/")
    answer = page.get_by_label("Ideal answer (Markdown)")
    page.locator("#candidates article").first.wait_for()
    answer.fill("My first try.")
    page.get_by_role("button", name="Save and next").click()
    page.get_by_text("Saved. Here is the next prompt.").wait_for()

    page.get_by_role("button", name="Edit my last demonstration").click()
    page.get_by_role("heading", name="Edit your last demonstration").wait_for()
    expect(answer).to_have_value("My first try.")
    answer.fill("My better answer.")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("Changes saved.").wait_for()
    edited = Demonstration.objects.get()
    assert edited.text == "My better answer." and edited.edited_at is not None

    Round.objects.filter(pk=round_.pk).update(status=Round.Status.CLOSED)
    page.reload()
    page.get_by_role("button", name="Edit my last demonstration").click()
    page.get_by_text("You have no demonstration in an open round to edit.").wait_for()
