"""The admin and researcher pages and demonstrations in a real browser, and the CSP on every page."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from annotation.models import Demonstration, Round
from feedback.models import Prompt

from ..annotation.helpers import lease, submit_url, valid_body
from ..factories import open_round
from .conftest import JOB_TIMEOUT_S, page_html, wait_until_settled

pytestmark = pytest.mark.django_db(transaction=True)


def judge(api: Any, user: Any, count: int) -> None:
    client = api(user)
    for _ in range(count):
        task = lease(client)
        assert (
            client.post(submit_url(task["assignment"]), valid_body(task), format="json").status_code
            == 200
        )


def upload(page: Any, lines: list[str]) -> None:
    file = {
        "name": "prompts.jsonl",
        "mimeType": "application/x-ndjson",
        "buffer": "\n".join(lines).encode(),
    }
    page.set_input_files("#import-file", files=[file])
    page.get_by_role("button", name="Import").click()


def test_admin_imports_a_file_with_a_bad_line_and_sees_its_number(sign_in, page, admin):
    sign_in(admin.username)
    lines = [
        json.dumps({"prompt": "What is 1+1?", "completions": [{"text": "2"}, {"text": "3"}]}),
        json.dumps({"prompt": "What is 2+2?"}),
        json.dumps({"prompt": "", "tags": ["x"]}),
    ]
    upload(page, lines)
    # The form posts and the answer is a new page: wait for it, not for a fixed time.
    report = page.locator("#import-report")
    expect(report).to_contain_text("Nothing was imported.")
    row = report.locator("tbody tr").first
    expect(row.locator("td").nth(0)).to_have_text("3")
    expect(row.locator("td").nth(2)).to_have_text("Must be a non-empty string.")
    assert Prompt.objects.count() == 0

    page.get_by_label("Skip bad lines and import the rest").check()
    upload(page, lines)
    # Until the server answers, the page still shows the first report.
    expect(page.locator("#import-report")).to_contain_text("2 new prompts")
    assert Prompt.objects.count() == 2


def test_admin_opens_watches_and_closes_a_round(sign_in, page, admin, annotator, api, screenshot):
    open_round(n=6, k=3, overlap=2)
    Round.objects.all().delete()
    sign_in(admin.username)
    page.get_by_label("Completions per task (K)").fill("3")
    page.get_by_label("Judgments per task (overlap)").fill("2")
    page.get_by_label("imported files").check()
    page.get_by_role("button", name="Open round").click()
    page.get_by_text("Opened round 1 with 6 tasks.").wait_for()
    judge(api, annotator, 4)
    page.reload()
    expect(page.locator(".numbers")).to_contain_text("4 / 12 judgments")
    expect(page.locator(".legend")).to_contain_text("in progress: 4")
    expect(page.locator("svg.chart rect.bar")).to_have_count(24)
    annotators = page.locator("section[aria-labelledby=ann-title] table")
    expect(annotators.locator("td").first).to_have_text(annotator.username)
    screenshot("admin-round")
    page.get_by_label("Priority").fill("7")
    page.get_by_role("button", name="Save priority").click()
    page.get_by_text("Round 1's priority is 7.").wait_for()
    assert Round.objects.get().priority == 7
    page.get_by_role("button", name="Close round 1").click()
    page.get_by_text("Round closed").wait_for()
    assert Round.objects.get().status == "closed"


def test_researcher_previews_and_downloads_the_export(
    sign_in, page, researcher, annotator, api, screenshot
):
    open_round(n=3, k=3, overlap=1)
    judge(api, annotator, 3)
    sign_in(researcher.username)
    page.get_by_label("Round 1").check()
    page.get_by_role("button", name="Preview").click()
    # The page before the preview shows a count too, and a download link without the round:
    # wait for the previewed page itself.
    page.wait_for_url(re.compile(r"/research/\?(.*&)?round=1(&|$)"))
    expect(page.locator("#row-count")).to_have_text("9")
    expect(page.locator("table.preview tbody tr")).to_have_count(5)
    screenshot("research")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download JSONL").click()
    download = download_info.value
    assert download.suggested_filename == "preferences-trl-round-1.jsonl"
    with open(download.path(), encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 9
    assert {"prompt", "chosen", "rejected", "margin"} <= set(rows[0])


def test_annotator_writes_a_demonstration_from_an_answer(sign_in, page, annotator):
    open_round(n=2, k=3)
    sign_in(annotator.username)
    page.get_by_role("link", name="Demonstrate").click()
    page.get_by_role("button", name="Start from answer B").click()
    answer = page.get_by_label("Ideal answer (Markdown)")
    expect(answer).not_to_have_value("")
    answer.fill(answer.input_value() + " And that is all.")
    page.get_by_role("button", name="Save and next").click()
    page.get_by_text("Saved. Here is the next prompt.").wait_for()
    demonstration = Demonstration.objects.get()
    assert demonstration.author == annotator
    assert demonstration.text.endswith("And that is all.")
    assert demonstration.source_completion is not None
    assert demonstration.source_completion.prompt_id == demonstration.prompt_id


@pytest.mark.broker
def test_admin_deploys_a_version_from_the_policies_page(
    sign_in, page, admin, tiny_policy, celery_worker_process
):
    from feedback.models import Deployment, PolicyVersion
    from feedback.serving.policies import policy_register
    from feedback.tasks import deployment_run

    v1 = policy_register(name="tiny-v1", base_model=tiny_policy.base_model, parent=tiny_policy)
    sign_in(admin.username)
    page.goto("/manage/policies/")
    row = page.locator("table.policies tr", has_text="tiny-v1")
    expect(row).to_contain_text("candidate")
    expect(row).to_contain_text("tiny-v0")
    row.get_by_role("button", name="Deploy").click()
    page.get_by_text("Deploy of tiny-v1 requested").wait_for()
    deployment = Deployment.objects.get()
    # The worker may still be starting (a loaded machine takes its time to import torch).
    assert deployment_run.delay(deployment.pk).get(timeout=JOB_TIMEOUT_S) == "done"
    assert PolicyVersion.objects.get(status="active") == v1
    # Once nothing is pending the page stops refreshing itself, and a reload cannot race it.
    wait_until_settled(page)
    page.reload()
    # The row whose version is tiny-v1 (tiny-v0's row names tiny-v1 too, in its history).
    row = page.get_by_role("row", name=re.compile(r"^tiny-v1 "))
    expect(row).to_contain_text("active")
    expect(page.locator("section", has_text="Recent deployments")).to_contain_text("done")


PAGES = [
    ("annotator", "/annotate/"),
    ("annotator", "/demonstrate/"),
    ("admin", "/manage/"),
    ("admin", "/manage/rounds/{round}/"),
    ("admin", "/manage/policies/"),
    ("admin", "/manage/training/"),
    ("researcher", "/research/"),
    ("researcher", "/api/docs/"),
    (None, "/login/"),
]


@pytest.mark.parametrize(("persona", "path"), PAGES)
def test_every_page_enforces_the_csp_and_breaks_none_of_it(sign_in, page, request, persona, path):
    round_ = open_round(n=1, k=3)
    if persona:
        sign_in(request.getfixturevalue(persona).username)
    response = page.goto(path.format(round=round_.pk))
    page.wait_for_load_state("networkidle")
    headers = response.headers
    assert response.status == 200
    assert "content-security-policy-report-only" not in headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "script-src 'self';" in headers["content-security-policy"]
    if path != "/api/docs/":
        assert "unsafe-inline" not in headers["content-security-policy"]
    # The page fixture fails the test on any CSP refusal logged by the browser.


@pytest.mark.broker
def test_admin_starts_a_reward_run_and_watches_it(
    sign_in, page, admin, annotator, api, tiny_policy, celery_worker_process, screenshot
):
    from training.models import TrainingRun
    from training.tasks import training_run_execute

    from ..training.test_reward_runs import judged_round

    judged_round(api, annotator, n=8)
    sign_in(admin.username)
    page.goto("/manage/training/")
    page.get_by_label("reward model", exact=True).check()
    page.get_by_label("Recipe overrides").fill('{"max_steps": "four"}')
    page.get_by_role("button", name="Start run").click()
    page.get_by_text("recipe.max_steps: Must be int, got str.").wait_for()
    assert not TrainingRun.objects.exists()
    page.get_by_label("reward model", exact=True).check()
    page.get_by_label("Recipe overrides").fill('{"max_steps": 6}')
    page.get_by_role("button", name="Start run").click()
    page.get_by_text("queued on the training queue").wait_for()
    run = TrainingRun.objects.get()
    assert run.recipe["max_steps"] == 6
    # A page drawn while the run is active says so and refreshes itself (read from one drawing:
    # the worker may finish the run between two reads).
    html = page_html(page)
    if re.search(r'<span class="badge closed">(queued|running)</span>', html):
        assert '<meta http-equiv="refresh"' in html
    # The worker runs the queued job; this second delivery returns once it has finished.
    assert training_run_execute.delay(run.pk).get(timeout=JOB_TIMEOUT_S) == "succeeded"
    wait_until_settled(page)  # finished: the page's next refresh is its last
    expect(page.locator("#progress")).to_have_text("100%")
    # The loss as a line over the optimizer steps, drawn the right way up: SVG's y grows
    # downwards, so a loss that fell ends lower on the page (a larger y) than it started.
    loss = page.locator('figure[data-metric="loss"]')
    points = loss.locator('[data-series="0-train"] polyline').get_attribute("points")
    ys = [float(point.split(",")[1]) for point in points.split()]
    history = [h["loss"] for h in TrainingRun.objects.get().metrics_history if "loss" in h]
    assert len(ys) == len(history) and (ys[-1] > ys[0]) == (history[-1] < history[0])
    expect(loss.locator("text.x-title")).to_contain_text("step")
    # The held-out evaluations are dots on the same axes, and each eval metric has its chart.
    expect(loss.locator('[data-series="0-eval"] circle').first).to_be_visible()
    expect(page.locator('figure[data-metric="accuracy"]')).to_be_visible()
    expect(page.locator("#provenance")).to_contain_text(run.snapshot.sha256)
    screenshot("training-run")


def test_admin_opens_a_round_that_advances_by_itself_and_stops_the_next(
    sign_in, page, admin, annotator, api, tiny_policy, screenshot
):
    from feedback.serving import synthetic
    from training.models import Automation
    from training.simulate import jobs_run_here

    from ..training.test_automation import QUICK, drive, import_pool, judge_all

    import_pool(api, admin, synthetic.prompts(16, seed=2))
    sign_in(admin.username)

    def open_form(policy_recipe: str) -> None:
        page.get_by_label("Completions per task (K)").fill("3")
        page.get_by_label("Judgments per task (overlap)").fill("1")
        page.get_by_label("At most this many prompts").fill("8")
        page.get_by_text("Advance by itself").first.click()
        page.get_by_label("Advance this round by itself").check()
        page.get_by_label("Further automatic rounds after this one").fill("1")
        page.get_by_label("Win rate the candidate needs to be deployed").fill("0")
        page.get_by_label("Policy recipe overrides").fill(policy_recipe)
        page.get_by_label("Reward-model recipe overrides").fill(json.dumps(QUICK["reward_recipe"]))
        page.get_by_role("button", name="Open round").click()

    open_form('{"learning_rate": 0.0005, "max_stepz": 2}')
    page.get_by_text("policy_recipe.max_stepz: Unknown field").wait_for()
    assert not Round.objects.exists() and not Automation.objects.exists()

    open_form(json.dumps(QUICK["policy_recipe"]))
    page.get_by_text("the round will advance by itself").wait_for()
    # The round page refreshes itself while the round is generated: every check here retries.
    stages = page.locator("ol.stages li")
    expect(stages).to_have_count(7)
    expect(stages.first).to_contain_text("waiting for judgments")
    expect(stages.first).to_have_attribute("aria-current", "step")

    jobs_run_here()  # what the worker does: generate the round
    judge_all(api, annotator)
    automation = drive(Automation.objects.get().pk)
    assert automation.stage == "done", automation.error
    # The page stopped refreshing once the round was generated (the automation waited on
    # judgments then); once it no longer refreshes, a reload of ours cannot race one of its own.
    wait_until_settled(page)
    page.reload()
    expect(page.locator("ol.stages li.stage-done")).to_have_count(7)
    expect(stages.nth(3)).to_contain_text("win rate")
    screenshot("admin-automatic-round")
    # The lineage: the candidate was made by a DPO run, and its gate is charted by round.
    page.goto("/manage/policies/")
    row = page.locator("table.policies tr", has_text=automation.policy_run.produced_policy.name)
    expect(row).to_contain_text(f"dpo run {automation.policy_run_id}")
    expect(row).to_contain_text("gate: passed")
    expect(page.locator("rect.gate.passed")).to_have_count(1)
    page.go_back()
    page.get_by_role("link", name=f"round {automation.next_round.number}").click()
    page.wait_for_url(f"**/manage/rounds/{automation.next_round_id}/")
    # The next round is generated by a worker, and its page refreshes itself until then; a
    # refresh that fires while the Stop form is posting would cancel the post. With the
    # worker's job done here first, the page is still when the button is pressed.
    jobs_run_here()
    wait_until_settled(page)
    page.get_by_role("button", name="Stop advancing").click()
    page.get_by_text("no longer advances by itself").wait_for()
    expect(page.locator("#auto-title .badge")).to_contain_text("stopped")
    assert Automation.objects.get(round=automation.next_round).stage == "stopped"


def test_admin_uploads_a_corpus_and_starts_continued_pretraining_on_it(
    sign_in, page, admin, tiny_policy
):
    from training.models import DatasetSnapshot, TrainingRun

    sign_in(admin.username)
    page.goto("/manage/training/")
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Choose a plain-text file to upload.").wait_for()
    bad = {"name": "bad.txt", "mimeType": "text/plain", "buffer": b"ok\n\xff\n"}
    page.set_input_files("#corpus", files=[bad])
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Line 2 is not UTF-8 (byte 1).").wait_for()
    assert not DatasetSnapshot.objects.exists()

    text = "\n\n".join(f"The zorblat number {i} is blue." for i in range(30)).encode()
    corpus = {"name": "zorblats.txt", "mimeType": "text/plain", "buffer": text}
    page.set_input_files("#corpus", files=[corpus])
    page.get_by_role("button", name="Upload").click()
    # The snapshot exists once the server has answered: wait for the answer, then look it up.
    page.get_by_text(re.compile(r"Snapshot \d+: \d+ documents to train on")).wait_for()
    snapshot = DatasetSnapshot.objects.get()
    rows = snapshot.manifest["rows"]
    page.get_by_text(f"Snapshot {snapshot.pk}: {rows['train']} documents to train on").wait_for()
    assert rows["train"] + rows["eval"] == 30 == sum(snapshot.manifest["documents"].values())

    page.get_by_label("continued pre-training on a plain-text corpus", exact=True).check()
    page.get_by_label("Data").select_option(str(snapshot.pk))
    page.get_by_role("button", name="Start run").click()
    page.get_by_text("queued on the training queue").wait_for()
    run = TrainingRun.objects.get()
    assert run.kind == "pretrain" and run.snapshot == snapshot
