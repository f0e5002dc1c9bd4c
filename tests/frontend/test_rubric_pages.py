"""Rubric versions in a browser: an admin makes a new version from the old one's form (a mistake
first, named by its field), opens a round under it, and the annotator is shown the new axis."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from annotation.models import Round, Rubric

from ..factories import prompts_with_completions


@pytest.mark.django_db(transaction=True)
def test_admin_makes_a_version_and_opens_a_round_under_it(
    sign_in, sign_in_elsewhere, page, admin, annotator
):
    prompts_with_completions(2, 3)
    v1 = Rubric.objects.get(name="3H", version=1)
    sign_in(admin.username)
    page.goto("/manage/rubrics/")
    page.get_by_role("link", name="New version from 3H@1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("(will be 3H@2)")

    axes = json.loads(page.get_by_label("Axes").input_value())
    assert axes == v1.axes  # the old version's fields, to change what is needed
    concise = {
        "key": "concise",
        "label": "Concise",
        "question": "Is it as short as it can be?",
        "min": 1,
        "max": 3,
        "guidelines": {"1": "Rambles.", "2": "Some padding."},  # "3" forgotten
    }
    page.get_by_label("Axes").fill(json.dumps([*axes, concise], indent=2))
    page.get_by_role("button", name="Make 3H@2").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(
        "axes.3.guidelines.3: Missing: every score of the scale needs its description."
    )
    expect(page.get_by_label("Axes")).to_have_attribute("aria-invalid", "true")
    assert Rubric.objects.count() == 1  # nothing saved

    concise["guidelines"]["3"] = "Nothing to cut."
    page.get_by_label("Axes").fill(json.dumps([*axes, concise], indent=2))
    page.get_by_role("button", name="Make 3H@2").click()
    expect(page.locator(".messages")).to_contain_text("Made 3H@2")
    expect(page.get_by_role("heading", level=1)).to_have_text("Rubric 3H@2")
    expect(page.get_by_role("heading", name="Concise (1\u20133, concise)")).to_be_visible()
    assert Rubric.objects.get(name="3H", version=1).axes == v1.axes  # never rewritten

    # Open a round from the imported completions, under 3H@2 (the newest, so already chosen).
    page.goto("/manage/")
    expect(page.get_by_label("Judged under")).to_have_value(str(Rubric.objects.get(version=2).pk))
    page.get_by_label("imported files").check()
    page.get_by_label("Judgments per task (overlap)").fill("1")
    page.get_by_role("button", name="Open round").click()
    expect(page.locator(".messages")).to_contain_text("Opened round")
    assert Round.objects.get().rubric.label == "3H@2"

    # The annotator, in a browser of their own, is asked the new axis on its three-point scale.
    annotator_page = sign_in_elsewhere(annotator.username)
    answer = annotator_page.locator(".answer").first
    expect(answer).to_contain_text("Concise")
    expect(answer.locator("input[type=radio][name$='-concise']")).to_have_count(3)
