"""The release path as an admin walks it in a real browser: from a finished policy run, run the
gate (a real worker evaluates it), read its result, see the candidate deployed, roll it back and
deploy it again, with the history on the Policies page; Roll back disabled with its reason when
there is nothing to go back to; durations in seconds; the rubric one click from its round; what
each round holds on the training form."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from annotation.exports import ExportFilters, export_rows
from feedback.models import Deployment, PolicyVersion
from feedback.serving.policies import deployment_request, policy_register
from training.models import GateEvaluation, TrainingRun

from ..annotation.helpers import lease, submit_url, valid_body
from ..factories import open_round
from ..training.test_reward_runs import FAST, judged_round
from .conftest import JOB_TIMEOUT_MS, page_html, refresh_of, wait_until_settled

pytestmark = pytest.mark.django_db(transaction=True)

SMALL_REWARD = {**FAST, "max_steps": 2}
# Enough steps at a high enough rate that the candidate's answers differ from the baseline's.
SMALL_DPO = {"learning_rate": 0.005, "max_steps": 8, "per_device_train_batch_size": 8,
             "eval_every": 8}  # fmt: skip


def judge(api: Any, user: Any, *, time_spent_ms: int, tie_last: bool) -> None:
    client = api(user)
    task = lease(client)
    body = {**valid_body(task, tie_last=tie_last), "time_spent_ms": time_spent_ms}
    assert client.post(submit_url(task["assignment"]), body, format="json").status_code == 200


def shown_number(locator: Any) -> float:
    """A number as the page rounds it (the page and Python may round a last half differently)."""
    return float(locator.inner_text())


def start_run(page: Any, kind: str, round_number: int, recipe: dict[str, Any]) -> TrainingRun:
    """Start a run from the training form and wait, on its page, until the worker finished it."""
    page.goto("/manage/training/")
    page.get_by_label(kind, exact=True).check()
    page.get_by_label(f"Round {round_number}").check()
    page.get_by_label("Recipe overrides").fill(json.dumps(recipe))
    page.get_by_role("button", name="Start run").click()
    page.get_by_text("queued on the training queue").wait_for()
    run = TrainingRun.objects.order_by("-id").first()
    # The page refreshes itself while the run is queued or running.
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    return run


def test_durations_read_in_seconds_the_rubric_is_a_click_away_and_rounds_show_their_pairs(
    sign_in, page, admin, annotator, api, screenshot
):
    round_ = open_round(n=3, k=3)
    judge(api, annotator, time_spent_ms=8953, tie_last=False)  # C(3,2) = 3 pairs
    judge(api, annotator, time_spent_ms=8953, tie_last=True)  # the last two tied: 2 pairs
    sign_in(admin.username)

    page.goto(f"/manage/rounds/{round_.pk}/")
    annotators = page.locator("section", has_text="Annotators").locator("tbody tr")
    expect(annotators.first.locator("td").nth(3)).to_have_text("9.0 s")
    assert " ms" not in page.locator("main").inner_text()

    page.get_by_role("link", name="3H@1").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Rubric 3H@1")
    helpful = page.locator("section.rubric-axis", has_text="Helpful")
    expect(helpful).to_contain_text("Does it do what the user asked, well and to the point?")
    expect(helpful.locator("tbody tr").last).to_contain_text("Fully solves the request")
    # The general guidelines are Markdown, rendered through the sanitizer: bold is bold.
    expect(page.locator(".rubric-guidelines strong").first).to_have_text("Rank")
    screenshot("rubric")
    expect(page.get_by_role("region", name="How much better")).to_contain_text(
        "Significantly better"
    )
    page.get_by_role("link", name="round 1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Round 1")

    # The training form: each round with its judgments and the pairs they expand to, the same
    # number of pairs an export of the round has.
    exported = sum(1 for _ in export_rows(fmt="trl", filters=ExportFilters(rounds=(1,))))
    assert exported == 5
    page.goto("/manage/training/")
    expect(page.locator("label", has_text="Round 1")).to_contain_text("2 judgments, 5 pairs")
    screenshot("training-form")


def test_roll_back_is_disabled_with_its_reason_and_a_switch_in_flight_holds_the_others(
    sign_in, page, admin
):
    alpha = policy_register(name="alpha", base_model="models/none", activate_if_none=True)
    beta_pk = policy_register(name="beta", base_model="models/none").pk
    gamma_pk = policy_register(name="gamma", base_model="models/none").pk
    sign_in(admin.username)
    page.goto("/manage/policies/")
    row = page.locator("table.policies tr", has_text="alpha")
    rollback = row.get_by_role("button", name="Roll back")
    expect(rollback).to_be_disabled()
    expect(rollback).to_have_accessible_description(
        "Nothing to roll back to: alpha is the first version deployed."
    )
    expect(row.get_by_text("Nothing to roll back to")).to_be_visible()
    expect(page.locator("table.deployments")).to_contain_text("None yet.")
    beta = page.locator("table.policies tr", has_text="beta")
    expect(beta.get_by_role("button", name="Run the gate")).to_be_disabled()
    expect(beta.get_by_role("button", name="Run the gate")).to_have_accessible_description(
        "The gate needs a succeeded reward-model run: train one first."
    )

    # A deployment requested but not yet run (its job waits in the queue: requested here without
    # enqueueing, since a worker that other tests started may be running in this session). The
    # page says so while it waits, and holds the other switches.
    deployment_request(policy_id=beta_pk, requested_by=admin, enqueue=False)
    page.reload()
    expect(page.get_by_text("A gate or a deployment is running")).to_be_visible()
    expect(refresh_of(page)).to_have_count(1)
    gamma = page.locator("table.policies tr", has_text="gamma")
    expect(gamma.get_by_role("button", name="Deploy")).to_be_disabled()
    expect(gamma.locator(f"#deploy-why-{gamma_pk}")).to_have_text(
        "Wait for the deployment of beta to finish."
    )
    history = page.locator("table.deployments tbody tr").first
    expect(history).to_contain_text("admin")
    expect(history).to_contain_text("alpha → beta")
    expect(history).to_contain_text("pending")
    assert Deployment.objects.get().status == "pending"
    assert PolicyVersion.objects.get(status="active") == alpha  # still serving meanwhile


@pytest.mark.broker
def test_admin_gates_deploys_and_rolls_back_a_finished_run(
    sign_in, page, admin, annotator, api, tiny_policy, celery_worker_process, screenshot
):
    number = judged_round(api, annotator, n=12, seed=8)
    sign_in(admin.username)
    page.goto("/manage/policies/")
    expect(
        page.locator("table.policies tr", has_text="tiny-v0").get_by_role(
            "button", name="Roll back"
        )
    ).to_be_disabled()

    # A reward model to judge with, one per-axis model (through the API, as a script would), and
    # a DPO run whose candidate is the version to release.
    start_run(page, "reward model", number, SMALL_REWARD)
    response = api(admin).post(
        "/api/v1/training-runs/",
        {"kind": "reward", "rounds": [number], "recipe": {**SMALL_REWARD, "axis": "helpful"}},
        format="json",
    )
    assert response.status_code == 202, response.content
    page.goto(f"/manage/training/{response.json()['id']}/")
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    run = start_run(page, "DPO policy update", number, SMALL_DPO)
    candidate = TrainingRun.objects.get(pk=run.pk).produced_policy
    release = page.locator("section.release")
    expect(release.get_by_role("heading", level=2)).to_contain_text(f"Release of {candidate.name}")
    expect(release).to_contain_text("Not gated yet.")

    # Run the gate: a threshold any candidate meets, on a few prompts.
    release.get_by_label("Win rate it needs").fill("0")
    release.get_by_label("Held-out prompts").fill("4")
    release.get_by_role("button", name="Run the gate").click()
    page.get_by_text(f"started: {candidate.name} against tiny-v0 on 4 held-out prompts").wait_for()
    html = page_html(page)  # one drawing of the page, which refreshes itself meanwhile
    if "gate-pending" in html:  # still running when the page was drawn: it says so and refreshes
        assert "The gate is running" in html and 'http-equiv="refresh"' in html
    result = release.locator(".gate-result").first
    expect(result.locator(".badge")).to_have_text("passed", timeout=JOB_TIMEOUT_MS)
    # A passed gate deploys its candidate; the page follows the switch until it is done, and
    # then stops refreshing, so what is read below comes from one settled page.
    expect(release.locator("h2 .badge")).to_have_text("active", timeout=JOB_TIMEOUT_MS)
    wait_until_settled(page)
    gate = GateEvaluation.objects.get()
    assert shown_number(result.locator(".win-rate")) == pytest.approx(gate.win_rate, abs=0.006)
    expect(result).to_contain_text("needs 0.00")
    expect(result).to_contain_text(re.compile(r"took \d+\.\d s"))
    helpful = result.locator("table.gate-axes tr", has_text="helpful")
    delta = gate.metrics["axes"]["helpful"]["delta"]
    assert shown_number(helpful.locator("td").last) == pytest.approx(delta, abs=0.0006)
    expect(result).to_contain_text(f"Passed: {candidate.name} is deployed")

    switched = release.locator("table.deployments tbody tr").first
    expect(switched).to_contain_text("the gate")
    expect(switched).to_contain_text(f"tiny-v0 → {candidate.name}")
    expect(switched).to_contain_text("done")
    expect(switched.locator("td").last).to_have_text(re.compile(r"^\d+\.\d s$"))
    screenshot("release-gated")

    # Roll back: tiny-v0 serves again.
    release.get_by_role("button", name="Roll back to tiny-v0").click()
    page.get_by_text("Rollback to tiny-v0 requested").wait_for()
    expect(release.locator("h2 .badge")).to_have_text("retired", timeout=JOB_TIMEOUT_MS)
    back = release.locator("table.deployments tbody tr").first
    expect(back).to_contain_text(f"admin rollback {candidate.name} → tiny-v0")
    expect(back).to_contain_text("done")
    assert PolicyVersion.objects.get(status="active") == PolicyVersion.objects.get(name="tiny-v0")

    # Deploy it again by hand, once the page has stopped refreshing (a refresh could cancel
    # the form's post).
    wait_until_settled(page)
    release.get_by_role("button", name="Deploy").click()
    page.get_by_text(f"Deploy of {candidate.name} requested").wait_for()
    expect(release.locator("h2 .badge")).to_have_text("active", timeout=JOB_TIMEOUT_MS)

    # The Policies page: the candidate's gate, and the whole history, newest first.
    page.goto("/manage/policies/")
    row = page.locator("table.policies tr", has_text=candidate.name)
    expect(row).to_contain_text(re.compile(r"gate: passed, win rate \d\.\d\d \(needs 0\.00\)"))
    expect(row.get_by_role("button", name="Roll back to tiny-v0")).to_be_enabled()
    history = page.locator("table.deployments tbody tr")
    expect(history).to_have_count(3)
    expect(history.nth(0)).to_contain_text(f"admin deploy tiny-v0 → {candidate.name}")
    expect(history.nth(1)).to_contain_text(f"admin rollback {candidate.name} → tiny-v0")
    expect(history.nth(2)).to_contain_text(f"the gate deploy tiny-v0 → {candidate.name}")
    expect(refresh_of(page)).to_have_count(0)  # nothing in flight
    screenshot("policies-history")
