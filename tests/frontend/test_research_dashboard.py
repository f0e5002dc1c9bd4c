"""The researcher dashboard, a task's page (with the admin's gold form) and a snapshot's datasheet.

Judgments go in through the API as annotators make them; the pages are read with Django's test
client, and in a browser as researchers and admins use them: following a disagreement to its
task, reading why agreement, disagreements and trust are empty (and following the admin's link
to the round's overlap), and who is behind each pseudonym (admins only).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect
from pytest_django.asserts import assertContains, assertNotContains

from annotation.exports import annotator_pseudonym
from annotation.gold import task_mark_gold
from annotation.models import ComparisonTask, Judgment
from annotation.rounds import round_close
from feedback.models import Completion
from feedback.platform.roles import Role
from training.models import DatasetSnapshot
from training.snapshots import snapshot_create_preference

from ..annotation.helpers import in_task_order, lease, submit_url, valid_body
from ..factories import open_round

RESEARCH = "/research/"


def judge_all(
    api: Any,
    user: Any,
    *,
    reverse: bool = False,
    flags: list[str] | None = None,
    swap: bool = False,
    only: Callable[[int], bool] = lambda task_id: True,
    limit: int | None = None,
) -> int:
    """Judge every task the user is offered (at most ``limit``): ranked in shown order and
    scored 7, 6, 5 by position; on the tasks ``only`` picks, reversed (ranking and scores),
    with the top two swapped, and raising ``flags``. Returns how many."""
    client, count = api(user), 0
    while (limit is None or count < limit) and (task := lease(client)) is not None:
        task = in_task_order(task)  # every annotator ranks the same completions the same way
        body = valid_body(task)
        if only(task["task"]):
            ids = [c["id"] for c in task["completions"]]
            if reverse:
                body["ranking"] = body["ranking"][::-1]
                body["scores"] = {
                    str(a): body["scores"][str(b)] for a, b in zip(ids, ids[::-1], strict=True)
                }
            if swap:
                body["ranking"][:2] = body["ranking"][1::-1]
                body["scores"][str(ids[0])] = {
                    k: v - 2 for k, v in body["scores"][str(ids[0])].items()
                }
            body["flags"] = flags or []
        response = client.post(submit_url(task["assignment"]), body, format="json")
        assert response.status_code == 200, response.content
        count += 1
    return count


@pytest.fixture
def split_round(api: Any, annotator: Any, annotator2: Any) -> list[ComparisonTask]:
    """Three tasks judged by two annotators who rank every one in opposite orders (annotator2
    also flags personal data on each); then the first task becomes gold with annotator's
    ranking, so annotator is right on gold and annotator2 wrong."""
    open_round(n=3, k=3, overlap=2)
    assert judge_all(api, annotator) == 3
    assert judge_all(api, annotator2, reverse=True, flags=["pii"]) == 3
    tasks = list(ComparisonTask.objects.order_by("id"))
    gold = Judgment.objects.get(task=tasks[0], annotator=annotator).ranking
    task_mark_gold(task_id=tasks[0].pk, ranking=gold)
    return tasks


def test_dashboard_charts_agreement_scores_flags_trust_and_disagreements(
    client, postgres, researcher, annotator, annotator2, split_round
):
    client.force_login(researcher)
    response = client.get(RESEARCH)
    assert response.status_code == 200
    html = response.content.decode()
    # Charts: agreement, one histogram per 3H axis, flags; each an image with a name.
    charts = re.findall(r'<svg class="chart[^"]*"[^>]*role="img" aria-label="([^"]+)"', html)
    assert len(charts) == 1 + 3 + 1, charts
    assert charts[0].startswith("Line chart of Krippendorff's alpha")
    assert html.count("<polyline points=") == 0  # one round: points, no lines
    assert html.count("<circle ") == 5  # ranking, three axes and pairwise, for round 1
    # Two opposite rankings on the two ordinary tasks: every pair direction disagrees; the
    # Wilson upper bound for 0 of 6 is z²/(n + z²) = 3.84 / 9.84 = 0.39.
    assertContains(
        response,
        '<td>0.00 <span class="hint">(0.00 to 0.39; 6 pairs)</span></td>',
        html=True,
    )
    # Scores 7, 6 and 5 by position from both annotators on 3 tasks: six of each on each axis.
    assertContains(
        response,
        '<tr><th scope="row">Helpful</th><td>0</td><td>0</td><td>0</td><td>0</td>'
        "<td>6</td><td>6</td><td>6</td></tr>",
        html=True,
    )
    today = Judgment.objects.first().created_at.strftime("%Y-%m-%d")
    assertContains(response, f'<tr><th scope="row">{today}</th><td>3</td></tr>', html=True)
    assert "Personal data" in html
    # Trust: researchers see pseudonyms, never usernames; annotator2 is lowest, listed first.
    first, second = annotator_pseudonym(annotator2.pk), annotator_pseudonym(annotator.pk)
    assert html.index(first) < html.index(second)
    assert "ann1" not in html and "ann2" not in html
    assertNotContains(response, 'id="who-is-who"')
    assertContains(response, '<td>3 <span class="hint">(1 gold)</span></td>', count=2, html=True)
    # The ordinary tasks are disagreements, linked; the gold one is not.
    for task in split_round[1:]:
        assertContains(response, f'<a href="/research/tasks/{task.pk}/">Task {task.pk}</a>')
    assertNotContains(response, f'href="/research/tasks/{split_round[0].pk}/"')
    # The export preview keeps working.
    assert re.search(r'<strong id="row-count">18</strong>', html)
    assert 'href="/api/v1/exports/preferences/?format=trl"' in html


def test_admins_see_usernames_and_researchers_flagged_annotators(
    client, postgres, admin, annotator, annotator2, split_round, settings
):
    settings.TRUST_MIN_PAIRS, settings.TRUST_REVIEW_BELOW = 1, 0.3
    client.force_login(admin)
    response = client.get(RESEARCH)
    # The trust table names each annotator beside the pseudonym the exports carry; the export
    # preview shows what the export writes, pseudonyms, with "who is who" beside it.
    pseudonym = annotator_pseudonym(annotator2.pk)
    assertContains(
        response, f'<td class="username">ann2</td><td><code>{pseudonym}</code></td>', html=True
    )
    assertContains(
        response, f"<tr><td><code>{pseudonym}</code></td><td>ann2</td></tr>", count=1, html=True
    )
    # annotator2: gold 0 of 3 pairs, agreement 0 of 6: trust (0 + 0 + 2) / (6 + 6 + 4) = 0.125;
    # annotator: (2 * 3 + 0 + 2) / 16 = 0.5, above the review line.
    assertContains(response, '<span class="badge warn">flagged for review</span>', count=1)
    assertContains(response, "<td>0.13</td>", html=True)
    assertContains(response, "<td>0.50</td>", html=True)


def test_export_section_lists_every_format_and_passes_the_filters_on(
    client, postgres, researcher, annotator, annotator2, split_round
):
    from annotation.exports import FORMATS

    client.force_login(researcher)
    page = client.get(RESEARCH)
    for name, spec in FORMATS.items():
        assertContains(page, f'<option value="{name}"', count=1)
        assertContains(page, spec.description)
    # Per-axis ratings of the judgments that raised "pii": the flag is checked as the six
    # judgments stream by, and annotator2's three rows come out.
    response = client.get(RESEARCH, {"format": "ultrafeedback", "round": "1", "flag": "pii"})
    assertContains(response, '<strong id="row-count">6</strong> judgments to read (one row per')
    assertContains(response, '<th scope="col">instruction</th>', html=True)
    html = response.content.decode()
    assert html.count("<tr><td>What is") == 3
    assert html.count(f"<td>{annotator_pseudonym(annotator2.pk)}</td>") == 3
    assertContains(
        response,
        'href="/api/v1/exports/preferences/?format=ultrafeedback&amp;round=1&amp;flag=pii"',
    )
    assertContains(response, '<input type="checkbox" name="flag" value="pii" checked>', html=True)
    bad = client.get(RESEARCH, {"min_trust": "2"})
    assert bad.status_code == 200
    assertContains(bad, "Must be a number from 0 to 1, got &#x27;2&#x27;.", count=2)
    assertContains(bad, 'aria-invalid="true"', count=1)


@pytest.mark.parametrize("persona", ["annotator", "outsider"])
def test_annotators_and_outsiders_are_refused(client, db, request, persona):
    task = open_round(n=1, k=3).tasks.get()
    snapshot = DatasetSnapshot.objects.create(kind="export", path="snapshots/x", sha256="0" * 64)
    client.force_login(request.getfixturevalue(persona))
    for path in (
        RESEARCH,
        f"/research/tasks/{task.pk}/",
        f"/research/snapshots/{snapshot.pk}/",
    ):
        assert client.get(path).status_code == 403, path
    client.logout()
    assert client.get(RESEARCH)["Location"].startswith("/login/")


def test_task_page_shows_the_answers_safely_and_every_judgment(
    client, postgres, researcher, annotator, annotator2, split_round
):
    task = split_round[1]
    first = task.slots.order_by("position").first()
    Completion.objects.filter(pk=first.completion_id).update(
        text="<script>alert(1)</script> **sure**"
    )
    client.force_login(researcher)
    response = client.get(f"/research/tasks/{task.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; <strong>sure</strong>" in html
    assert html.index("Answer A") < html.index("Answer B") < html.index("Answer C")
    for user in (annotator, annotator2):
        assert annotator_pseudonym(user.pk) in html
    assertContains(response, '<strong class="ranking">A &gt; B &gt; C</strong>', html=True)
    assertContains(response, '<strong class="ranking">C &gt; B &gt; A</strong>', html=True)
    assertContains(response, '<span class="badge warn">Personal data</span>', count=1, html=True)
    assertContains(response, "first is clearly right", count=2)
    assertContains(response, '<span class="big" id="task-agreement">0.00</span>', html=True)
    # Opposite rankings, equal weights: the consensus ties all three.
    assertContains(response, '<strong id="consensus">A = B = C</strong>', html=True)
    assertNotContains(response, 'id="gold-title"')  # the gold form is for admins


def test_admin_marks_a_task_gold_and_unmarks_it_through_the_form(
    client, postgres, admin, researcher, split_round
):
    task = split_round[1]
    ids = list(task.slots.order_by("position").values_list("completion_id", flat=True))
    url = f"/research/tasks/{task.pk}/gold/"
    client.force_login(researcher)
    assert client.post(url, {"ranking": "A > B > C"}).status_code == 403
    client.force_login(admin)
    page = client.get(f"/research/tasks/{task.pk}/")
    assertContains(page, "Mark as gold")

    bad = client.post(url, {"ranking": "A > Z"})
    assert bad.status_code == 400
    assertContains(
        bad, "&#x27;Z&#x27; is neither a completion id nor an answer letter.", status_code=400
    )
    assertContains(bad, 'value="A &gt; Z"', status_code=400)
    missing = client.post(url, {"ranking": f"{ids[0]} > {ids[1]}"})
    assertContains(
        missing, f"Every completion must be ranked; missing: [{ids[2]}].", status_code=400
    )

    response = client.post(url, {"ranking": f"C > {ids[1]} = A"}, follow=True)
    assertContains(response, f"Task {task.pk} is gold: C &gt; A = B.")
    assertContains(response, '<strong id="gold-ranking">C &gt; A = B</strong>', html=True)
    task.refresh_from_db()
    assert task.gold_ranking == [[ids[2]], sorted(ids[:2])]

    response = client.post(url, {"action": "unmark"}, follow=True)
    assertContains(response, f"Task {task.pk} is an ordinary task again.")
    task.refresh_from_db()
    assert task.gold_ranking is None


def test_datasheet_page_renders_the_readme_or_else_the_manifest(
    client, researcher, settings, tmp_path
):
    settings.ARTIFACTS_DIR = tmp_path
    folder = tmp_path / "snapshots" / "abc"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n---\n# Preference pairs, rounds 1 to 2\n\n"
        "| split | rows |\n|---|---|\n| train | 40 |\n\nA prompt said <script>x()</script>.\n"
    )
    manifest = {"rows": {"train": 40, "eval": 4}, "source_rounds": [1, 2]}
    with_sheet = DatasetSnapshot.objects.create(
        kind="preference", path="snapshots/abc", manifest=manifest, sha256="a" * 64
    )
    without = DatasetSnapshot.objects.create(
        kind="export", path="../../outside", manifest=manifest, sha256="b" * 64
    )
    client.force_login(researcher)
    response = client.get(f"/research/snapshots/{with_sheet.pk}/")
    assertContains(response, "<h1>Preference pairs, rounds 1 to 2</h1>", html=True)
    assertContains(response, "<td>40</td>", html=True)
    assertContains(response, "&lt;script&gt;x()&lt;/script&gt;")
    assertNotContains(response, "config_name")

    response = client.get(f"/research/snapshots/{without.pk}/")
    assertContains(response, '<th scope="row">source_rounds</th>', html=True)
    assertContains(response, "<code>[1, 2]</code>", html=True)
    assert client.get("/research/snapshots/999999/").status_code == 404

    listing = client.get(RESEARCH)
    assertContains(listing, f'<a href="/research/snapshots/{with_sheet.pk}/">')
    assertContains(listing, f'<a href="/research/snapshots/{without.pk}/">')


@pytest.mark.django_db(transaction=True)
def test_researcher_follows_a_disagreement_to_its_task(
    sign_in, page, researcher, annotator, annotator2, make_user, api, screenshot, settings, tmp_path
):
    annotator3 = make_user(Role.ANNOTATOR, username="ann3")
    first, second = open_round(n=4, k=3, overlap=3), open_round(n=4, k=3, overlap=3)
    # Which tasks an annotator departs on goes by the task's place (ids differ run to run).
    place = {
        pk: i
        for i, pk in enumerate(ComparisonTask.objects.order_by("pk").values_list("pk", flat=True))
    }
    judge_all(api, annotator)
    # Round 1 is noisy, round 2 less so: the chart should show agreement rising.
    judge_all(api, annotator2, swap=True, only=lambda t: place[t] in (1, 3))
    judge_all(
        api, annotator3, reverse=True, flags=["prompt_issue"], only=lambda t: place[t] in (0, 3, 6)
    )
    gold = first.tasks.order_by("pk").first()
    task_mark_gold(
        task_id=gold.pk, ranking=Judgment.objects.get(task=gold, annotator=annotator).ranking
    )
    sign_in(researcher.username)
    assert page.locator("svg.agreement polyline").count() == 5
    assert page.locator("table.trust tbody tr").count() == 3
    screenshot("research-dashboard", full_page=True)

    row = page.locator("table.disagreements tbody tr").first
    agreement = row.locator("td").nth(4).inner_text()
    link = row.get_by_role("link")
    task_id = link.inner_text().removeprefix("Task ")
    link.click()
    page.wait_for_url(f"**/research/tasks/{task_id}/")
    expect(page.locator("h1")).to_contain_text(re.compile(rf"^\s*Task {task_id}\b"))
    expect(page.locator("article.judgment")).to_have_count(3)
    expect(page.locator("#task-agreement")).to_have_text(agreement)
    expect(page.locator("#consensus")).not_to_be_empty()

    # A real snapshot with the datasheet the snapshot service writes, listed on the dashboard.
    # (Under the default artifacts root, inside the checkout: the card shows a relative path.)
    snapshot = snapshot_create_preference(rounds=[first.number, second.number])
    page.goto(RESEARCH)
    page.get_by_role("link", name=f"Snapshot {snapshot.pk}").click()
    page.wait_for_url(f"**/research/snapshots/{snapshot.pk}/")  # not the page the link was on
    sheet = page.locator("article.datasheet")
    expect(sheet.locator("h1")).to_have_count(1)
    assert sheet.locator("h2").count() >= 3
    expect(sheet).not_to_contain_text("config_name")
    screenshot("datasheet", full_page=True)


def section(page: Any, title_id: str) -> Any:
    return page.locator(f'section[aria-labelledby="{title_id}"]')


@pytest.mark.django_db(transaction=True)
def test_researcher_reads_why_agreement_is_empty_and_what_trust_and_margins_are(
    sign_in, page, researcher, annotator, annotator2, api, screenshot
):
    # Round 1 asks for one judgment per task; round 2 for two, but only one annotator has
    # been through it so far.
    open_round(n=2, k=3, overlap=1)
    open_round(n=3, k=3, overlap=2)
    assert judge_all(api, annotator) == 5
    sign_in(researcher.username)

    agreement = page.locator("#agreement-empty")
    expect(agreement).to_contain_text(
        "Agreement needs tasks judged by at least two annotators; no task has two judgments yet."
    )
    expect(agreement.locator("li.overlap-single")).to_have_text(
        "Round 1 has overlap 1: each task is judged by one annotator only, so there is nothing "
        "to compare. An admin sets the overlap (judgments per task) when opening a round; it "
        "takes 2 or more.",
        use_inner_text=True,
    )
    expect(agreement.locator("li.overlap-waiting")).to_have_text(
        "Round 2 has overlap 2, but 0 of its 3 tasks have two or more judgments so far "
        "(3 judgments in): it fills in as more annotators take its tasks.",
        use_inner_text=True,
    )
    # A researcher cannot open the admin's pages, so nothing links there.
    expect(agreement.get_by_role("link")).to_have_count(0)
    expect(page.locator("#disagreements-empty")).to_contain_text(
        "Disagreements need tasks judged by at least two annotators"
    )
    expect(page.locator("#disagreements-empty li")).to_have_count(2)
    expect(page.locator("table.disagreements")).to_have_count(0)
    # Trust is there (it rests on gold too), and says what it is and what it lacks here.
    trust = section(page, "trust-title")
    expect(trust.locator("table.trust tbody tr")).to_have_count(1)
    expect(trust.locator("#trust-explained")).to_contain_text(
        "Trust is the share of pair decisions on which an annotator agrees with the reference "
        "ranking of gold tasks"
    )
    times = "\N{MULTIPLICATION SIGN}"
    expect(trust).to_contain_text(f"trust = (2 {times} gold hits + agreement hits + 4 {times} 0.5)")
    expect(trust.locator("#trust-empty")).to_contain_text("so trust here rests on gold tasks alone")
    # The preview's margins are explained with the rubric's own strength margins.
    margins = page.locator("#margin-explained")
    expect(margins).to_contain_text("margin says how sure a preference is, from 0 to 1.")
    expect(margins).to_contain_text("Significantly better 1, Better 0.6667, Slightly better 0.3333")
    expect(margins).to_contain_text("divided by the scale's width (6)")
    screenshot("research-empty-states", full_page=True)

    # Pairs cut from one axis's scores have a margin of their own.
    page.get_by_text("More export filters").click()
    page.get_by_label("Pairs from").select_option(label="the Honest scores")
    page.get_by_role("button", name="Preview").click()
    expect(margins).to_have_text(
        "margin says how sure a preference is, from 0 to 1. It is the gap between the two "
        "answers' Honest scores divided by the scale's width (6).",
        use_inner_text=True,
    )
    # So do the pairs of a task's consensus.
    page.get_by_label("Pairs from").select_option(label="the ranking")
    page.get_by_label("Several judgments of a task").select_option(value="bradley_terry")
    page.get_by_role("button", name="Preview").click()
    expect(margins).to_contain_text(
        f"On a task judged several times it is 2 {times} P(chosen beats rejected)"
    )
    expect(margins).to_contain_text(
        "Terry consensus; on a task judged once it is the judgment's own margin."
    )

    # Choosing round 2 alone leaves its reason alone.
    page.goto(RESEARCH)
    page.get_by_label("Round 2").check()
    page.get_by_role("button", name="Preview").click()
    page.wait_for_url("**/research/?round=2*")
    expect(agreement.locator("li")).to_have_count(1)
    expect(agreement.locator("li.overlap-waiting")).to_contain_text("Round 2 has overlap 2")

    # A second annotator judges one of round 2's tasks the other way round: now there is
    # agreement to chart and a disagreement to list; round 1 is still said to lack overlap.
    assert judge_all(api, annotator2, reverse=True, limit=1) == 1
    page.goto(RESEARCH)
    expect(page.locator("svg.agreement")).to_have_count(1)
    expect(page.locator("#agreement-empty")).to_have_count(0)
    missing = page.locator("#agreement-missing")
    expect(missing).to_contain_text("Some rounds have no agreement yet")
    expect(missing.locator("li")).to_have_count(1)
    expect(missing.locator("li.overlap-single")).to_contain_text("Round 1 has overlap 1")
    expect(page.locator("table.disagreements tbody tr")).to_have_count(1)
    expect(page.locator("#trust-empty")).to_have_count(0)

    # Nowhere on the researcher's pages is an annotator named: pseudonyms only, and no
    # "who is who" beside the preview.
    expect(page.locator("#who-is-who")).to_have_count(0)
    task_id = page.locator("table.disagreements tbody tr").get_by_role("link").inner_text()
    for path in (RESEARCH, f"/research/tasks/{task_id.removeprefix('Task ')}/"):
        page.goto(path)
        text = page.content()
        assert annotator_pseudonym(annotator.pk) in text
        assert "ann1" not in text and "ann2" not in text, path


@pytest.mark.django_db(transaction=True)
def test_admin_follows_the_reason_to_the_round_and_sees_who_is_who(
    sign_in, page, admin, annotator, annotator2, api, screenshot
):
    single = open_round(n=2, k=3, overlap=1)
    waiting = open_round(n=3, k=3, overlap=2)
    judge_all(api, annotator)
    judge_all(api, annotator2, limit=1)  # a task of round 2 done twice: agreement there
    # Round 3 asks for three judgments per task but was closed before anyone took one.
    round_close(round_id=open_round(n=2, k=3, overlap=3).pk)
    sign_in(admin.username)
    page.goto(RESEARCH)

    missing = page.locator("#agreement-missing")
    expect(missing.locator("li")).to_have_count(2)
    expect(missing.locator("li.overlap-waiting")).to_have_text(
        "Round 3 has overlap 3, but 0 of its 2 tasks have two or more judgments so far "
        "(0 judgments in), and it is closed.",
        use_inner_text=True,
    )
    reason = missing.locator("li.overlap-single")
    expect(reason).to_contain_text(
        "Round 1 has overlap 1: each task is judged by one annotator only, so there is nothing "
        "to compare. The overlap (judgments per task) is set when a round is opened: open the "
        "next one on Manage with an overlap of 2 or more."
    )
    expect(reason.get_by_role("link", name="Manage")).to_have_attribute("href", "/manage/")
    reason.get_by_role("link", name="1", exact=True).click()
    page.wait_for_url(f"**/manage/rounds/{single.pk}/")
    expect(page.get_by_text("1 judgment per task")).to_be_visible()

    # Round 2 alone: one of its tasks is judged twice, so it has agreement and no reason.
    page.goto(f"{RESEARCH}?round={waiting.number}")
    expect(missing).to_have_count(0)
    expect(page.locator("#agreement-empty")).to_have_count(0)
    expect(page.locator("table.agreement-table tbody tr td").first).to_have_text("1")

    # Who is who: the usernames behind the pseudonyms, for admins, beside the preview.
    page.goto(RESEARCH)
    # (annotator2 ranked round 2's task as annotator did: judged twice, yet no disagreement)
    expect(page.locator("#disagreements-empty")).to_have_text(
        "No disagreements: on the 1 task judged twice or more, the annotators agree on every "
        "pair they both ordered."
    )
    who = page.locator("#who-is-who")
    expect(who.locator("table")).to_be_hidden()
    who.get_by_text("Who is who").click()
    for user in (annotator, annotator2):
        row = who.locator("tbody tr", has_text=annotator_pseudonym(user.pk))
        expect(row.locator("td").nth(1)).to_have_text(user.username)
    expect(page.locator("table.preview")).to_contain_text(annotator_pseudonym(annotator.pk))
    trust_row = page.locator("table.trust tbody tr", has_text="ann2")
    expect(trust_row.locator("code")).to_have_text(annotator_pseudonym(annotator2.pk))
    screenshot("research-who-is-who", full_page=True)
