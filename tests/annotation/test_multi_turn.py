"""A multi-turn conversation end to end, as users meet it: an admin imports a chat whose last
turn is the user's, the annotator leases it with every earlier turn and compares the answers to
its last turn, a demonstration answers that turn, and every export format keeps the whole
conversation (the compared answers are only ever the final assistant turn)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from .helpers import lease, submit_url, valid_body

pytestmark = pytest.mark.django_db

CHAT = [
    {"role": "system", "content": "You are a patient maths tutor."},
    {"role": "user", "content": "What is 12 times 3?"},
    {"role": "assistant", "content": "12 times 3 is 36."},
    {"role": "user", "content": "And half of that?"},
]
ANSWERS = ["Half of 36 is 18.", "It is 6.", "18, since 36 / 2 = 18."]


def _import(client: Any) -> None:
    line = {
        "messages": CHAT,
        "completions": [{"text": text, "model": f"model-{i}"} for i, text in enumerate(ANSWERS)],
    }
    upload = io.BytesIO((json.dumps(line) + "\n").encode())
    upload.name = "chat.jsonl"
    response = client.post("/api/v1/prompts/import/", {"file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["completions_created"] == 3


def _export(client: Any, fmt: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/exports/preferences/", {"format": fmt})
    assert response.status_code == 200, response.content
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_a_conversation_is_judged_on_its_last_turn_and_every_format_keeps_the_rest(
    api, admin, annotator, researcher
):
    admin_client, annotator_client = api(admin), api(annotator)
    _import(admin_client)
    opened = admin_client.post("/api/v1/rounds/", {"k": 3, "overlap": 1}, format="json")
    assert opened.status_code == 201, opened.content

    task = lease(annotator_client)
    # Every earlier turn, the system's too (each also rendered, for the page's Markdown view).
    shown = [{"role": m["role"], "content": m["content"]} for m in task["prompt"]["messages"]]
    assert shown == CHAT
    assert sorted(c["text"] for c in task["completions"]) == sorted(ANSWERS)
    body = valid_body(task)
    best = task["completions"][0]["text"]
    worst = task["completions"][-1]["text"]
    saved = annotator_client.post(submit_url(task["assignment"]), body, format="json")
    assert saved.status_code == 200, saved.content

    # An SFT demonstration answers the last turn of the same conversation.
    offered = annotator_client.get("/api/v1/demonstrations/next/").json()
    assert [{"role": m["role"], "content": m["content"]} for m in offered["messages"]] == CHAT
    written = annotator_client.post(
        "/api/v1/demonstrations/",
        {"prompt": offered["prompt"], "text": "Half of 36 is 18."},
        format="json",
    )
    assert written.status_code == 201, written.content

    reader = api(researcher)
    assistant = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    trl = _export(reader, "trl")
    assert len(trl) == 3  # C(3, 2) pairs of the last turn's answers
    assert all(row["prompt"] == CHAT for row in trl)
    assert any(
        row["chosen"] == assistant(best) and row["rejected"] == assistant(worst) for row in trl
    )
    implicit = _export(reader, "trl_implicit")
    assert any(
        row["chosen"] == CHAT + assistant(best) and row["rejected"] == CHAT + assistant(worst)
        for row in implicit
    )
    hh = _export(reader, "hh_rlhf")
    history = (  # as Anthropic's text prompts: the system's text first, then the turns
        "You are a patient maths tutor."
        "\n\nHuman: What is 12 times 3?\n\nAssistant: 12 times 3 is 36."
        "\n\nHuman: And half of that?\n\nAssistant: "
    )
    assert any(row["chosen"] == history + best for row in hh), hh[0]["chosen"]
    ultra = _export(reader, "ultrafeedback")
    assert [(row["instruction"], row["prompt"]) for row in ultra] == [("And half of that?", CHAT)]
    assert sorted(c["response"] for c in ultra[0]["completions"]) == sorted(ANSWERS)
    kto = _export(reader, "kto")
    assert {row["completion"][0]["content"] for row in kto} >= {best, worst}
    assert all(row["prompt"] == CHAT for row in kto)
    judgments = _export(reader, "judgments")
    assert judgments[0]["prompt"] == CHAT
    sft = _export(reader, "sft")
    assert CHAT + assistant("Half of 36 is 18.") in [row["messages"] for row in sft]
