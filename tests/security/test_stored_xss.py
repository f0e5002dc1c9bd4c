"""Stored XSS: script-bearing text wherever a person or a model can put it (prompts and
completions from an import, an annotator's rationale, a username, a policy's name and paths, a
generation error and a training error that echo model output), and every page and API payload
that shows it to someone else. Each must show the text as text: no script, no event handler, no
javascript: link, no image that would make a request, and the escaped text itself present (so
the check is not vacuous).
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest

from annotation.models import ComparisonTask, Round
from feedback.models import PolicyVersion
from feedback.platform.roles import Role
from training.models import DatasetSnapshot, TrainingRun

from ..annotation.helpers import in_task_order, lease, submit_url, valid_body

pytestmark = pytest.mark.django_db

XSS = (
    '<script>alert("x")</script><img src=x onerror=alert(1)><svg onload=alert(2)>'
    ' [click](javascript:alert(3)) <a href="javascript:alert(4)">a</a>'
)
SHORT_XSS = '<script>alert("u")</script><img src=x onerror=alert(5)>'  # fits a username
ESCAPED = "&lt;script&gt;alert("  # how the payload's first tag reads once escaped
FORBIDDEN_TAGS = {"img", "iframe", "object", "embed", "frame", "base"}


class _Markup(HTMLParser):
    """Every element the browser would build, with its attributes (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))


def active_markup(html: str) -> list[str]:
    """What in ``html`` could run or fetch: scripts other than our own static files, inline
    event handlers, javascript: URLs, and tags that fetch or navigate."""
    parser = _Markup()
    parser.feed(html)
    found = []
    for tag, attrs in parser.elements:
        if tag == "script" and not attrs.get("src", "").startswith("/static/"):
            found.append(f"<script {attrs}>")
        if tag in FORBIDDEN_TAGS:
            found.append(f"<{tag} {attrs}>")
        for name, value in attrs.items():
            if name.startswith("on"):
                found.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action", "formaction", "xlink:href") and (
                value.strip().lower().replace("\t", "").startswith(("javascript:", "vbscript:"))
            ):
                found.append(f"<{tag} {name}={value!r}>")
    return found


def assert_shown_inert(html: str) -> None:
    assert active_markup(html) == []
    assert ESCAPED in html, "the payload should be on this page, escaped"


@pytest.fixture
def hostile(api: Any, admin: Any, annotator: Any, make_user: Any) -> dict[str, Any]:
    """A round of two prompts whose text and answers carry the payload, judged twice with
    opposite rankings (a disagreement, shown on the dashboard) by two annotators, one with a
    script for a username; a policy and a training run whose names and errors carry it."""
    lines = [
        json.dumps(
            {
                "prompt": f"{XSS} question {n}",
                "completions": [
                    {"text": f"{XSS} answer {i}", "model": XSS[:100]} for i in range(3)
                ],
            }
        )
        for n in range(2)
    ]
    admin_client = api(admin)
    response = admin_client.generic(
        "POST", "/api/v1/prompts/import/", "\n".join(lines).encode(),
        content_type="application/x-ndjson",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    response = admin_client.post("/api/v1/rounds/", {"k": 3, "overlap": 2}, format="json")
    assert response.status_code == 201, response.content
    round_ = Round.objects.get()

    second = make_user(Role.ANNOTATOR, username=SHORT_XSS)
    leased = {}
    for user, reverse in ((annotator, False), (second, True)):
        client = api(user)
        while (task := lease(client)) is not None:
            body = valid_body(in_task_order(task))  # the same completions, opposite ways
            body["rationale"] = XSS
            if reverse:
                body["ranking"] = body["ranking"][::-1]
            response = client.post(submit_url(task["assignment"]), body, format="json")
            assert response.status_code == 200, response.content
            leased.setdefault(user.username, task)  # what the workspace was given

    Round.objects.filter(pk=round_.pk).update(generation_error=XSS)
    policy = PolicyVersion.objects.create(
        name=XSS[:150], base_model=XSS[:200], adapter_path=XSS[:200],
        status=PolicyVersion.Status.EXTERNAL,
    )  # fmt: skip
    snapshot = DatasetSnapshot.objects.create(
        kind=DatasetSnapshot.Kind.PREFERENCE, path="snapshots/x", manifest={}, sha256="0" * 64
    )
    run = TrainingRun.objects.create(
        kind=TrainingRun.Kind.SFT, status=TrainingRun.Status.FAILED, base_policy=policy,
        snapshot=snapshot, recipe={}, error=XSS,
    )  # fmt: skip
    return {"round": round_, "task": ComparisonTask.objects.first(), "run": run, "leased": leased}


def page(client: Any, user: Any, url: str) -> str:
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def test_the_annotator_workspace_payload_is_sanitized(
    hostile: dict[str, Any], api: Any, annotator: Any
) -> None:
    """The workspace puts ``html`` into the page as markup: it must already be inert."""
    task = hostile["leased"][annotator.username]
    shown = [m["html"] for m in task["prompt"]["messages"]] + [
        c["html"] for c in task["completions"]
    ]
    for html in shown:
        assert_shown_inert(html)
        assert "<img" not in html and "<svg" not in html  # not even as inert tags
    assert all(c["text"].startswith(XSS) for c in task["completions"])  # raw text kept as data

    demo = api(annotator).get("/api/v1/demonstrations/next/")
    assert demo.status_code == 200, demo.content
    for html in [m["html"] for m in demo.json()["messages"]] + [
        c["html"] for c in demo.json()["completions"]
    ]:
        assert_shown_inert(html)


@pytest.mark.parametrize("url", ["/annotate/", "/demonstrate/"])
def test_annotator_pages_carry_no_data_markup(
    hostile: dict[str, Any], client: Any, annotator: Any, url: str
) -> None:
    """These pages fetch their data through the API; the HTML itself holds none of it."""
    html = page(client, annotator, url)
    assert active_markup(html) == [] and "alert(" not in html


def test_research_pages_show_every_hostile_text_escaped(
    hostile: dict[str, Any], client: Any, researcher: Any, admin: Any
) -> None:
    task = hostile["task"]
    for user in (researcher, admin):  # admins also see the usernames
        html = page(client, user, f"/research/tasks/{task.pk}/")
        assert_shown_inert(html)
        assert html.count(ESCAPED) >= 1 + 3 + 2  # the prompt, three answers, two rationales
    assert "&lt;script&gt;alert(&quot;u&quot;)" in page(
        client, admin, f"/research/tasks/{task.pk}/"
    )
    dashboard = page(client, researcher, "/research/")
    assert_shown_inert(dashboard)
    # The disagreement list and the export preview both quote the hostile text.
    assert dashboard.count(ESCAPED) >= 2


def test_the_admin_home_page_stays_inert(hostile: dict[str, Any], client: Any, admin: Any) -> None:
    assert active_markup(page(client, admin, "/manage/")) == []  # it quotes none of the texts


@pytest.mark.parametrize(
    "url",
    [
        "/manage/rounds/{round}/",
        "/manage/policies/",
        "/manage/training/",
        "/manage/training/{run}/",
    ],
)
def test_admin_pages_show_every_hostile_text_escaped(
    hostile: dict[str, Any], client: Any, admin: Any, url: str
) -> None:
    html = page(client, admin, url.format(round=hostile["round"].pk, run=hostile["run"].pk))
    assert_shown_inert(html)
