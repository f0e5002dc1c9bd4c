"""Infrastructure faults around training and the broker (issue 18, item 9).

* A training job delivered twice while its first delivery still trains (what Redis does to a job
  that outlives its visibility timeout): one claim, one training, one candidate.
* A checkpoint half-written when the worker died: the run resumes from the one before it.
* A trainer that runs out of memory: the run fails once, says what to change, and nothing serves
  its output.
* Redis restarted under load: see the last test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from feedback.models import PolicyVersion
from training.execution import OUT_OF_MEMORY_ADVICE, training_run_execute
from training.models import TrainingRun
from training.runs import training_runs_recover
from training.snapshots import snapshot_create_preference
from training.tasks import training_run_execute as training_run_task
from training.trainers.dpo import DPORecipe
from training.trainers.reward import RewardRecipe

from ..conftest import ROOT, WORKER_COMMAND, database_url
from ..feedback.test_outbox import private_broker  # noqa: F401 (a fixture)
from ..training.test_reward_runs import judged_round
from .test_worker_deaths import wait_for

RUNS = "/api/v1/training-runs/"


@contextmanager
def worker_on(queue: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process of this test's own, on a queue of its own."""
    command = [a if not a.startswith("--queues=") else f"--queues={queue}" for a in WORKER_COMMAND]
    log = open(Path(settings.VAR_DIR) / f"test-worker-{queue}.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [*command, "--loglevel=INFO"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "DATABASE_URL": database_url(), **env},
    )  # fmt: skip
    try:
        yield worker
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()


def run_for(policy: PolicyVersion, snapshot, kind: str, recipe) -> TrainingRun:
    return TrainingRun.objects.create(
        kind=kind, base_policy=policy, snapshot=snapshot, recipe=asdict(recipe)
    )


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_training_job_delivered_again_while_it_trains_runs_once(api, annotator, tiny_policy):
    snapshot = snapshot_create_preference(rounds=[judged_round(api, annotator, n=20)])
    recipe = DPORecipe(max_steps=30, per_device_train_batch_size=4, max_length=96, eval_every=30)
    run = run_for(tiny_policy, snapshot, "dpo", recipe)
    job_id = f"training-run-{run.pk}"

    # Two workers: the first delivery trains in one; the second delivery of the same message
    # (same task id, same arguments: a redelivery is nothing else) reaches the other mid-run.
    with worker_on("first-delivery") as first, worker_on("second-delivery") as second:
        training_run_task.apply_async(args=[run.pk], queue="first-delivery", task_id=job_id)
        wait_for(
            lambda: TrainingRun.objects.get(pk=run.pk).progress_step >= 1,
            timeout=300, what="the first delivery to train", process=first,
        )  # fmt: skip
        claimed = TrainingRun.objects.get(pk=run.pk)
        again = training_run_task.apply_async(
            args=[run.pk], queue="second-delivery", task_id=job_id
        )
        # The second delivery finds the run claimed, says so and ends without error, while
        # the first still trains.
        assert again.get(timeout=300) == "running"
        assert second.poll() is None
        wait_for(
            lambda: TrainingRun.objects.get(pk=run.pk).status != "running",
            timeout=600, what="the first delivery to finish", process=first,
        )  # fmt: skip

    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.attempts == 1 and run.started_at == claimed.started_at  # claimed once
    assert run.progress_step == 30  # trained once, to the end: no second pass over the steps
    produced = PolicyVersion.objects.filter(parent=tiny_policy)
    assert list(produced) == [run.produced_policy]  # one candidate
    assert run.produced_policy.status == "candidate"
    assert PolicyVersion.objects.get(status="active") == tiny_policy


def test_the_configured_visibility_timeout_outlasts_a_training_run():
    """Redis redelivers a job unacknowledged for longer than visibility_timeout: it is set
    above a day-long job and above the heartbeat staleness that detects a dead worker."""
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        pytest.skip("visibility_timeout is a Redis transport option")
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert timeout >= 24 * 3600 > settings.TRAINING_STALE_SECONDS


def test_a_run_whose_newest_checkpoint_was_cut_mid_write_resumes_from_the_one_before(
    api, admin, annotator, tiny_policy
):
    snapshot = snapshot_create_preference(rounds=[judged_round(api, annotator, n=12)])
    small = RewardRecipe(max_steps=2, per_device_train_batch_size=4, max_length=96,
                         use_lora=False, checkpoint_every=1)  # fmt: skip
    earlier = training_run_execute(run_id=run_for(tiny_policy, snapshot, "reward", small).pk)
    assert earlier.status == "succeeded", earlier.error
    complete = Path(settings.ARTIFACTS_DIR) / earlier.artifact_path / "checkpoints/checkpoint-2"
    assert (complete / "trainer_state.json").is_file()

    # The dead worker's run: the same recipe to 4 steps, its staging folder holding a complete
    # checkpoint at step 2 (the one above) and one at step 3 that the worker died writing
    # (the Trainer writes trainer_state.json last; the weights cut short).
    run = run_for(
        tiny_policy, snapshot, "reward", RewardRecipe(**{**asdict(small), "max_steps": 4})
    )
    checkpoints = Path(settings.ARTIFACTS_DIR) / "runs" / f"{run.pk}.partial" / "checkpoints"
    shutil.copytree(complete, checkpoints / "checkpoint-2")
    half = checkpoints / "checkpoint-3"
    shutil.copytree(complete, half)
    (half / "trainer_state.json").unlink()
    weights = half / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    an_hour_ago = timezone.now() - timedelta(hours=1)
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running", attempts=1, started_at=an_hour_ago, heartbeat_at=an_hour_ago
    )

    assert training_runs_recover() == [run.pk]  # the sweep notices the silence
    resumed = training_run_execute(run_id=run.pk)  # the next worker takes it

    assert resumed.status == "succeeded", resumed.error
    assert resumed.attempts == 2 and resumed.metrics["resumed_from_step"] == 2
    assert resumed.progress_step == 4
    final = Path(settings.ARTIFACTS_DIR) / resumed.artifact_path
    assert (final / "model" / "model.safetensors").is_file()
    assert not (final / "checkpoints" / "checkpoint-3").exists()  # the cut one was removed
    detail = api(admin).get(f"{RUNS}{run.pk}/").json()
    assert detail["status"] == "succeeded" and detail["error"] == ""


def test_a_trainer_that_runs_out_of_memory_fails_once_and_says_what_to_change(
    api, admin, annotator, tiny_policy
):
    number = judged_round(api, annotator, n=6)
    # LoRA matrices of rank 2**40 ask the allocator for terabytes: CPU torch refuses with a
    # RuntimeError ("DefaultCPUAllocator: can't allocate memory"), as CUDA would with
    # torch.OutOfMemoryError, inside the trainer.
    recipe = {"max_steps": 2, "per_device_train_batch_size": 4, "lora_r": 2**40}
    response = api(admin).post(RUNS, {"kind": "reward", "rounds": [number], "recipe": recipe},
                               format="json")  # fmt: skip
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]

    with pytest.raises(RuntimeError, match="can't allocate memory"):
        training_run_execute(run_id=run_id)

    detail = api(admin).get(f"{RUNS}{run_id}/").json()
    assert detail["status"] == "failed"
    assert detail["error"].startswith(OUT_OF_MEMORY_ADVICE)
    assert "per_device_train_batch_size" in detail["error"] and "QLoRA" in detail["error"]
    run = TrainingRun.objects.get(pk=run_id)
    assert run.attempts == 1 and run.produced_policy is None
    assert not (Path(settings.ARTIFACTS_DIR) / "runs" / f"{run_id}.partial").exists()
    # Not retried: a redelivered job finds nothing to claim, the dead-worker sweep leaves a
    # failed run alone, and the serving policy never changed.
    assert training_run_execute(run_id=run_id).status == "failed"
    assert training_runs_recover(stale_after_s=0) == []
    assert TrainingRun.objects.get(pk=run_id).attempts == 1
    assert PolicyVersion.objects.get(status="active") == tiny_policy
    assert not PolicyVersion.objects.filter(parent=tiny_policy).exists()


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_redis_restart_under_load_loses_and_duplicates_no_job(
    private_broker,  # noqa: F811 (the fixture imported above)
    api,
    researcher,
):
    """A private Redis (``--save ""``, no append-only file) is killed while a worker is busy and
    requests keep coming, then started again on the same port. Each request answers 202 at
    once, the outbox holds what it could not send, the worker reconnects by itself, and every
    export runs exactly once."""
    from annotation.models import ExportJob
    from feedback.models import OutboxMessage
    from feedback.platform.outbox import outbox_pending_count, outbox_publish

    client = api(researcher)
    body = {"format": "judgments", "file_format": "jsonl", "filters": {}}

    def messages_for(job_ids: list[str]) -> list[OutboxMessage]:
        return [m for m in OutboxMessage.objects.all() if m.args[0] in job_ids]

    def submit() -> str:
        response = client.post("/api/v1/exports/", body, format="json")
        assert response.status_code == 202, response.content
        return response.json()["id"]

    private_broker.start()
    with worker_on("default", CELERY_BROKER_URL=private_broker.url) as worker:
        before = [submit() for _ in range(5)]  # published as each request commits
        assert outbox_pending_count() == 0
        # The worker has taken the last of them off the queue: Redis holds none of them now.
        wait_for(
            lambda: private_broker.queue_length("default") == 0
            and ExportJob.objects.filter(pk__in=before, status="queued").count() == 0,
            timeout=120, what="the worker to take every job", process=worker,
        )  # fmt: skip
        private_broker.stop()
        # The web keeps answering, at once (it tries the broker once, without backing off),
        # and the outbox holds what it could not send.
        started = time.monotonic()
        during = [submit() for _ in range(5)]
        assert time.monotonic() - started < 15, "requests waited on the dead broker"
        assert outbox_pending_count() == 5
        assert {m.attempts for m in messages_for(during)} == {1}
        assert outbox_publish() == 0  # a relay pass in the outage: one try each, nothing lost
        private_broker.start()
        assert outbox_publish() == 5 and outbox_pending_count() == 0
        after = [submit() for _ in range(3)]
        everything = [*before, *during, *after]
        wait_for(
            lambda: ExportJob.objects.filter(pk__in=everything, status="succeeded").count()
            == len(everything),
            timeout=300, what="every export to run", process=worker,
        )  # fmt: skip
    jobs = ExportJob.objects.filter(pk__in=everything)
    assert {job.attempts for job in jobs} == {1}  # none ran twice
    # Tries are bounded: each held message by its request, then by relay passes only (the pass
    # in the outage stopped at its first failure), and never again once Redis took it.
    assert sorted(m.attempts for m in messages_for(during)) == [2, 2, 2, 2, 3]
    assert outbox_publish() == 0
