"""A gate people decide (issue 20, point 9): a candidate that passes the reward model's check is
shown to annotators side by side with the serving policy, on held-out prompts, blind and with the
order balanced; it is deployed only when the lower end of their win rate's interval clears the
threshold, and rejected otherwise. The reward model's check stays the first filter; the
side-by-side round's judgments train nothing, and its prompts stay out of later rounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from annotation.models import Round
from annotation.rounds import GATE_PRIORITY
from feedback.models import Completion, PolicyVersion
from feedback.serving import synthetic
from feedback.serving.policies import policy_register
from training.automation import automation_advance
from training.execution import training_run_execute
from training.gate import gate_evaluate
from training.models import Automation, GateEvaluation
from training.simulate import jobs_run_here

from ..annotation.helpers import lease, submit_url
from .test_automation import (
    QUICK,
    drive,
    import_pool,
    judge_all,
    open_policy_round,
    worker_wait,
)
from .test_reward_runs import FAST, URL, judged_round

# Full fine-tuning with a large step: the candidate's answers must differ from the serving
# policy's on some held-out prompts, or there is nothing for people to compare.
MOVING = {"use_lora": False, "learning_rate": 0.002, "max_steps": 4, "eval_every": 4}
# Two policies a few steps apart give the same answer to most prompts (not shown: ties): enough
# prompts that several differ.
HUMAN = 24


def _until_judging(automation_id: int) -> GateEvaluation:
    """Do the automation's jobs here until its gate waits on people."""
    for _ in range(12):
        automation = automation_advance(automation_id=automation_id)
        assert automation.stage not in Automation.FINISHED, automation.error
        if automation.gate_id and automation.gate.status != "pending":
            assert automation.gate.status == "judging", automation.gate.error
            return automation.gate
        jobs_run_here()
    raise AssertionError(f"stuck at {automation.stage}")


def _judge_side_by_side(api, person, gate: GateEvaluation, *, prefer: str) -> dict[str, int]:
    """An annotator judges every side-by-side task through the API, preferring one side's
    answer (``prefer``: candidate or baseline). Checks on the way that each task is blind (no
    policy is named) and compares the two policies' answers; returns how often the candidate's
    answer was shown first, and second."""
    client = api(person)
    policy = {"candidate": gate.candidate_id, "baseline": gate.baseline_id}
    shown = {"first": 0, "second": 0}
    while (task := lease(client)) is not None:
        text = str(task)
        assert gate.candidate.name not in text and gate.baseline.name not in text
        ids = [c["id"] for c in task["completions"]]
        owner = dict(Completion.objects.filter(pk__in=ids).values_list("pk", "policy_version_id"))
        assert sorted(owner.values()) == sorted(policy.values())
        ours = next(cid for cid, p in owner.items() if p == policy["candidate"])
        shown["first" if ids[0] == ours else "second"] += 1
        best = next(cid for cid, p in owner.items() if p == policy[prefer])
        worst = next(cid for cid in ids if cid != best)
        body = {
            "ranking": [[best], [worst]],
            "scores": {str(best): {"helpful": 6, "honest": 6, "harmless": 6},
                       str(worst): {"helpful": 3, "honest": 3, "harmless": 3}},
            "strength": "better", "time_spent_ms": 1000,
        }  # fmt: skip
        response = client.post(submit_url(task["assignment"]), body, format="json")
        assert response.status_code == 200, response.content
    return shown


def test_people_decide_the_gate_and_their_round_never_trains(
    api, admin, annotator, annotator2, tiny_policy
):
    import_pool(api, admin, synthetic.prompts(64, seed=21))
    round_id = open_policy_round(api, admin, limit=10, k=3)
    url = f"/api/v1/rounds/{round_id}/automation/"
    bad = api(admin).post(url, {"human_gate_threshold": 2, "human_gate_prompts": -1},
                          format="json")  # fmt: skip
    assert bad.status_code == 400
    assert set(bad.json()["fields"]) == {"human_gate_threshold", "human_gate_prompts"}
    response = api(admin).post(
        url,
        {"rounds_left": 1, "prompt_tags": ["loop"], "gate_prompts": 8, "gate_threshold": 0.0,
         "human_gate_prompts": HUMAN, "reward_recipe": QUICK["reward_recipe"],
         "policy_recipe": MOVING},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["human_gate_prompts"] == HUMAN
    jobs_run_here()
    assert judge_all(api, annotator) == 10
    first = response.json()["id"]

    # The candidate passed the reward model's check (a threshold of 0): people are asked.
    gate = _until_judging(first)
    assert PolicyVersion.objects.get(status="active") == tiny_policy  # not before they decide
    sbs = gate.human_round
    assert sbs.source == "side_by_side" and sbs.k == 2 and sbs.status == "open"
    assert sbs.priority == GATE_PRIORITY  # a candidate waits on it: before collecting rounds
    human = gate.metrics["human"]
    assert human["prompts"] == HUMAN and sbs.tasks.count() == HUMAN - human["identical"] > 0
    # Held out: no collecting round has used its prompts.
    collected = set(Round.objects.get(pk=round_id).tasks.values_list("prompt_id", flat=True))
    assert not collected & set(sbs.prompt_ids)
    page = Client()
    page.force_login(admin)
    body = page.get(f"/manage/rounds/{sbs.pk}/").content.decode()
    assert "promotion gate" in body and "train nothing" in body

    shown = _judge_side_by_side(api, annotator, gate, prefer="candidate")
    assert abs(shown["first"] - shown["second"]) <= 1, shown  # the order is balanced
    automation = drive(first)
    assert automation.stage == "done", automation.error
    gate.refresh_from_db()
    decisive = gate.metrics["human"]["decisive"]
    assert (
        gate.status == "passed"
        and decisive["n"] == sbs.tasks.count() == decisive["value"] * decisive["n"]
    )
    assert gate.human_lower_bound >= 0.5 and gate.human_win_rate > 0.5
    candidate = automation.policy_run.produced_policy
    assert PolicyVersion.objects.get(status="active") == candidate
    assert Round.objects.get(pk=sbs.pk).status == "closed"
    detail = api(admin).get(f"/api/v1/gates/{gate.pk}/").json()
    assert detail["human_round"] == sbs.pk and detail["status"] == "passed"
    assert detail["human_lower_bound"] == gate.human_lower_bound
    listing = page.get("/manage/policies/").content.decode()
    assert "people: win rate" in listing and "lower bound" in listing

    # The next round takes unused prompts: none of the gate's.
    second_round = automation.next_round
    jobs_run_here()
    second_round.refresh_from_db()
    assert not set(second_round.prompt_ids) & set(sbs.prompt_ids)
    # Training snapshots of "every round" leave the side-by-side round out.
    snapshot = api(admin).post("/api/v1/snapshots/", {"kind": "preference"}, format="json")
    assert snapshot.status_code == 201, snapshot.content
    folder = Path(settings.ARTIFACTS_DIR) / snapshot.json()["path"]
    trained = "".join((folder / f"{split}.jsonl").read_text() for split in ("train", "eval"))
    for prompt_id in sbs.prompt_ids:
        question = Round.objects.get(pk=sbs.pk).tasks.get(prompt_id=prompt_id).prompt.messages
        assert question[-1]["content"] not in trained

    # Round 2: people prefer the serving policy's answers, so its candidate is rejected, whatever
    # the reward model said, and round 1's candidate keeps serving.
    assert judge_all(api, annotator2) == 10
    second = Automation.objects.get(round=second_round).pk
    gate2 = _until_judging(second)
    assert gate2.baseline == candidate
    _judge_side_by_side(api, annotator2, gate2, prefer="baseline")
    automation = drive(second)
    assert automation.stage == "done", automation.error
    gate2.refresh_from_db()
    assert gate2.status == "failed" and gate2.metrics["failed_on"] == ["human_win_rate"]
    assert gate2.human_lower_bound == 0.0
    assert gate2.candidate.status == "rejected"
    assert PolicyVersion.objects.get(status="active") == candidate
    run_page = page.get(f"/manage/training/{automation.policy_run_id}/").content.decode()
    assert "People, side by side" in run_page and "Failed on win_rate" not in run_page


def test_the_reward_check_filters_first_and_identical_answers_are_no_comparison(
    api, admin, annotator, tiny_policy
):
    judged_round(api, annotator, n=12, seed=8)
    run = api(admin).post(URL, {"kind": "reward", "recipe": {**FAST, "max_steps": 2}},
                          format="json").json()  # fmt: skip
    assert training_run_execute(run_id=run["id"]).status == "succeeded"
    import_pool(api, admin, synthetic.prompts(8, seed=40), tag="held-out")
    same = policy_register(name="tiny-copy", base_model=tiny_policy.base_model)
    gate_url = f"/api/v1/policies/{same.pk}/gate/"
    bad = api(admin).post(gate_url, {"human_threshold": -1, "human_prompts": 4}, format="json")
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"human_threshold"}

    # The serving weights again: a tie on reward (0.5) fails a threshold of 0.6, and no round
    # is opened for people: the reward model's check comes first.
    filtered = api(admin).post(
        gate_url, {"prompts": 8, "threshold": 0.6, "human_prompts": 4}, format="json"
    )
    assert filtered.status_code == 202, filtered.content
    gate = gate_evaluate(gate_id=filtered.json()["id"])
    assert gate.status == "failed" and gate.human_round is None
    assert gate.metrics["failed_on"] == ["win_rate"]

    # Passing that check, the same answers to every held-out prompt leave people nothing to
    # compare: the gate says so and nothing serves.
    same = policy_register(name="tiny-copy-2", base_model=tiny_policy.base_model)
    asked = api(admin).post(
        f"/api/v1/policies/{same.pk}/gate/",
        {"prompts": 8, "threshold": 0.5, "human_prompts": 4, "human_tags": ["held-out"]},
        format="json",
    )
    assert asked.status_code == 202, asked.content
    assert asked.json()["human_tags"] == ["held-out"]
    with pytest.raises(Exception, match="nothing for people to compare"):
        gate_evaluate(gate_id=asked.json()["id"])
    gate = GateEvaluation.objects.get(pk=asked.json()["id"])
    assert gate.status == "error" and "same answers" in gate.error
    assert not Round.objects.filter(source="side_by_side").exists()
    assert PolicyVersion.objects.get(status="active") == tiny_policy


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_worker_decides_the_gate_when_people_finish(
    celery_worker_process, api, admin, annotator, tiny_policy
):
    """No in-process driving: the worker generates, trains and opens the side-by-side round; the
    last side-by-side judgment makes it decide the gate and move the automation on."""
    import_pool(api, admin, synthetic.prompts(48, seed=22))
    round_id = open_policy_round(api, admin, limit=8, k=3)
    response = api(admin).post(
        f"/api/v1/rounds/{round_id}/automation/",
        {"gate_prompts": 8, "gate_threshold": 0.0, "human_gate_prompts": HUMAN,
         "reward_recipe": QUICK["reward_recipe"], "policy_recipe": MOVING},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content

    def wait_for(url: str, done, what: str) -> dict:
        return worker_wait(api(admin), celery_worker_process, url, done, what)

    wait_for(f"/api/v1/rounds/{round_id}/", lambda b: b["status"] == "open", "generation")
    assert judge_all(api, annotator) == 8
    automation_url = f"/api/v1/rounds/{round_id}/automation/"
    detail = wait_for(automation_url, lambda b: b["gate"] is not None, "the gate")
    gate_url = f"/api/v1/gates/{detail['gate']}/"
    gate = wait_for(gate_url, lambda b: b["status"] != "pending", "the reward model's check")
    assert gate["status"] == "judging", gate
    _judge_side_by_side(
        api, annotator, GateEvaluation.objects.get(pk=gate["id"]), prefer="candidate"
    )
    detail = wait_for(automation_url, lambda b: b["stage"] in ("done", "failed"), "the decision")
    assert detail["stage"] == "done", detail["error"]
    gate = api(admin).get(gate_url).json()
    assert gate["status"] == "passed" and gate["human_lower_bound"] >= 0.5, gate["metrics"]
    assert PolicyVersion.objects.get(status="active").name == detail["candidate"]


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_closing_the_side_by_side_round_early_decides_the_gate_at_once(
    celery_worker_process, api, admin, annotator, tiny_policy
):
    """People may never finish: an admin closes the side-by-side round, and the worker decides
    on what they judged (here nothing, so no evidence: rejected) at once, because the round's
    close is announced; not at the beat's next pass (this worker runs no beat)."""

    def wait_for(url: str, done, what: str) -> dict:
        return worker_wait(api(admin), celery_worker_process, url, done, what)

    # The worker does every job: the reward model, a DPO candidate, the reward model's check.
    number = judged_round(api, annotator, n=12, seed=8)
    for kind, recipe in (("reward", {**FAST, "max_steps": 2}), ("dpo", MOVING)):
        run = api(admin).post(URL, {"kind": kind, "rounds": [number], "recipe": recipe},
                              format="json").json()  # fmt: skip
        run = wait_for(f"{URL}{run['id']}/", lambda b: b["status"] not in ("queued", "running"),
                       kind)  # fmt: skip
        assert run["status"] == "succeeded", run["error"]
    candidate = PolicyVersion.objects.get(status="candidate")
    import_pool(api, admin, synthetic.prompts(HUMAN, seed=23), tag="held-out")
    asked = api(admin).post(
        f"/api/v1/policies/{candidate.pk}/gate/",
        {"prompts": 8, "threshold": 0.0, "human_prompts": HUMAN, "human_tags": ["held-out"]},
        format="json",
    )
    assert asked.status_code == 202, asked.content
    gate_url = f"/api/v1/gates/{asked.json()['id']}/"
    checked = wait_for(gate_url, lambda b: b["status"] != "pending", "the reward model's check")
    assert checked["status"] == "judging", checked
    gate = GateEvaluation.objects.get(pk=checked["id"])
    # Nobody judges (a judgment would queue a check of its own): the admin stops the round.
    closed = api(admin).post(f"/api/v1/rounds/{gate.human_round_id}/close/")
    assert closed.status_code == 200, closed.content

    decided = wait_for(gate_url, lambda b: b["status"] != "judging", "the decision")
    assert decided["status"] == "failed", decided
    assert decided["metrics"]["failed_on"] == ["human_no_preference"]
    assert decided["metrics"]["human"]["judgments"] == 0
    assert PolicyVersion.objects.get(pk=candidate.pk).status == "rejected"
    assert PolicyVersion.objects.get(status="active") == tiny_policy
