"""KTO runs: each task's best answer labelled desirable and its worst undesirable (no pairs),
TRL's KTOTrainer on them, and a candidate the oracle finds right more often than the policy it
came from (in these tasks the worst answer is the wrong one: right-and-rude ranks second)."""

from __future__ import annotations

from feedback import synthetic
from training.runs import training_run_execute
from training.simulate import oracle_quality

from .test_reward_runs import URL, judged_round


def test_kto_on_best_and_worst_answers_makes_the_policy_right_more_often(
    api, admin, annotator, tiny_policy
):
    number = judged_round(api, annotator, n=40)
    recipe = {"use_lora": False, "learning_rate": 0.001, "num_train_epochs": 2.0,
              "per_device_train_batch_size": 16, "max_length": 128}  # fmt: skip
    response = api(admin).post(
        URL, {"kind": "kto", "rounds": [number], "recipe": recipe}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    manifest = body["snapshot"]["manifest"]
    assert manifest["columns"] == ["prompt", "completion", "label"]
    assert manifest["rows"]["train"] + manifest["rows"]["eval"] == 40 * 2
    run = training_run_execute(run_id=body["id"])
    assert run.status == "succeeded", run.error
    candidate = run.produced_policy
    assert candidate.name == f"tiny-v0-kto-run{run.pk}" and candidate.status == "candidate"

    held_out = synthetic.prompts(24, seed=10_000)
    before, after = oracle_quality(tiny_policy, held_out), oracle_quality(candidate, held_out)
    assert after["correctness"] > before["correctness"]
