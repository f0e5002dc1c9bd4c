"""The gate's per-axis reward deltas and KL drift: an automatic round's trained candidate that wins
on reward but drifts past the automation's limit is rejected; the serving weights registered again
as a candidate do not drift at all and pass; the limit is validated; a drift that cannot be
measured is recorded as such, or errors the gate when a limit depends on it."""

from __future__ import annotations

import math
import re

import pytest
from django.test import Client

from annotation.models import Round
from feedback.models import Deployment, PolicyVersion
from feedback.platform.errors import DomainError
from feedback.serving.backends import Generated
from feedback.serving.policies import policy_register
from training.execution import training_run_execute
from training.gate import _drift, gate_evaluate, gate_request
from training.models import Automation, GateEvaluation, TrainingRun

from .test_automation import drive
from .test_reward_runs import FAST, URL, judged_round

LORA_DPO = {"learning_rate": 0.005, "max_steps": 8, "per_device_train_batch_size": 8,
            "eval_every": 8}  # fmt: skip


def test_the_gate_reports_axis_deltas_and_kl_drift_and_rejects_a_drifting_candidate(
    api, admin, annotator, tiny_policy
):
    client = api(admin)
    number = judged_round(api, annotator, n=12, seed=8)
    axis_runs = {}
    for axis in ("helpful", "harmless"):
        recipe = {**FAST, "max_steps": 2, "axis": axis}
        response = client.post(
            URL, {"kind": "reward", "rounds": [number], "recipe": recipe}, format="json"
        )
        axis_runs[axis] = training_run_execute(run_id=response.json()["id"])
        assert axis_runs[axis].status == "succeeded", axis_runs[axis].error
    # A newer harmless run that never finished is not the one the gate uses.
    stale = client.post(
        URL, {"kind": "reward", "recipe": {**FAST, "axis": "harmless"}}, format="json"
    ).json()
    assert client.post(f"{URL}{stale['id']}/cancel/").status_code == 200

    # The round trains a reward model and a LoRA DPO candidate by itself; its gate has a KL
    # limit so small that any trained candidate exceeds it, and a threshold any candidate meets.
    round_id = Round.objects.get(number=number).pk
    response = client.post(
        f"/api/v1/rounds/{round_id}/automation/",
        {"reward_recipe": {**FAST, "max_steps": 4}, "policy_recipe": LORA_DPO, "gate_threshold": 0.0,
         "gate_prompts": 8, "gate_max_kl_drift": 1e-6},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["gate_max_kl_drift"] == 1e-6
    automation = drive(response.json()["id"])
    assert automation.stage == "done", automation.error
    assert [h["stage"] for h in automation.history][-3:] == ["gate", "next_round", "done"]
    gate = automation.gate
    candidate = automation.policy_run.produced_policy
    assert candidate.adapter_path  # the drift loaded a LoRA adapter on its base
    assert gate.max_kl_drift == 1e-6 and gate.win_rate >= gate.threshold
    assert gate.status == "failed" and gate.metrics["failed_on"] == ["kl_drift"]
    assert gate.metrics["kl_drift"] > 1e-6 and gate.metrics["kl_drift_per_token"] > 0
    assert candidate.status == "rejected" and not Deployment.objects.exists()
    assert PolicyVersion.objects.get(status="active") == tiny_policy
    # Per-axis deltas from the newest succeeded model of each axis; honest has none.
    axes = gate.metrics["axes"]
    assert set(axes) == {"helpful", "harmless"}
    for axis, entry in axes.items():
        assert entry["reward_run"] == axis_runs[axis].pk
        mean = entry["mean_reward"]
        assert math.isclose(entry["delta"], mean["candidate"] - mean["baseline"])
    assert any(entry["delta"] != 0 for entry in axes.values())  # its answers are its own
    # The metrics the gate reported before are still there, unchanged in meaning.
    assert gate.metrics["prompts"] == 8 and gate.metrics["samples_per_prompt"] == 4
    assert set(gate.metrics) >= {"mean_reward", "reward_delta", "length_delta"}
    assert gate.reward_run == automation.reward_run
    assert TrainingRun.objects.get(pk=stale["id"]).status == "cancelled"

    # The serving weights, registered again as a candidate: the same answers, the same scores
    # from every model (a tie throughout), and no drift. It passes a limit it is well inside.
    same = policy_register(name="tiny-copy", base_model=tiny_policy.base_model)
    response = client.post(
        f"/api/v1/policies/{same.pk}/gate/",
        {"prompts": 8, "threshold": 0.5, "reward_run": gate.reward_run_id, "max_kl_drift": 1e-4},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["max_kl_drift"] == 1e-4
    copy_gate = gate_evaluate(gate_id=response.json()["id"])
    assert abs(copy_gate.metrics["kl_drift"]) < 1e-4, copy_gate.metrics
    assert copy_gate.win_rate == 0.5 and copy_gate.metrics["reward_delta"] == 0
    assert {axis: entry["delta"] for axis, entry in copy_gate.metrics["axes"].items()} == {
        "helpful": 0.0, "harmless": 0.0,
    }  # fmt: skip
    assert copy_gate.status == "passed" and copy_gate.metrics["failed_on"] == []
    assert Deployment.objects.get().policy_version == same  # through the readiness check

    detail = client.get(f"/api/v1/gates/{gate.pk}/").json()
    assert detail["max_kl_drift"] == 1e-6 and detail["metrics"]["failed_on"] == ["kl_drift"]
    browser = Client()
    browser.force_login(admin)
    page = browser.get("/manage/policies/").content.decode()
    assert "KL drift: " in page and "failed on: kl_drift" in page
    assert "reward delta by axis: " in page and re.search(r"harmless -?\d+\.\d\d", page)


def test_a_bad_kl_limit_is_a_400_naming_the_field(api, admin, annotator, tiny_policy):
    same = policy_register(name="tiny-copy", base_model=tiny_policy.base_model)
    round_id = Round.objects.get(number=judged_round(api, annotator, n=2)).pk
    for bad in (-0.5, "lots", "nan"):
        response = api(admin).post(
            f"/api/v1/policies/{same.pk}/gate/", {"max_kl_drift": bad}, format="json"
        )
        assert response.status_code == 400, bad
        assert list(response.json()["fields"]) == ["max_kl_drift"]
        response = api(admin).post(
            f"/api/v1/rounds/{round_id}/automation/", {"gate_max_kl_drift": bad}, format="json"
        )
        assert response.status_code == 400, bad
        assert list(response.json()["fields"]) == ["gate_max_kl_drift"]
    with pytest.raises(DomainError) as refused:  # the service checks too, for callers in code
        gate_request(candidate_id=same.pk, max_kl_drift=float("nan"))
    assert list(refused.value.fields) == ["max_kl_drift"]
    assert not GateEvaluation.objects.exists() and not Automation.objects.exists()


def test_a_drift_that_cannot_be_measured_is_recorded_or_errors_a_gate_with_a_limit(tiny_policy):
    """A policy named by a hub id that is not downloaded: its log-probabilities are out of reach."""
    remote = policy_register(name="remote", base_model="no-such-org/no-such-model")
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}]]
    answers = {"candidate": [[Generated(text="5. Happy to help!", finish_reason="stop")]]}
    unlimited = GateEvaluation(candidate=remote, baseline=tiny_policy, max_kl_drift=None)
    metrics = _drift(unlimited, prompts, answers)
    assert (
        metrics["kl_drift"] is None
        and "no-such-org/no-such-model" in metrics["kl_drift_unavailable"]
    )
    limited = GateEvaluation(candidate=remote, baseline=tiny_policy, max_kl_drift=0.5)
    with pytest.raises(DomainError, match="cannot pass unchecked") as refused:
        _drift(limited, prompts, answers)
    assert refused.value.code == "kl_drift_unavailable"
