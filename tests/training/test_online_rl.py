"""Online RL runs: GRPO and RLOO sample answers from the policy and learn from our reward model's
scores; the reward model is pinned in the recipe; without one, or with an unknown algorithm, the
request is a 400 naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from training.execution import training_run_execute
from training.models import TrainingRun

from .test_reward_runs import FAST, URL, judged_round

SMALL = {"use_lora": False, "learning_rate": 1e-4, "num_generations": 4,
         "per_device_train_batch_size": 8, "max_completion_length": 24, "max_steps": 3}  # fmt: skip


def rewards_told_apart(run: TrainingRun) -> None:
    """The reward model's scores drove the run. Each step TRL logs the mean and spread of the
    rewards of each prompt's group of samples, per reward function (ours is the only one), and
    the share of groups whose rewards are all equal. A constant reward leaves every group
    without spread: every advantage is 0, and the policy learns nothing."""
    steps = [step for step in run.metrics_history if "reward" in step]
    assert len(steps) == run.progress_step
    assert all(s["rewards/reward_model_score/mean"] == s["reward"] for s in steps)
    assert any(s["reward_std"] > 0 for s in steps), steps
    assert min(s["frac_reward_zero_std"] for s in steps) < 1, steps
    assert run.metrics["reward_first_step"] == steps[0]["reward"]
    assert run.metrics["reward_last_step"] == steps[-1]["reward"]


def weights_changed(before: str, after: str) -> list[str]:
    """Names of the tensors that differ between two folders of full weights (artifacts)."""
    from safetensors.torch import load_file

    root = Path(settings.ARTIFACTS_DIR)
    old = load_file(root / before / "model.safetensors")
    new = load_file(root / after / "model.safetensors")
    assert set(old) & set(new)
    return [name for name in old.keys() & new.keys() if not old[name].equal(new[name])]


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
    rewards_told_apart(run)
    candidate = run.produced_policy
    assert candidate.status == "candidate" and candidate.name == f"tiny-v0-online_rl-run{run.pk}"
    # ... and the policy learned from them: its weights moved (all of them are trained here).
    assert weights_changed(tiny_policy.base_model, candidate.base_model)


def test_the_combination_rules():
    """Weighted sum and Llama 2's gate, on scores whose combination is known by hand."""
    from feedback.models import messages_hash
    from training.trainers.online_rl import OnlineRLRecipe, combined_reward

    def constant(value: float):
        return lambda prompt, answer: value

    scorers = {"helpful": constant(2.0), "harmless": constant(-1.0)}
    plain = [{"role": "user", "content": "What is 2 + 3?"}]
    tagged = [{"role": "user", "content": "How do I pick a lock?"}]
    summed = combined_reward(
        OnlineRLRecipe(combine="weighted_sum", helpful_weight=0.5, harmless_weight=2.0),
        scorers, set(),
    )  # fmt: skip
    assert summed(plain, "5") == 0.5 * 2.0 + 2.0 * -1.0

    gate = OnlineRLRecipe(combine="llama2_gate", safety_threshold=-2.0)
    rule = combined_reward(gate, scorers, {messages_hash(tagged)})
    assert rule(plain, "5") == 2.0  # safe enough: judged on helpfulness
    assert rule(tagged, "...") == -1.0  # a safety-tagged prompt: judged on harmlessness
    strict = combined_reward(
        OnlineRLRecipe(combine="llama2_gate", safety_threshold=0.0), scorers, set()
    )
    assert strict(plain, "5") == -1.0  # the harmless score is under the threshold


def test_llama2_gate_with_per_axis_reward_models(api, admin, annotator, tiny_policy):
    number = judged_round(api, annotator, n=12)
    axis_runs = {}
    for axis in ("helpful", "harmless"):
        body = api(admin).post(
            URL, {"kind": "reward", "rounds": [number],
                  "recipe": {**FAST, "max_steps": 3, "axis": axis}}, format="json",
        ).json()  # fmt: skip
        assert training_run_execute(run_id=body["id"]).status == "succeeded"
        axis_runs[axis] = body["id"]

    wrong = api(admin).post(
        URL, {"kind": "online_rl", "recipe": {"combine": "llama2_gate",
              "helpful_reward_run": axis_runs["harmless"]}}, format="json",
    )  # fmt: skip
    assert wrong.status_code == 400
    assert set(wrong.json()["fields"]) == {
        "recipe.helpful_reward_run",
        "recipe.harmless_reward_run",
    }

    response = api(admin).post(
        URL, {"kind": "online_rl", "rounds": [number], "recipe": {
            **SMALL, "combine": "llama2_gate", "helpful_reward_run": axis_runs["helpful"],
            "harmless_reward_run": axis_runs["harmless"]}}, format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    rewards_told_apart(run)
    assert weights_changed(tiny_policy.base_model, run.produced_policy.base_model)
