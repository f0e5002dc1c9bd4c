"""Runs on several processes: a recipe with ``num_processes: 2`` trains through ``accelerate
launch`` (two processes, torch.distributed over gloo on this CPU machine, as over NCCL on GPUs),
the worker relays their progress into the run's row, and the result is an ordinary run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings

from feedback.serving import synthetic
from training.execution import training_run_execute
from training.launch import deepspeed_config
from training.models import TrainingRun

from .test_reward_runs import FAST, TONE_CONSISTENT, URL, held_out_agreement, judged_round


def test_a_reward_run_on_two_processes_through_accelerate_launch(
    api, admin, annotator, tiny_policy
):
    number = judged_round(api, annotator, n=16, answers=TONE_CONSISTENT)
    recipe = {**FAST, "num_processes": 2, "num_train_epochs": 2.0, "per_device_train_batch_size": 8}
    response = api(admin).post(
        URL, {"kind": "reward", "rounds": [number], "recipe": recipe}, format="json"
    )
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    assert run.metrics["world_size"] == 2  # really two processes, not one
    # The two processes trained one model that learned the judgments: on 40 questions it never
    # saw, it puts polite over rude and orders the three answers as the oracle does (measured
    # 0.9 to 0.975 and 0.71 to 0.81 over five seeds; a coin flip scores 0.5).
    agreement = held_out_agreement(run, trained_on=synthetic.prompts(16, seed=9))
    assert agreement["polite_over_rude"] >= 0.8, agreement
    assert agreement["all"] >= 0.6, agreement
    # 48 pairs minus the eval split, 8 per process and step, 2 processes, 2 epochs.
    train_rows = run.snapshot.manifest["rows"]["train"]
    assert run.progress_total == run.progress_step == 2 * -(-train_rows // 16)
    assert [h["step"] for h in run.metrics_history if "loss" in h][:2] == [1, 2]
    folder = Path(settings.ARTIFACTS_DIR) / run.artifact_path
    assert (folder / "model" / "model.safetensors").exists()
    spec = json.loads((folder / "launch.json").read_text())
    assert spec["kind"] == "reward" and spec["recipe"]["num_processes"] == 2


def test_launch_options_are_checked(api, admin, annotator, tiny_policy):
    judged_round(api, annotator, n=3)
    for recipe, field in (({"num_processes": 0}, "recipe.num_processes"),
                          ({"deepspeed_stage": 4}, "recipe.deepspeed_stage")):  # fmt: skip
        response = api(admin).post(URL, {"kind": "reward", "recipe": recipe}, format="json")
        assert response.status_code == 400 and list(response.json()["fields"]) == [field]
    # DeepSpeed on a worker without it (or without GPUs): the run fails saying so, at once.
    body = (
        api(admin)
        .post(URL, {"kind": "reward", "recipe": {**FAST, "deepspeed_stage": 2}}, format="json")
        .json()
    )
    with pytest.raises(RuntimeError, match="DeepSpeed"):
        training_run_execute(run_id=body["id"])
    run = TrainingRun.objects.get(pk=body["id"])
    assert run.status == "failed" and "DeepSpeed" in run.error


def test_the_zero_config_leaves_batch_and_precision_to_the_trainer():
    config = deepspeed_config(3)
    assert config["zero_optimization"]["stage"] == 3
    assert config["train_micro_batch_size_per_gpu"] == "auto" and config["bf16"] == {
        "enabled": "auto"
    }
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
