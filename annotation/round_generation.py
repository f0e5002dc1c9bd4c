"""Generating a policy round: K completions per prompt by the serving policy, then its tasks.

``annotation.rounds.round_open_for_policy`` records the round (status ``generating``) and
enqueues ``round_generate`` on the ``generation`` queue once the transaction commits. A round
that selects its prompts by a reward model (``annotation.round_selection``) first gets K
candidates for its whole pool, as below but without publishing, and narrows ``prompt_ids`` to
the prompts kept. The job then walks the round's prompts in batches:

1. prompts that already have a task in this round are done (so a re-run adds nothing);
2. the policy's stored completions for the prompt are reused (unique per prompt, policy and
   sample index), and only the missing sample indices are generated;
3. a prompt is published as a task only when it has K valid completions (non-empty, distinct
   texts); otherwise up to ``max_retries`` times K more samples are drawn, and after that the
   prompt is left out and counted in ``prompts_skipped``;
4. progress and a heartbeat are written after every batch; at the end the round opens.

A worker that dies mid-round (killed, out of memory) leaves a stale heartbeat:
``rounds_generation_recover`` (a beat task) queues the round again once, and the new job goes on
from step 1, so nothing is generated or published twice; a second death is recorded as the
round's ``generation_error`` instead of retried.

A backend that is down or hangs raises after its timeout: the round records the reason, keeps
what was published (only complete tasks), and a re-run continues where it stopped.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from feedback.models import Completion, PolicyVersion, Prompt
from feedback.platform.outbox import outbox_enqueue
from feedback.serving.backends import (
    Backend,
    BackendUnavailable,
    Generated,
    Sampling,
    Target,
    get_backend,
    target_for,
)

from .distribution import distribution_statistics_refresh
from .models import ComparisonTask, Round, TaskCompletion
from .round_selection import prompts_select

log = logging.getLogger(__name__)
BATCH_PROMPTS = 16


def round_generate_enqueue(round_id: int) -> None:
    """Queue the round's generation through the outbox (sent once the caller commits)."""
    outbox_enqueue(task="annotation.tasks.round_generate", args=[round_id], queue="generation")


def round_generate(
    *, round_id: int, max_retries: int = 3, batch_prompts: int = BATCH_PROMPTS
) -> Round:
    """Generate and publish the round's tasks. Idempotent and resumable; see the module doc."""
    round_ = Round.objects.select_related("policy_version").get(pk=round_id)
    if round_.status != Round.Status.GENERATING:
        return round_
    with _error_recorded(round_):  # a refused model reference too, like any backend failure
        sampler = _Sampler(
            backend=get_backend(round_.backend or None),
            target=target_for(round_.policy_version),
            base=_sampling_of(round_),
        )
    Round.objects.filter(pk=round_.pk).update(
        generation_heartbeat_at=timezone.now(), generation_attempts=F("generation_attempts") + 1
    )
    if round_.selection != "random" and "kept" not in round_.selection_detail:
        _pool_choose(round_, sampler=sampler, max_retries=max_retries, batch_prompts=batch_prompts)
    done = set(ComparisonTask.objects.filter(round=round_).values_list("prompt_id", flat=True))
    todo = [pid for pid in round_.prompt_ids if pid not in done]
    skipped = 0
    with _error_recorded(round_):
        for start in range(0, len(todo), batch_prompts):
            prompts = list(
                Prompt.objects.filter(pk__in=todo[start : start + batch_prompts]).order_by("id")
            )
            skipped += _batch_publish(
                round_, prompts, sampler=sampler, offset=start, max_retries=max_retries
            )
            Round.objects.filter(pk=round_.pk).update(
                progress_done=len(done) + min(len(todo), start + batch_prompts),
                prompts_skipped=skipped,
                generation_heartbeat_at=timezone.now(),
            )
    Round.objects.filter(pk=round_.pk, status=Round.Status.GENERATING).update(
        status=Round.Status.OPEN, generation_error="", prompts_skipped=skipped
    )
    distribution_statistics_refresh()
    round_.refresh_from_db()
    return round_


def _pool_choose(round_: Round, *, sampler: _Sampler, max_retries: int, batch_prompts: int) -> None:
    """Active learning (``annotation.round_selection``): the K candidates of every pool prompt,
    stored as a task's would be, then the prompts to keep; ``prompt_ids`` become those."""
    candidates: dict[int, list[Completion]] = {}

    def collect(ready: list[tuple[Prompt, list[Completion]]]) -> None:
        candidates.update((prompt.pk, chosen) for prompt, chosen in ready)

    pool = list(round_.prompt_ids)
    with _error_recorded(round_):
        for start in range(0, len(pool), batch_prompts):
            prompts = list(
                Prompt.objects.filter(pk__in=pool[start : start + batch_prompts]).order_by("id")
            )
            _batch_complete(
                round_, prompts, sampler=sampler, offset=start, max_retries=max_retries,
                on_ready=collect,
            )  # fmt: skip
            Round.objects.filter(pk=round_.pk).update(
                progress_done=min(len(pool), start + batch_prompts),
                generation_heartbeat_at=timezone.now(),
            )
    try:
        prompts_select(round_, candidates)
    except Exception as exc:  # a reward model that cannot load or score: the admin sees why
        Round.objects.filter(pk=round_.pk).update(
            generation_error=f"Choosing the prompts failed: {type(exc).__name__}: {exc}"[:2000]
        )
        raise


@contextmanager
def _error_recorded(round_: Round) -> Iterator[None]:
    """A backend failure is written on the round (for the admin to see) and raised again."""
    try:
        yield
    except BackendUnavailable as exc:
        Round.objects.filter(pk=round_.pk).update(generation_error=str(exc)[:2000])
        raise


def _sampling_of(round_: Round) -> Sampling:
    params = dict(round_.sampling)
    return Sampling(
        temperature=float(params.get("temperature", 1.0)),
        top_p=float(params.get("top_p", 1.0)),
        max_new_tokens=int(params.get("max_new_tokens", 64)),
        seed=params.get("seed"),
    )


@dataclass(frozen=True)
class _Sampler:
    """The policy's model on the round's backend, and the round's sampling parameters."""

    backend: Backend
    target: Target
    base: Sampling

    def sampling(self, *, attempt: int, offset: int) -> Sampling:
        # A fresh seed per batch and attempt: a retry must not replay the samples it is
        # retrying (backends add the sample index j < n to it).
        base = self.base
        seed = None if base.seed is None else base.seed + attempt * 1_000_003 + offset * 101
        return Sampling(base.temperature, base.top_p, base.max_new_tokens, seed)


def _batch_publish(
    round_: Round, prompts: list[Prompt], *, sampler: _Sampler, offset: int, max_retries: int
) -> int:
    """Publish a task for each prompt of the batch that has, or after drawing more samples
    gets, K valid completions. Returns how many prompts were left out."""
    return _batch_complete(
        round_, prompts, sampler=sampler, offset=offset, max_retries=max_retries,
        on_ready=lambda ready: _publish(round_, ready),
    )  # fmt: skip


def _batch_complete(
    round_: Round, prompts: list[Prompt], *, sampler: _Sampler, offset: int, max_retries: int,
    on_ready: Callable[[list[tuple[Prompt, list[Completion]]]], None],
) -> int:  # fmt: skip
    """Hand ``on_ready`` each prompt of the batch that has, or after drawing more samples gets,
    K valid completions, with them. Returns how many prompts were left out."""
    policy = round_.policy_version
    pending = {p.pk: p for p in prompts}
    for attempt in range(max_retries + 1):
        stored: dict[int, list[Completion]] = {pid: [] for pid in pending}
        for c in Completion.objects.filter(prompt_id__in=list(pending), policy_version=policy):
            stored[c.prompt_id].append(c)
        ready = []
        for pid in list(pending):
            chosen = _valid_distinct(stored[pid], round_.k)
            if chosen is not None:
                ready.append((pending.pop(pid), chosen))
        on_ready(ready)
        if not pending or attempt == max_retries:
            break
        # Draw what is missing (K the first time, then K more per retry: a sharp policy
        # repeats itself, and one more sample rarely makes K distinct).
        missing = {
            pid: max(0, round_.k - len(stored[pid])) if attempt == 0 else round_.k
            for pid in pending
        }
        sampling = sampler.sampling(attempt=attempt, offset=offset)
        batch = [pending[pid] for pid in sorted(pending)]
        _samples_draw(round_, batch, missing=missing, sampler=sampler, sampling=sampling)
    if pending:
        log.warning("round %s: left out prompts %s", round_.number, sorted(pending))
    return len(pending)


def _samples_draw(
    round_: Round,
    prompts: list[Prompt],
    *,
    missing: dict[int, int],
    sampler: _Sampler,
    sampling: Sampling,
) -> None:
    """Generate ``missing[prompt]`` more samples for each prompt, in one backend call, and
    store them after the policy's highest sample index for that prompt."""
    policy = round_.policy_version
    next_index = {
        row["prompt_id"]: row["top"] + 1
        for row in Completion.objects.filter(
            prompt_id__in=[p.pk for p in prompts], policy_version=policy
        )
        .values("prompt_id")
        .annotate(top=Max("sample_index"))
    }
    batch = [p for p in prompts if missing[p.pk] > 0]
    if not batch:
        return
    n = max(missing[p.pk] for p in batch)
    outputs = sampler.backend.generate(
        sampler.target, [p.messages for p in batch], n=n, sampling=sampling
    )
    for prompt, samples in zip(batch, outputs, strict=True):
        _store(
            prompt,
            policy,
            next_index.get(prompt.pk, 0),
            samples[: missing[prompt.pk]],
            sampling.as_dict(),
        )


def _valid_distinct(completions: list[Completion], k: int) -> list[Completion] | None:
    seen: set[str] = set()
    chosen = []
    for completion in sorted(completions, key=lambda c: c.sample_index):
        text = completion.text.strip()
        if text and text not in seen:
            seen.add(text)
            chosen.append(completion)
        if len(chosen) == k:
            return chosen
    return None


# A NUL (which a model may well emit; PostgreSQL text refuses it) and lone surrogates (UTF-8
# cannot encode them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Model output as a text column can hold it: what cannot be stored becomes U+FFFD, as a
    decoder shows bytes it cannot read, and nothing else of the answer changes."""
    return _UNSTORABLE.sub("\ufffd", text)


def _store(
    prompt: Prompt,
    policy: PolicyVersion,
    start: int,
    samples: list[Generated],
    sampling: dict[str, Any],
) -> None:
    Completion.objects.bulk_create(
        [
            Completion(
                prompt=prompt,
                policy_version=policy,
                sample_index=start + i,
                text=storable(sample.text),
                sampling_params=sampling,
                finish_reason=sample.finish_reason,
                prompt_tokens=sample.prompt_tokens,
                completion_tokens=sample.completion_tokens,
                latency_ms=sample.latency_ms,
            )
            for i, sample in enumerate(samples)
        ],
        ignore_conflicts=True,  # a concurrent or repeated run stored the same sample index
    )


def _publish(round_: Round, ready: list[tuple[Prompt, list[Completion]]]) -> None:
    """Publish a task for each (prompt, its K chosen completions), in a fixed shuffled order.

    One transaction and two bulk inserts for the batch. Should another job of the same round
    (a redelivery) publish one of these prompts first, the batch is retried a task at a time,
    skipping those that exist."""
    if not ready:
        return
    try:
        with transaction.atomic():
            tasks = ComparisonTask.objects.bulk_create(
                [
                    ComparisonTask(
                        round=round_, prompt=p, overlap=round_.overlap, priority=round_.priority
                    )
                    for p, _ in ready
                ]
            )
            TaskCompletion.objects.bulk_create(
                [
                    TaskCompletion(task=task, completion=c, position=i)
                    for task, (prompt, chosen) in zip(tasks, ready, strict=True)
                    for i, c in enumerate(_shuffled(round_, prompt, chosen))
                ]
            )
    except IntegrityError:
        for prompt, chosen in ready:
            with transaction.atomic():
                task, created = ComparisonTask.objects.get_or_create(
                    round=round_, prompt=prompt, defaults={"overlap": round_.overlap}
                )
                if created:
                    TaskCompletion.objects.bulk_create(
                        [
                            TaskCompletion(task=task, completion=c, position=i)
                            for i, c in enumerate(_shuffled(round_, prompt, chosen))
                        ]
                    )


def _shuffled(round_: Round, prompt: Prompt, completions: list[Completion]) -> list[Completion]:
    order = list(completions)
    random.Random(f"{round_.seed}:{prompt.pk}").shuffle(order)
    return order


def rounds_generation_recover(*, stale_after_s: int | None = None) -> list[int]:
    """Queue again, once, each generating round whose job went silent (no heartbeat for
    ``stale_after_s``: its worker died); after a second death, record why instead. A round
    that failed cleanly (``generation_error`` set) or whose job has not started yet (no
    heartbeat) is left alone. Returns the ids queued again."""
    stale_after_s = settings.GENERATION_STALE_SECONDS if stale_after_s is None else stale_after_s
    now = timezone.now()
    stale = Round.objects.filter(
        status=Round.Status.GENERATING,
        generation_error="",
        generation_heartbeat_at__lt=now - timedelta(seconds=stale_after_s),
    )
    requeued = []
    for round_ in stale:
        still_stale = Round.objects.filter(
            pk=round_.pk,
            status=Round.Status.GENERATING,
            generation_heartbeat_at=round_.generation_heartbeat_at,
        )
        if round_.generation_attempts >= 2:
            still_stale.update(
                generation_error="Its generation worker stopped twice (no heartbeat since "
                f"{round_.generation_heartbeat_at:%H:%M:%S} UTC); generate it again by hand."
            )
            continue
        with transaction.atomic():  # a sweep racing this one finds the heartbeat moved on
            if still_stale.update(generation_heartbeat_at=now):
                requeued.append(round_.pk)
                round_generate_enqueue(round_.pk)
    return requeued
