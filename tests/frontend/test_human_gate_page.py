"""An admin runs a gate people decide from a finished run's page, in a real browser: the reward
model's check passes, the page says the gate waits on people and links their side-by-side round;
once annotators have judged it, the page shows their verdict and the candidate serves."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from feedback.models import PolicyVersion
from feedback.serving import synthetic
from training.models import GateEvaluation

from ..training.test_automation import import_pool, worker_wait
from ..training.test_human_gate import _judge_side_by_side
from ..training.test_reward_runs import judged_round
from .conftest import JOB_TIMEOUT_MS
from .test_release_path import SMALL_DPO, SMALL_REWARD

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_admin_asks_people_to_decide_the_gate_and_reads_their_verdict(
    sign_in, page, admin, annotator, api, tiny_policy, celery_worker_process
):
    number = judged_round(api, annotator, n=12, seed=8)
    import_pool(api, admin, synthetic.prompts(32, seed=50), tag="held-out")
    client = api(admin)
    runs = {}
    for kind, recipe in (("reward", SMALL_REWARD), ("dpo", SMALL_DPO)):
        response = client.post(
            "/api/v1/training-runs/",
            {"kind": kind, "rounds": [number], "recipe": recipe},
            format="json",
        )
        assert response.status_code == 202, response.content
        runs[kind] = worker_wait(
            client, celery_worker_process, f"/api/v1/training-runs/{response.json()['id']}/",
            lambda body: body["status"] not in ("queued", "running"), f"the {kind} run",
        )  # fmt: skip
        assert runs[kind]["status"] == "succeeded", runs[kind]

    sign_in(admin.username)
    page.goto(f"/manage/training/{runs['dpo']['id']}/")
    release = page.locator("section.release")
    release.get_by_label("Win rate it needs").fill("0")
    release.get_by_label("Held-out prompts").fill("4")
    release.get_by_label("Then people compare them on").fill("24")
    release.get_by_role("button", name="Run the gate").click()
    page.get_by_text("people compare the two on 24 more held-out prompts").wait_for()
    result = release.locator(".gate-result").first
    expect(result.locator(".badge")).to_have_text("people judging", timeout=JOB_TIMEOUT_MS)
    expect(result).to_contain_text("Waiting on people")
    gate = GateEvaluation.objects.get()
    link = result.get_by_role("link", name=f"round {gate.human_round.number}")
    expect(link).to_be_visible()
    assert PolicyVersion.objects.get(status="active") == tiny_policy

    _judge_side_by_side(api, annotator, gate, prefer="candidate")
    # The worker decides once the last judgment is in (a judging gate's page does not refresh
    # itself: people may take days).
    decided = worker_wait(client, celery_worker_process, f"/api/v1/gates/{gate.pk}/",
                          lambda body: body["status"] != "judging", "the decision")  # fmt: skip
    assert decided["status"] == "passed", decided
    page.reload()
    result = page.locator("section.release .gate-result").first
    expect(result.locator(".badge")).to_have_text("passed", timeout=JOB_TIMEOUT_MS)
    gate.refresh_from_db()
    decisive = gate.metrics["human"]["decisive"]["n"]
    expect(result.locator(".human-decisive")).to_have_text(f"{decisive} of {decisive}")
    expect(result.locator(".human-lower-bound")).to_have_text(f"{gate.human_lower_bound:.2f}")
    expect(result).to_contain_text("People, side by side")
    expect(release.locator("h2 .badge")).to_have_text("active", timeout=JOB_TIMEOUT_MS)
    page.goto(f"/manage/rounds/{gate.human_round_id}/")
    expect(page.locator("main")).to_contain_text("promotion gate")
