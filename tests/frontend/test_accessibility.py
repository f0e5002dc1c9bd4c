"""axe-core (vendored under vendor/axe-core) on the pages people work in all day: the
workspace with a task, the workspace revising a judgment, a phone-sized workspace, the
demonstration page and the research dashboard. No serious or critical violation is allowed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..factories import open_round
from .conftest import PAGE_TIMEOUT_MS
from .test_workspace import answer_ids, rank_all_and_score, wait_saved

pytestmark = pytest.mark.django_db(transaction=True)
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


@pytest.fixture
def audited(browser: Any, live_server: Any) -> Iterator[Any]:
    """A browser context that may inject axe: the pages' CSP forbids any script not served by
    the site itself, so this context alone bypasses it (the pages' own checks run elsewhere)."""
    contexts: list[Any] = []

    def open_page(username: str, viewport: dict[str, int] | None = None) -> Any:
        context = browser.new_context(
            viewport=viewport or {"width": 1280, "height": 800},
            base_url=live_server.url,
            bypass_csp=True,
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto("/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill("pw-for-tests")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)
        return page

    yield open_page
    for context in contexts:
        context.close()


def serious_violations(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5)}));
        }"""
    )
    return [
        f"{v['impact']}: {v['id']} ({v['help']}) at {v['nodes']}"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


def test_the_workspace_has_no_serious_violations(audited, annotator):
    open_round(n=2, k=3)
    page = audited(annotator.username)
    ids = answer_ids(page)
    page.locator(".answer").first.focus()
    page.keyboard.press("1")
    page.click(f'label[for="score-{ids[1]}-helpful-4"]')
    page.get_by_role("button", name="Submit").click()  # the banner and marked fields too
    page.locator("#banner").wait_for()
    page.get_by_role("button", name="Guidelines (g)").click()
    assert serious_violations(page) == []


def test_the_workspace_revising_a_judgment_has_no_serious_violations(audited, annotator):
    open_round(n=2, k=3)
    page = audited(annotator.username)
    rank_all_and_score(page, answer_ids(page))
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)
    page.get_by_role("button", name="Your recent judgments").click()
    page.get_by_role("button", name=re.compile(r"^Revise your judgment")).click()
    page.get_by_role("heading", name=re.compile(r"^Revising your judgment")).wait_for()
    assert serious_violations(page) == []


def test_the_workspace_on_a_phone_has_no_serious_violations(audited, annotator):
    open_round(n=1, k=3)
    page = audited(annotator.username, {"width": 390, "height": 844})
    answer_ids(page)
    page.get_by_role("button", name="Skip…").click()
    assert serious_violations(page) == []


def test_the_demonstration_page_has_no_serious_violations(audited, annotator):
    open_round(n=2, k=3)
    page = audited(annotator.username)
    page.goto("/demonstrate/")
    page.locator("#candidates article").first.wait_for()
    page.get_by_label("Ideal answer (Markdown)").fill("**An** answer")
    page.locator("#preview strong").wait_for()
    assert serious_violations(page) == []


def test_the_research_dashboard_has_no_serious_violations(audited, researcher, annotator):
    open_round(n=2, k=3)
    page = audited(researcher.username)
    page.goto("/research/")
    page.get_by_role("heading", level=1).first.wait_for()
    assert serious_violations(page) == []
