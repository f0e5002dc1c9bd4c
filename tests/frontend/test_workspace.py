"""The annotator's workspace in a real browser: ranking by keyboard and by mouse, rating,
submitting, server errors in place, inert hostile text, drafts, and a submit that loses its
connection."""

from __future__ import annotations

import re
from typing import Any

import pytest

from annotation.models import Assignment, Judgment
from annotation.rounds import round_open_from_imported
from feedback.models import Completion, PolicyVersion, Prompt, messages_hash

from ..factories import open_round
from .conftest import PAGE_TIMEOUT_MS

pytestmark = pytest.mark.django_db(transaction=True)
AXES = ("helpful", "honest", "harmless")


def answer_ids(page: Any) -> list[int]:
    page.locator(".answer").first.wait_for()
    return [
        int(x) for x in page.locator(".answer").evaluate_all("els => els.map(e => e.dataset.id)")
    ]


def wait_saved(page: Any) -> None:
    page.get_by_role("status").filter(has_text="Saved").wait_for()


def test_each_role_lands_on_its_page_and_can_sign_out(sign_in, page, annotator, admin, researcher):
    open_round(n=1)
    for user, path in ((annotator, "/annotate/"), (admin, "/manage/"), (researcher, "/research/")):
        sign_in(user.username)
        assert page.url.endswith(path)
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r"/login/$"))


def test_rank_and_rate_by_keyboard_alone(sign_in, page, annotator, screenshot):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    a, b, c = answer_ids(page)
    # Focus starts on answer A. 1 puts A first; B second; t then 2 ties C with B on purpose.
    page.keyboard.press("1")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("2")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("t")
    page.keyboard.press("2")
    assert page.locator(f'[data-rank-for="{c}"]').inner_text() == "2nd (tie with B)"
    page.keyboard.press("ArrowRight")  # wraps round to A
    scores = {a: (7, 6, 7), b: (3, 2, 6), c: (2, 5, 1)}
    for cid in (a, b, c):
        page.locator(f'.answer[data-id="{cid}"]').focus()
        for value in scores[cid]:
            # Tab past the card's tap-to-rank buttons to its next score.
            while not page.evaluate("() => document.activeElement.name || ''").startswith("score-"):
                page.keyboard.press("Tab")
            page.keyboard.press(str(value))
            page.keyboard.press("Tab")
    for _ in range(40):
        if page.evaluate("document.activeElement.name") == "strength":
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Space")  # the first label: significantly better
    screenshot("workspace")
    page.keyboard.press("Control+Enter")
    wait_saved(page)

    judgment = Judgment.objects.get()
    assert judgment.ranking == [[a], sorted([b, c])]
    assert judgment.scores == {
        str(cid): dict(zip(AXES, scores[cid], strict=True)) for cid in (a, b, c)
    }
    assert judgment.strength == "significantly_better"
    assert judgment.annotator == annotator
    assert judgment.time_spent_ms > 0
    # The next task is on the page without a reload, and the counts moved.
    page.wait_for_function("id => document.querySelector('.answer').dataset.id !== id", arg=str(a))
    page.locator("#stats").filter(has_text="Today: 1").wait_for()
    assert Assignment.objects.filter(status="leased").count() == 1


def test_rank_by_drag_and_drop_and_rate_with_the_mouse(sign_in, page, annotator):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    a, b, c = answer_ids(page)
    page.locator("#progress").filter(has_text="Round 1").wait_for()  # the page has settled
    words = page.locator("#ranking-words")
    page.drag_and_drop(f'.pool .chip[data-id="{c}"]', ".rank-row.new")
    words.filter(has_text="C is best").wait_for()
    page.drag_and_drop(f'.pool .chip[data-id="{a}"]', ".rank-row.new")
    words.filter(has_text="A is 2nd").wait_for()
    page.drag_and_drop(f'.pool .chip[data-id="{b}"]', '.insert[data-insert="0"]')
    assert page.locator(f'[data-rank-for="{b}"]').inner_text() == "Best"
    for cid in (a, b, c):
        for axis in AXES:
            page.click(f'label[for="score-{cid}-{axis}-4"]')
    page.get_by_label("Slightly better").check()
    page.get_by_label("Personal data").check()
    page.get_by_label("Rationale").fill("B is the only correct one")
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)
    judgment = Judgment.objects.get()
    assert judgment.ranking == [[b], [c], [a]]
    assert judgment.strength == "slightly_better"
    assert judgment.flags == ["pii"]
    assert judgment.rationale == "B is the only correct one"


def rank_all_and_score(page: Any, ids: list[int]) -> None:
    for index, cid in enumerate(ids):
        page.locator(".answer").nth(index).focus()
        page.keyboard.press(str(index + 1))
        for axis in AXES:
            page.click(f'label[for="score-{cid}-{axis}-5"]')
    page.get_by_label("Better", exact=True).check()


def test_page_checks_before_sending_and_shows_server_errors_by_their_field(
    sign_in, page, annotator
):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    ids = answer_ids(page)
    page.get_by_role("button", name="Submit").click()
    assert page.locator("#banner").inner_text() == (
        "Still missing: a rank for A, B, C; helpful for A, B, C; honest for A, B, C; "
        "harmless for A, B, C."
    )

    rank_all_and_score(page, ids)
    page.get_by_label("Rationale").fill("x" * 5001)  # only the server knows the limit
    page.get_by_role("button", name="Submit").click()
    error = page.locator('[data-error-for="rationale"]')
    error.filter(has_text="At most 5000 characters, got 5001.").wait_for()
    assert Judgment.objects.count() == 0


XSS = [
    '<script>window.__pwned = 1</script><img src="http://127.0.0.1:9/x.png" onerror="window.__pwned = 2">',
    '[click me](javascript:window.__pwned=3) <svg onload="window.__pwned = 4"></svg> <iframe src="http://127.0.0.1:9/"></iframe>',
    '**bold** <a href="javascript:alert(1)">link</a> <style>body { display: none }</style> ![img](http://127.0.0.1:9/i.png)',
]


def test_hostile_completion_text_is_shown_as_text_and_runs_nothing(
    sign_in, page, annotator, live_server
):
    policy = PolicyVersion.objects.create(name="hostile", status="external")
    messages = [{"role": "user", "content": 'Say <img src=x onerror="window.__pwned=5">'}]
    prompt = Prompt.objects.create(messages=messages, content_hash=messages_hash(messages))
    for i, text in enumerate(XSS):
        Completion.objects.create(prompt=prompt, policy_version=policy, sample_index=i, text=text)
    round_open_from_imported(k=3, overlap=1, seed=3)

    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))
    sign_in(annotator.username)
    answer_ids(page)
    text = page.locator("#task").inner_text()
    assert "<script>window.__pwned = 1</script>" in text
    assert '<svg onload="window.__pwned = 4"></svg>' in text
    page.get_by_label("Render Markdown").check()
    text = page.locator("#task").inner_text()
    assert '<svg onload="window.__pwned = 4"></svg>' in text  # raw HTML stays text in Markdown
    assert page.locator(".md strong").first.inner_text() == "bold"
    assert page.locator(".md script, .md img, .md svg, .md iframe, .md style").count() == 0
    hrefs = page.locator(".md a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert all(not (href or "").lower().startswith("javascript") for href in hrefs)
    for link in page.locator(".md a").all():
        link.click()
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert all(url.startswith(live_server.url) or url.startswith("data:") for url in requests), (
        requests
    )


def test_a_draft_survives_a_reload(sign_in, page, annotator):
    open_round(n=1, k=3)
    sign_in(annotator.username)
    a, b, c = answer_ids(page)
    page.keyboard.press("2")  # A 2nd, with nothing yet above it
    page.click(f'label[for="score-{b}-honest-3"]')
    page.get_by_label("Rationale").fill("half done")
    page.reload()
    assert answer_ids(page) == [a, b, c]
    assert page.locator(f'[data-rank-for="{a}"]').inner_text() == "2nd"
    assert page.locator("#ranking-words").inner_text() == (
        "no answer is best yet; A is 2nd. Not ranked yet: B, C."
    )
    assert page.locator(f"#score-{b}-honest-3").is_checked()
    assert page.get_by_label("Rationale").input_value() == "half done"
    assert Assignment.objects.count() == 1


def test_a_submit_whose_answer_is_lost_is_retried_and_stored_once(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    ids = answer_ids(page)
    calls: list[str] = []

    def lose_the_first_answer(route: Any) -> None:
        calls.append(route.request.post_data)
        if len(calls) == 1:
            route.fetch()  # the server stores the judgment...
            route.abort("connectionreset")  # ...and the reply never reaches the page
        else:
            route.continue_()

    page.route("**/submit/", lose_the_first_answer)
    rank_all_and_score(page, ids)
    page.get_by_role("button", name="Submit").click()
    wait_saved(page)
    assert len(calls) == 2 and calls[0] == calls[1]
    assert Judgment.objects.count() == 1
    assert Judgment.objects.get().ranking == [[ids[0]], [ids[1]], [ids[2]]]


def test_skip_asks_for_a_reason(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    first = answer_ids(page)
    page.keyboard.press("s")
    page.get_by_label("Or in your own words").fill("The prompt is unclear or broken")
    page.get_by_role("button", name="Skip task").click()
    page.get_by_role("status").filter(has_text="Skipped").wait_for()
    page.wait_for_function(
        "id => document.querySelector('.answer').dataset.id !== id", arg=str(first[0])
    )
    assert Assignment.objects.get(status="skipped").skip_reason == "The prompt is unclear or broken"


def test_workspace_fits_a_tablet(browser, live_server, annotator):
    open_round(n=1, k=3)
    context = browser.new_context(viewport={"width": 820, "height": 1180}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto("/login/")
    page.get_by_label("Username").fill(annotator.username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Sign in").click()
    answer_ids(page)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    context.close()
