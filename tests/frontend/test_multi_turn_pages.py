"""A multi-turn conversation in the browser: the workspace and the demonstration page show every
earlier turn, each with its role, and the answers compared or written are the last turn's."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from annotation.imports import prompts_import
from annotation.rounds import round_open_from_imported

from ..annotation.test_multi_turn import ANSWERS, CHAT

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_pages_show_every_earlier_turn_and_compare_the_last(sign_in, page, annotator):
    line = {"messages": CHAT, "completions": [{"text": t, "model": "m"} for t in ANSWERS]}
    prompts_import(lines=[json.dumps(line)])
    round_open_from_imported(k=3, overlap=1, seed=1)
    sign_in(annotator.username)

    for path in ("/annotate/", "/demonstrate/"):
        page.goto(path)
        turns = page.locator("#thread > li")
        expect(turns).to_have_count(len(CHAT))
        for turn, message in zip(turns.all(), CHAT, strict=True):
            expect(turn.locator(".role")).to_have_text(message["role"])
            expect(turn).to_contain_text(message["content"])
        if path == "/annotate/":
            answers = page.locator(".answer")
            expect(answers).to_have_count(len(ANSWERS))
            shown = sorted(answer.inner_text() for answer in answers.all())
            assert all(any(text in card for card in shown) for text in ANSWERS)
