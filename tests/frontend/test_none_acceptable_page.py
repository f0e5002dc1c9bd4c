"""'None of these is acceptable' in the browser (issue 20, point 4): in the annotator's
workspace a labelled control beside the ranking, reached and ticked from the keyboard, kept in
the draft, and stored with the judgment the annotator submits; on the research page the export
form's choice to keep such judgments' pairs."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from annotation.models import Judgment

from ..annotation.helpers import lease, submit_url, valid_body
from ..factories import open_round
from .test_workspace import AXES, answer_ids, wait_saved

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_annotator_ticks_none_acceptable_and_it_is_stored(sign_in, page, annotator):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    ids = answer_ids(page)
    # Still ranked: the order among bad answers counts too.
    for index, cid in enumerate(ids):
        page.locator(".answer").nth(index).focus()
        page.keyboard.press(str(index + 1))
        for axis in AXES:
            page.click(f'label[for="score-{cid}-{axis}-2"]')

    outcome = page.get_by_role("checkbox", name="None of these is acceptable")
    assert outcome.is_visible() and not outcome.is_checked()
    # The rubric flag that says the same is not offered beside it as a second way.
    assert page.get_by_label("Every answer is unacceptable").count() == 0
    outcome.focus()
    page.keyboard.press("Space")
    assert outcome.is_checked()
    page.locator("#checklist").filter(has_text="· none acceptable").wait_for()

    page.reload()  # the draft keeps it
    answer_ids(page)
    outcome = page.get_by_role("checkbox", name="None of these is acceptable")
    assert outcome.is_checked()
    page.get_by_label("Slightly better").check()
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)

    judgment = Judgment.objects.get()
    assert judgment.none_acceptable is True
    assert judgment.ranking == [[cid] for cid in ids]
    assert judgment.flags == ["all_bad"] and judgment.strength == "slightly_better"
    assert judgment.annotator == annotator


def test_the_researcher_keeps_them_from_the_export_form(sign_in, page, api, annotator, researcher):
    open_round(n=3, k=3, overlap=1)
    client = api(annotator)
    first = True
    while (task := lease(client)) is not None:
        body = {**valid_body(task), "none_acceptable": first}
        assert client.post(submit_url(task["assignment"]), body, format="json").status_code == 200
        first = False
    sign_in(researcher.username)
    # By default the pairs of the judgment that found nothing acceptable are not counted.
    expect(page.locator("#row-count")).to_have_text("6")
    page.get_by_text("More export filters").click()
    page.get_by_label("Keep their pairs too").check()
    page.get_by_role("button", name="Preview").click()
    page.wait_for_url(re.compile(r"include_none_acceptable=true"))
    assert page.get_by_label("Keep their pairs too").is_checked()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download JSONL").click()
    with open(download_info.value.path(), encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 3 * 3 and sum(row["none_acceptable"] for row in rows) == 3
