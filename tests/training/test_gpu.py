"""The trainers' CUDA-only path (marker ``gpu``: skipped without a CUDA device, and in CI, which
has none): on a GPU the shared training arguments leave the CPU, use bf16 where the card has it
and turn gradient checkpointing on, and a reward run trains that way to the end."""

from __future__ import annotations

import math

import pytest

from training.execution import training_run_execute

from .test_reward_runs import FAST, URL, judged_round

pytestmark = pytest.mark.gpu


def test_the_shared_training_arguments_use_the_gpu(tmp_path):
    import torch

    from training.trainers.common import trainer_arguments
    from training.trainers.reward import RewardRecipe

    arguments = trainer_arguments(RewardRecipe(), tmp_path)
    assert arguments["use_cpu"] is False
    assert arguments["bf16"] is torch.cuda.is_bf16_supported()
    assert arguments["gradient_checkpointing"] is True


def test_a_reward_run_trains_on_the_gpu(api, admin, annotator, tiny_policy):
    number = judged_round(api, annotator, n=12)
    response = api(admin).post(
        URL, {"kind": "reward", "rounds": [number], "recipe": {**FAST, "max_steps": 4}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    assert run.progress_step == 4 and math.isfinite(run.metrics["train_loss"])
