"""SFT runs: demonstrations written through the API (and, optionally, each judgment's best
completion) become a prompt-completion snapshot; TRL's SFTTrainer tunes the policy on it and
the candidate answers the way the demonstrations do."""

from __future__ import annotations

import json
import random

from annotation.imports import prompts_import
from annotation.rounds import round_open_from_imported
from feedback.serving import synthetic
from training.execution import training_run_execute
from training.judges import oracle_quality
from training.models import TrainingRun

from .test_reward_runs import URL, judged_round

FULL = {"use_lora": False, "learning_rate": 0.001, "num_train_epochs": 3.0,
        "per_device_train_batch_size": 8, "max_length": 128, "eval_every": 10_000}  # fmt: skip


def demonstrate(api, annotator, n: int) -> int:
    """The annotator writes the ideal answer (right and polite) for n prompts, via the API."""
    # Annotators are asked for demonstrations on the prompts of open rounds.
    completions = [{"text": "One answer."}, {"text": "Another answer."}]
    lines = [json.dumps({"prompt": q, "completions": completions, "tags": ["demo"]})
             for q in synthetic.prompts(n, seed=21)]  # fmt: skip
    prompts_import(lines=lines)
    round_open_from_imported(k=2, overlap=1, tags=["demo"])
    client = api(annotator)
    rng = random.Random(0)
    written = 0
    while (next_ := client.get("/api/v1/demonstrations/next/")).status_code == 200:
        prompt = next_.json()
        text = prompt["messages"][-1]["content"]
        kind = "capital" if "capital" in text else "arithmetic"
        question = synthetic.Question(text, synthetic.expected_answer(text), kind)
        answer = synthetic.answer_for(question, correct=True, polite=True, rng=rng)
        response = client.post(
            "/api/v1/demonstrations/", {"prompt": prompt["prompt"], "text": answer}, format="json"
        )
        assert response.status_code == 201, response.content
        written += 1
    return written


def test_sft_on_demonstrations_makes_the_policy_answer_like_them(
    api, admin, annotator, tiny_policy
):
    assert demonstrate(api, annotator, 60) == 60
    response = api(admin).post(URL, {"kind": "sft", "recipe": FULL}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    manifest = body["snapshot"]["manifest"]
    assert manifest["columns"] == ["prompt", "completion"]
    assert manifest["rows"]["train"] + manifest["rows"]["eval"] == 60

    run = training_run_execute(run_id=body["id"])
    assert run.status == "succeeded", run.error
    assert run.metrics_history and "loss" in run.metrics_history[0]
    candidate = run.produced_policy
    assert candidate.status == "candidate" and candidate.parent == tiny_policy
    assert candidate.name == f"tiny-v0-sft-run{run.pk}"
    assert candidate.adapter_path == ""  # full weights

    held_out = synthetic.prompts(24, seed=10_000)
    before, after = oracle_quality(tiny_policy, held_out), oracle_quality(candidate, held_out)
    assert after["rudeness"] < before["rudeness"] and after["correctness"] > before["correctness"]


def test_sft_can_add_top_ranked_completions_and_needs_data(api, admin, annotator, tiny_policy):
    empty = api(admin).post(URL, {"kind": "sft"}, format="json")
    assert empty.status_code == 400 and "demonstrations" in empty.json()["detail"]
    assert not TrainingRun.objects.exists()

    number = judged_round(api, annotator, n=6)  # one best answer in each ranking
    body = api(admin).post(
        URL, {"kind": "sft", "rounds": [number], "top_ranked": True,
              "recipe": {"max_steps": 2}}, format="json",
    ).json()  # fmt: skip
    manifest = body["snapshot"]["manifest"]
    assert manifest["rows"]["train"] + manifest["rows"]["eval"] == 6
    assert manifest["source_rounds"] == [number]
    assert training_run_execute(run_id=body["id"]).status == "succeeded"
