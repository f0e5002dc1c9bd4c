"""Online RL runs: GRPO and RLOO sample answers from the policy and learn from our reward model's
scores; the reward model is pinned in the recipe; without one, or with an unknown algorithm, the
request is a 400 naming the field."""

from __future__ import annotations

import pytest

from training.models import TrainingRun
from training.runs import training_run_execute

from .test_reward_runs import FAST, URL, judged_round

SMALL = {"use_lora": False, "learning_rate": 1e-4, "num_generations": 4,
         "per_device_train_batch_size": 8, "max_completion_length": 24, "max_steps": 3}  # fmt: skip


def test_online_rl_needs_a_reward_model_and_a_known_algorithm(api, admin, annotator, tiny_policy):
    judged_round(api, annotator, n=4)
    response = api(admin).post(URL, {"kind": "online_rl"}, format="json")
    assert response.status_code == 400 and "recipe.reward_run" in response.json()["fields"]
    response = api(admin).post(
        URL, {"kind": "online_rl", "recipe": {"algorithm": "ppo"}}, format="json"
    )
    assert response.status_code == 400 and "recipe.algorithm" in response.json()["fields"]
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_online_rl_trains_the_policy_against_the_reward_model(
    api, admin, annotator, tiny_policy, algorithm
):
    number = judged_round(api, annotator, n=12)
    reward = api(admin).post(
        URL, {"kind": "reward", "rounds": [number], "recipe": {**FAST, "max_steps": 4}},
        format="json",
    ).json()  # fmt: skip
    assert training_run_execute(run_id=reward["id"]).status == "succeeded"

    response = api(admin).post(
        URL, {"kind": "online_rl", "rounds": [number],
              "recipe": {**SMALL, "algorithm": algorithm}}, format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    assert response.json()["recipe"]["reward_run"] == reward["id"]  # pinned: the newest
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    assert run.progress_step == 3
    assert any("reward" in step for step in run.metrics_history)
    assert "reward_last_step" in run.metrics
    candidate = run.produced_policy
    assert candidate.status == "candidate" and candidate.name == f"tiny-v0-online_rl-run{run.pk}"
