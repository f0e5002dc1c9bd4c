"""Held-out evaluation by default: every run holds out prompts (never one on both sides, even
when its snapshot was too small to hold any out), evaluates on them during training and at the
end, and keeps those points in its metrics history beside the training loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from training.execution import training_run_execute

from .test_reward_runs import FAST, TONE_CONSISTENT, URL, judged_round

TINY = {**FAST, "max_steps": 4, "eval_every": 2, "per_device_train_batch_size": 4,
        "max_length": 96}  # fmt: skip


def prompts_in(path: Path) -> set[str]:
    return {
        json.dumps(json.loads(line)["prompt"], sort_keys=True)
        for line in path.read_text().splitlines()
        if line.strip()
    }


def test_a_reward_run_holds_out_prompts_and_evaluates_during_and_after_training(
    api, admin, annotator, tiny_policy
):
    number = judged_round(api, annotator, n=6, answers=TONE_CONSISTENT)
    response = api(admin).post(
        URL, {"kind": "reward", "rounds": [number], "recipe": TINY}, format="json"
    )
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error

    # Six prompts: the snapshot's 10% hash split may hold none out; the run then holds one out.
    split = run.eval_split
    assert split["prompts"]["eval"] >= 1 and split["rows"]["eval"] >= 3, split
    assert split["prompts"]["train"] + split["prompts"]["eval"] == 6
    root = Path(settings.ARTIFACTS_DIR)
    folder = root / run.snapshot.path if split["source"] == "snapshot" else root / run.artifact_path
    folder = folder if split["source"] == "snapshot" else folder / "split"
    train, held_out = prompts_in(folder / "train.jsonl"), prompts_in(folder / "eval.jsonl")
    assert held_out and not train & held_out  # no prompt on both sides
    snapshot = root / run.snapshot.path
    assert train | held_out == prompts_in(snapshot / "train.jsonl") | prompts_in(
        snapshot / "eval.jsonl"
    )

    # Evaluated every 2 steps of 4: once during training, once at the end, in the history.
    evals = [h for h in run.metrics_history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [2, 4], run.metrics_history
    assert {"eval_accuracy", "eval_margin"} <= set(evals[0])
    assert [h["step"] for h in run.metrics_history if "loss" in h] == [1, 2, 3, 4]
    # The final metrics are the last evaluation's, with the train loss; no bookkeeping.
    assert run.metrics["eval_accuracy"] == evals[-1]["eval_accuracy"]
    assert run.metrics["eval_margin"] == evals[-1]["eval_margin"]
    assert "train_loss" in run.metrics and "eval_runtime" not in run.metrics
    detail = api(admin).get(f"{URL}{run.pk}/").json()
    assert detail["eval_split"] == split

    # TensorBoard (the default report_to, offline) has the same points in the run's folder.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(root / run.artifact_path / "tensorboard")).Reload()
    assert [e.step for e in board.Scalars("eval/accuracy")] == [2, 4]
    assert [e.value for e in board.Scalars("eval/accuracy")] == pytest.approx(
        [h["eval_accuracy"] for h in evals]
    )
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2, 3, 4]

    # A second run of the kind, and the compare page overlays the two, a colour each.
    again = api(admin).post(
        URL,
        {"kind": "reward", "rounds": [number], "recipe": {**TINY, "max_steps": 2, "seed": 7}},
        format="json",
    )
    other = training_run_execute(run_id=again.json()["id"])
    browser = Client()
    browser.force_login(admin)
    page = browser.get(f"/manage/training/compare/?runs={run.pk},{other.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    for index in (0, 1):
        assert f'data-series="{index}-train"' in html and f'data-series="{index}-eval"' in html
    assert f"Run {run.pk}, held out" in html and f"Run {other.pk}, held out" in html


def test_a_dpo_run_logs_reward_margins_on_held_out_prompts(api, admin, annotator, tiny_policy):
    number = judged_round(api, annotator, n=6, answers=TONE_CONSISTENT)
    recipe = {"learning_rate": 0.005, "max_steps": 2, "per_device_train_batch_size": 4,
              "max_length": 96}  # fmt: skip
    response = api(admin).post(
        URL, {"kind": "dpo", "rounds": [number], "recipe": recipe}, format="json"
    )
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    # No eval_every: ten evaluations over the run, which for two steps is one a step.
    evals = [h for h in run.metrics_history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [1, 2]
    wanted = {"eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins",
              "eval_rewards/accuracies"}  # fmt: skip
    assert wanted <= set(evals[-1]) and wanted <= set(run.metrics), run.metrics
    assert run.metrics["eval_reward_margin"] == run.metrics["eval_rewards/margins"]
    # The train side logs the same rewards, so the page can draw both.
    assert "rewards/margins" in run.metrics_history[0]


def test_eval_every_and_report_to_are_checked(api, admin, annotator, tiny_policy):
    judged_round(api, annotator, n=3)
    for recipe, field in (
        ({"eval_every": -1}, "recipe.eval_every"),
        ({"report_to": "myspace"}, "recipe.report_to"),
        ({"report_to": "none,tensorboard"}, "recipe.report_to"),
    ):
        response = api(admin).post(URL, {"kind": "reward", "recipe": recipe}, format="json")
        assert response.status_code == 400, recipe
        assert list(response.json()["fields"]) == [field]
