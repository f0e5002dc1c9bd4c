"""Workers die: a generation worker SIGKILLed mid-round, and the lease reaper racing itself.

(The training worker's death is in tests/training/test_reward_runs.py, an export worker's in
tests/annotation/test_export_jobs.py, the broker's outage in tests/feedback/test_outbox.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, ComparisonTask, Round, TaskCompletion
from annotation.round_generation import rounds_generation_recover
from annotation.rounds import round_open_for_policy
from annotation.tasks import leases_expire
from annotation.tasks import round_generate as round_generate_task
from feedback.models import Completion
from feedback.platform.roles import Role
from feedback.serving.backends import Sampling

from ..annotation.helpers import lease
from ..annotation.test_round_generation import assert_complete_tasks_only, synthetic_prompts
from ..conftest import ROOT, WORKER_COMMAND, client_for, database_url
from ..factories import UserFactory, open_round
from ..racing import race

PROMPTS = 96  # six batches of 16: the worker is killed after the first and before the last


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll a database condition until it holds (the worker is another process)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the worker exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_generation_worker_killed_mid_round_is_resumed_once_and_duplicates_nothing(
    celery_worker_process, tiny_policy
):
    synthetic_prompts(PROMPTS, seed=11)
    round_ = round_open_for_policy(
        k=3, overlap=1, tags=["synthetic"], seed=3, enqueue=False,
        sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=24, seed=5),
    )  # fmt: skip

    # A worker of its own, on a queue of its own, killed once it has published a batch.
    env = {**os.environ, "DATABASE_URL": database_url()}
    command = [a if not a.startswith("--queues=") else "--queues=doomed" for a in WORKER_COMMAND]
    doomed = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        round_generate_task.apply_async(args=[round_.pk], queue="doomed")
        wait_for(
            lambda: Round.objects.get(pk=round_.pk).progress_done >= 16,
            timeout=300, what="the first batch", process=doomed,
        )  # fmt: skip
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)

    killed = Round.objects.get(pk=round_.pk)
    assert killed.status == "generating" and killed.generation_attempts == 1
    assert 16 <= killed.progress_done < PROMPTS, "the round finished before the kill"
    published = {
        task.prompt_id: sorted(task.completions.values_list("pk", flat=True))
        for task in ComparisonTask.objects.filter(round=round_)
    }
    assert published  # complete tasks only, kept

    # Not stale yet under the real threshold; stale at 0 s: queued once, and a racing second
    # sweep finds nothing more to do. The surviving worker resumes it through the outbox.
    assert rounds_generation_recover() == []
    assert rounds_generation_recover(stale_after_s=0) == [round_.pk]
    wait_for(
        lambda: Round.objects.get(pk=round_.pk).status == "open",
        timeout=300, what="the resumed round to open", process=celery_worker_process,
    )  # fmt: skip
    resumed = Round.objects.get(pk=round_.pk)
    assert resumed.generation_attempts == 2 and resumed.generation_error == ""
    assert resumed.progress_done == PROMPTS
    assert resumed.tasks.count() + resumed.prompts_skipped == PROMPTS
    assert_complete_tasks_only(resumed)
    # What was published before the kill is the same task with the same completions; no prompt
    # has two tasks, and no sample index was drawn twice (unique per prompt, policy and index).
    for prompt_id, completion_ids in published.items():
        task = ComparisonTask.objects.get(round=round_, prompt_id=prompt_id)
        assert sorted(task.completions.values_list("pk", flat=True)) == completion_ids
    per_prompt = Counter(ComparisonTask.objects.filter(round=round_).values_list("prompt_id"))
    assert set(per_prompt.values()) == {1}
    assert TaskCompletion.objects.filter(task__round=round_).count() == 3 * resumed.tasks.count()
    indices = Completion.objects.filter(policy_version=tiny_policy).values_list(
        "prompt_id", "sample_index"
    )
    assert len(indices) == len(set(indices))

    # A second death is not retried: the round says why and stays as it was.
    past = timezone.now() - timedelta(hours=1)
    Round.objects.filter(pk=round_.pk).update(status="generating", generation_heartbeat_at=past)
    assert rounds_generation_recover(stale_after_s=0) == []
    assert "stopped twice" in Round.objects.get(pk=round_.pk).generation_error
    assert rounds_generation_recover(stale_after_s=0) == []  # and it is not queued later either


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_lease_reapers_racing_each_other_reclaim_each_lapsed_lease_once(postgres):
    open_round(n=40, k=3, overlap=2, seed=4)
    annotators = [UserFactory(role=Role.ANNOTATOR) for _ in range(60)]
    held = [lease(client_for(user)) for user in annotators]
    assert all(held)
    past = timezone.now() - timedelta(minutes=1)
    Assignment.objects.update(lease_expires_at=past)
    ComparisonTask.objects.update(leases_expire_at=past)

    reapers = 6
    reclaimed = race(reapers, leases_expire)  # {leases reclaimed by one sweep: how many sweeps}

    assert reclaimed.total() == reapers
    assert sum(n * sweeps for n, sweeps in reclaimed.items()) == len(held) == 60  # once each
    assert Assignment.objects.filter(status="expired").count() == 60
    assert not Assignment.objects.filter(status="leased").exists()
    assert not ComparisonTask.objects.exclude(leased_count=0).exists()
    assert not ComparisonTask.objects.exclude(submitted_count=0).exists()
    # The slots are back in the pool: a newcomer leases at once, and the beat task agrees
    # there is nothing left to reclaim.
    assert lease(client_for(UserFactory(role=Role.ANNOTATOR))) is not None
    assert leases_expire.apply().get() == 0
