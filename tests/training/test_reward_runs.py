"""Reward-model runs as jobs: from judgments (made by a simulated annotator through the API) to a
snapshot, a TRL run in a real worker, metrics, provenance and artifacts; a redelivered job does
nothing; recipes are validated; one active run per policy; cancel."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from django.conf import settings

from annotation.imports import prompts_import
from annotation.rounds import round_open_from_imported
from feedback.serving import synthetic
from training.execution import training_run_execute
from training.judges import oracle_win_rate
from training.models import TrainingRun
from training.tasks import training_run_execute as training_run_task
from training.trainers.common import reward_scorer

from ..annotation.helpers import lease, submit_url

URL = "/api/v1/training-runs/"


# The (correct, polite) answers each prompt of a judged round gets. The oracle ranks them by
# their 3H totals: right-polite 21 > right-rude 15 > wrong-polite 10.
MIXED = ((True, True), (False, True), (True, False))
# The wrong answer rude too: right-polite 21 > right-rude 15 > wrong-rude 4. Here tone never
# goes against the ranking, and tone is what the tiny reward model learns from 40 prompts; right
# from wrong it hardly learns (held-out agreement about 0.5 on either set), so on MIXED rounds,
# where wrong-polite loses to right-rude, it learns little of anything (0.49-0.61 held out).
TONE_CONSISTENT = ((True, True), (True, False), (False, False))


def answers_for(text: str, kinds: tuple[tuple[bool, bool], ...], rng: random.Random) -> list[str]:
    kind = "capital" if "capital" in text else "arithmetic"
    question = synthetic.Question(text, synthetic.expected_answer(text), kind)
    return [synthetic.answer_for(question, correct=c, polite=p, rng=rng) for c, p in kinds]


def judged_round(
    api, annotator, n: int = 40, *, seed: int = 9, invert: bool = False, answers=MIXED
) -> int:
    """n synthetic prompts with three answers each (``answers``: MIXED, a right-polite, a
    wrong-polite and a right-rude one), each judged by the oracle acting as an annotator through
    the API (``invert``: worst first)."""
    rng = random.Random(4)
    lines = []
    for text in synthetic.prompts(n, seed=seed):
        lines.append(
            json.dumps(
                {
                    "prompt": text,
                    "completions": [
                        {"text": a, "model": "synthetic"} for a in answers_for(text, answers, rng)
                    ],
                }
            )
        )
    prompts_import(lines=lines)
    round_, _ = round_open_from_imported(k=3, overlap=1, seed=1)
    client = api(annotator)
    while (task := lease(client)) is not None:
        question = task["prompt"]["messages"][-1]["content"]
        texts = {c["id"]: c["text"] for c in task["completions"]}
        ranking = synthetic.oracle_ranking(question, texts)
        body = {
            "ranking": ranking[::-1] if invert else ranking,
            "scores": {str(cid): synthetic.oracle_scores(question, t) for cid, t in texts.items()},
            "strength": "better" if len(ranking[0]) == 1 else "",
            "time_spent_ms": 1000,
        }
        assert client.post(submit_url(task["assignment"]), body, format="json").status_code == 200
    return round_.number


FAST = {
    "use_lora": False,
    "learning_rate": 0.001,
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 16,
    # Held out once, at the last step (tests/training/test_eval_metrics.py checks the curve).
    "eval_every": 10_000,
}


def held_out_agreement(run: TrainingRun, *, trained_on: list[str], n: int = 40) -> dict[str, float]:
    """How often the run's reward model orders two answers as the oracle does, on n questions
    it never saw (none of ``trained_on``), each with a TONE_CONSISTENT set of answers: polite
    over rude (both right), right over wrong (both rude), right-polite over wrong-rude, and all
    three together. A coin flip scores 0.5 on each."""
    score = reward_scorer(
        Path(settings.ARTIFACTS_DIR) / run.artifact_path / "model",
        str(Path(settings.ARTIFACTS_DIR) / run.base_policy.base_model),
    )
    fresh = [q for q in synthetic.prompts(n + len(trained_on), seed=10_000) if q not in trained_on]
    questions = fresh[:n]
    rng = random.Random(11)
    right = {"polite_over_rude": 0, "right_over_wrong": 0, "polite_right_over_rude_wrong": 0}
    for text in questions:
        prompt = [{"role": "user", "content": text}]
        polite, rude, rude_wrong = (
            score(prompt, a) for a in answers_for(text, TONE_CONSISTENT, rng)
        )
        right["polite_over_rude"] += polite > rude
        right["right_over_wrong"] += rude > rude_wrong
        right["polite_right_over_rude_wrong"] += polite > rude_wrong
    shares = {pair: hits / len(questions) for pair, hits in right.items()}
    return {**shares, "all": sum(right.values()) / (3 * len(questions))}


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_reward_run_trains_in_a_worker_and_records_everything(
    celery_worker_process, api, admin, annotator, tiny_policy
):
    number = judged_round(api, annotator, answers=TONE_CONSISTENT)
    response = api(admin).post(
        URL, {"kind": "reward", "rounds": [number], "recipe": FAST}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    # The worker may already have claimed it by the time the response is written.
    assert body["status"] in ("queued", "running", "succeeded") and body["base_policy"] == "tiny-v0"
    manifest = body["snapshot"]["manifest"]
    assert manifest["rows"]["train"] + manifest["rows"]["eval"] == 40 * 3
    assert manifest["rows"]["eval"] > 0  # three of these 40 prompts hash into eval
    assert manifest["rubric_versions"] == ["3H@1"] and manifest["source_rounds"] == [number]
    # The commit enqueued the job; a second delivery must find the run claimed.
    assert training_run_task.delay(body["id"]).get(timeout=600) in ("running", "succeeded")
    run = TrainingRun.objects.get(pk=body["id"])
    assert run.status == "succeeded", run.error
    assert run.progress_step > 0 and run.progress_step == run.progress_total
    assert run.metrics_history and "loss" in run.metrics_history[0]
    # It learned the oracle's preferences: on questions it never saw it puts the polite answer
    # over the rude one (0.975-1.0 over four seeds on this machine) and orders the three pairs
    # as the oracle does 0.825-0.86 of the time, where chance is 0.5 (and a model trained on
    # coin-flip labels scores about that). On the eval split's 9 pairs, the 6 that differ in
    # tone make 2/3.
    agreement = held_out_agreement(run, trained_on=synthetic.prompts(40, seed=9))
    assert agreement["polite_over_rude"] >= 0.9 and agreement["all"] >= 0.7, agreement
    assert run.metrics["eval_accuracy"] >= 0.66
    assert run.provenance["dataset_sha256"] == run.snapshot.sha256
    assert run.provenance["seed"] == 42 and run.provenance["versions"]["trl"]
    assert run.provenance["base_model"] == tiny_policy.base_model
    folder = Path(settings.ARTIFACTS_DIR) / run.artifact_path
    assert (folder / "model" / "model.safetensors").exists() and (folder / "meta.json").exists()
    assert not folder.with_name(f"{run.pk}.partial").exists()
    detail = api(admin).get(f"{URL}{run.pk}/").json()
    assert detail["status"] == "succeeded" and detail["metrics"] == run.metrics


def test_a_redelivered_job_does_nothing(api, admin, annotator, tiny_policy):
    number = judged_round(api, annotator, n=6)
    run_id = (
        api(admin)
        .post(
            URL,
            {"kind": "reward", "rounds": [number], "recipe": {**FAST, "max_steps": 2}},
            format="json",
        )
        .json()["id"]
    )
    assert training_run_execute(run_id=run_id).status == "succeeded"
    finished = TrainingRun.objects.get(pk=run_id).finished_at
    assert training_run_execute(run_id=run_id).status == "succeeded"
    assert TrainingRun.objects.get(pk=run_id).finished_at == finished


@pytest.mark.parametrize(
    ("recipe", "fields"),
    [
        ({"learning_rat": 0.1}, "recipe.learning_rat"),
        ({"max_steps": "10"}, "recipe.max_steps"),
        ({"use_lora": 1}, "recipe.use_lora"),
        ({"max_steps": True}, "recipe.max_steps"),
    ],
)
def test_a_bad_recipe_is_a_400_naming_the_field(api, admin, annotator, tiny_policy, recipe, fields):
    judged_round(api, annotator, n=3)
    response = api(admin).post(URL, {"kind": "reward", "recipe": recipe}, format="json")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == [fields]
    assert TrainingRun.objects.count() == 0


def test_one_active_run_per_policy_and_cancel(api, admin, annotator, tiny_policy):
    judged_round(api, annotator, n=3)
    first = api(admin).post(URL, {"kind": "reward", "recipe": FAST}, format="json").json()
    second = api(admin).post(URL, {"kind": "reward", "recipe": FAST}, format="json")
    assert second.status_code == 409
    assert second.json()["training_run"] == first["id"]
    cancelled = api(admin).post(f"{URL}{first['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert api(admin).post(f"{URL}{first['id']}/cancel/").status_code == 409
    # The job of a cancelled run finds nothing to claim.
    assert training_run_execute(run_id=first["id"]).status == "cancelled"


def test_no_judgments_no_run(api, admin, tiny_policy):
    response = api(admin).post(URL, {"kind": "reward"}, format="json")
    assert response.status_code == 400
    assert "rounds" in response.json()["fields"]


def test_only_admins_start_runs(api, researcher, annotator, tiny_policy):
    for user in (researcher, annotator):
        assert api(user).post(URL, {"kind": "reward"}, format="json").status_code == 403


def test_a_dpo_run_registers_a_candidate_that_can_be_deployed_and_serve(
    api, admin, annotator, tiny_policy
):
    from annotation.round_generation import round_generate
    from annotation.rounds import round_open_for_policy
    from feedback.models import Completion, PolicyVersion
    from feedback.serving.policies import deployment_run

    number = judged_round(api, annotator, answers=TONE_CONSISTENT)
    recipe = {"learning_rate": 0.005, "max_steps": 8, "per_device_train_batch_size": 16}
    response = api(admin).post(
        URL, {"kind": "dpo", "rounds": [number], "recipe": recipe}, format="json"
    )
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    candidate = run.produced_policy
    assert candidate.status == "candidate" and candidate.parent == tiny_policy
    assert candidate.base_model == tiny_policy.base_model
    assert (
        Path(settings.ARTIFACTS_DIR) / candidate.adapter_path / "adapter_model.safetensors"
    ).exists()
    # On the eval split's questions (unseen in training), the policy's implicit reward now
    # prefers the oracle's choice: 7 or 8 of the 9 pairs, by a margin of 0.61-0.73, over four
    # seeds here (the 6 pairs that differ in tone make 2/3). Trained on inverted pairs, the
    # margin is negative.
    assert run.metrics["eval_reward_accuracy"] >= 0.66, run.metrics
    assert run.metrics["eval_reward_margin"] > 0.2, run.metrics

    deployed = api(admin).post(f"/api/v1/policies/{candidate.pk}/deploy/").json()
    assert deployment_run(deployment_id=deployed["id"]).status == "done"
    assert PolicyVersion.objects.get(status="active") == candidate
    synthetic_round = round_open_for_policy(
        k=2, overlap=1, prompt_ids=None, include_used=True, tags=[], limit=12, seed=2
    )
    round_generate(round_id=synthetic_round.pk)
    assert Completion.objects.filter(policy_version=candidate).exists()


@pytest.mark.parametrize("invert", [False, True], ids=["better", "worse"])
def test_the_gate_deploys_a_better_candidate_and_rejects_a_worse_one(
    api, admin, annotator, tiny_policy, invert
):
    """The reward model learns from honest judgments; the candidate from honest ones, or from
    inverted ones (worst first), which make it worse. Only the better one is deployed."""
    from feedback.models import Deployment, PolicyVersion
    from training.gate import gate_evaluate

    honest = judged_round(api, annotator, n=48, seed=8)
    reward = (
        api(admin)
        .post(URL, {"kind": "reward", "rounds": [honest], "recipe": FAST}, format="json")
        .json()
    )
    assert training_run_execute(run_id=reward["id"]).status == "succeeded"
    policy_data = judged_round(api, annotator, n=60, seed=9, invert=invert)
    recipe = {"use_lora": False, "learning_rate": 0.001, "sft_weight": 1.0,
              "num_train_epochs": 3.0, "per_device_train_batch_size": 8}  # fmt: skip
    dpo = (
        api(admin)
        .post(URL, {"kind": "dpo", "rounds": [policy_data], "recipe": recipe}, format="json")
        .json()
    )
    candidate = training_run_execute(run_id=dpo["id"]).produced_policy

    response = api(admin).post(
        f"/api/v1/policies/{candidate.pk}/gate/",
        {"prompts": 16, "threshold": 0.5, "reward_run": reward["id"]},
        format="json",
    )
    assert response.status_code == 202, response.content
    gate = gate_evaluate(gate_id=response.json()["id"])
    # The oracle agrees that the candidate is better, or worse, than the serving policy.
    oracle = oracle_win_rate(candidate, tiny_policy, synthetic.prompts(24, seed=10_000))
    assert (oracle < 0.5) == invert, oracle
    assert gate.status == ("failed" if invert else "passed"), gate.win_rate
    assert gate.metrics["prompts"] == 16 and gate.metrics["samples_per_prompt"] == 4
    assert set(gate.metrics) >= {"mean_reward", "reward_delta", "length_delta"}
    assert (gate.metrics["reward_delta"] < 0) == invert
    candidate.refresh_from_db()
    if invert:
        assert candidate.status == "rejected" and not Deployment.objects.exists()
    else:
        assert Deployment.objects.get().policy_version == candidate  # deployed through readiness
        assert candidate.status == "candidate"
    assert PolicyVersion.objects.get(status="active") == tiny_policy
    detail = api(admin).get(f"/api/v1/gates/{gate.pk}/").json()
    assert detail["status"] == gate.status and detail["candidate"] == candidate.name


def test_the_gate_needs_a_reward_model_and_a_candidate(api, admin, tiny_policy):
    response = api(admin).post(f"/api/v1/policies/{tiny_policy.pk}/gate/", {}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "not_candidate"


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_dies_resumes_once_from_its_checkpoint(
    celery_worker_process, api, admin, annotator, tiny_policy
):
    import os
    import signal
    import subprocess
    import time

    from training.models import DatasetSnapshot
    from training.runs import training_runs_recover
    from training.snapshots import snapshot_create_preference

    from ..conftest import ROOT, WORKER_COMMAND, database_url

    number = judged_round(api, annotator, n=20)
    snapshot = snapshot_create_preference(rounds=[number])
    from dataclasses import asdict

    from training.trainers.reward import RewardRecipe

    recipe = asdict(RewardRecipe(learning_rate=0.0005, max_steps=100, per_device_train_batch_size=4,
                                 max_length=96, use_lora=False, checkpoint_every=5,
                                 eval_every=100))  # fmt: skip
    run = TrainingRun.objects.create(
        kind="reward", base_policy=tiny_policy, snapshot=snapshot, recipe=recipe
    )
    assert DatasetSnapshot.objects.count() == 1

    # A worker of its own, on a queue of its own, that this test kills mid-training.
    env = {**os.environ, "DATABASE_URL": database_url()}
    command = [
        arg if not arg.startswith("--queues=") else "--queues=doomed" for arg in WORKER_COMMAND
    ]
    doomed = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        training_run_task.apply_async(args=[run.pk], queue="doomed")
        deadline = time.monotonic() + 180
        while TrainingRun.objects.get(pk=run.pk).progress_step < 12:  # past two checkpoints
            assert time.monotonic() < deadline and doomed.poll() is None
            time.sleep(0.2)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
    assert TrainingRun.objects.get(pk=run.pk).status == "running"

    # The sweep notices the silence, requeues it once; the surviving worker resumes it.
    assert training_runs_recover(stale_after_s=0) == [run.pk]
    outcome = training_run_task.delay(run.pk).get(timeout=600)
    run.refresh_from_db()
    assert outcome == "succeeded", run.error
    assert run.status == "succeeded" and run.attempts == 2
    assert run.metrics["resumed_from_step"] >= 10
    assert run.progress_step == 100

    # A second death is not retried: the run fails and says why.
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    assert training_runs_recover(stale_after_s=0) == []
    run.refresh_from_db()
    assert run.status == "failed" and "stopped twice" in run.error


def test_a_per_axis_reward_model_trains_on_that_axis_scores(api, admin, annotator, tiny_policy):
    number = judged_round(api, annotator, n=40)
    bad = api(admin).post(URL, {"kind": "reward", "recipe": {"axis": "funny"}}, format="json")
    assert bad.status_code == 400 and "recipe.axis" in bad.json()["fields"]

    response = api(admin).post(
        URL, {"kind": "reward", "rounds": [number], "recipe": {**FAST, "axis": "harmless"}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    snapshot = response.json()["snapshot"]
    # Per prompt: right-polite and wrong-polite (harmless 7) each over right-rude (harmless 1);
    # the two polite ones tie on this axis, so they make no pair.
    assert snapshot["manifest"]["filters"]["axis"] == "harmless"
    assert sum(snapshot["manifest"]["rows"].values()) == 40 * 2
    folder = Path(settings.ARTIFACTS_DIR) / TrainingRun.objects.get().snapshot.path
    for line in (folder / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        rejected = row["rejected"][0]["content"]
        assert synthetic.oracle_scores(row["prompt"][0]["content"], rejected)["harmless"] == 1
        assert row["margin"] == 1.0  # (7 - 1) / (7 - 1)

    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    # A harmlessness model: on unseen questions it puts polite over rude (0.975 and 1.0 for two
    # seeds here), right or wrong alike; on the eval split's 6 pairs it misses at most one.
    agreement = held_out_agreement(run, trained_on=synthetic.prompts(40, seed=9))
    assert agreement["polite_over_rude"] >= 0.9, agreement
    assert agreement["polite_right_over_rude_wrong"] >= 0.9, agreement
    assert run.metrics["eval_accuracy"] >= 5 / 6
