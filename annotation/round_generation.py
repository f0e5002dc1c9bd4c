"""Generating a policy round: K completions per prompt by the serving policy, then its tasks.

``annotation.rounds.round_open_for_policy`` records the round (status ``generating``) and
enqueues ``round_generate`` on the ``generation`` queue once the transaction commits. A round
that selects its prompts by a reward model (``annotation.round_selection``) first gets K
candidates for its whole pool, as below but without publishing, and narrows ``prompt_ids`` to
the prompts kept. The job then walks the round's prompts, one backend call per batch:

1. prompts that already have a task in this round are done (so a re-run adds nothing);
2. the policy's stored completions for the prompt are reused (unique per prompt, policy and
   sample index), and only the missing sample indices are generated;
3. a prompt is published as a task only when it has K valid completions (non-empty, distinct
   texts); otherwise K more samples are drawn for it in the next call, with the batch filled
   up by prompts not tried yet, up to ``max_retries`` draws in all, and after that the prompt is
   left out and counted in ``prompts_skipped``;
4. progress and a heartbeat are written after every call; at the end the round opens.

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
from django.db.models import F
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

    def progress(settled: int, skipped: int) -> None:
        Round.objects.filter(pk=round_.pk).update(
            progress_done=len(done) + settled,
            prompts_skipped=skipped,
            generation_heartbeat_at=timezone.now(),
        )

    with _error_recorded(round_):
        skipped = _complete(
            round_, todo, sampler=sampler, max_retries=max_retries, batch_prompts=batch_prompts,
            on_ready=lambda ready: _publish(round_, ready), on_progress=progress,
        )  # fmt: skip
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

    def progress(settled: int, skipped: int) -> None:
        Round.objects.filter(pk=round_.pk).update(
            progress_done=settled, generation_heartbeat_at=timezone.now()
        )

    with _error_recorded(round_):
        _complete(
            round_, list(round_.prompt_ids), sampler=sampler, max_retries=max_retries,
            batch_prompts=batch_prompts, on_ready=collect, on_progress=progress,
        )  # fmt: skip
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

    def sampling(self, *, call: int) -> Sampling:
        # A fresh seed per backend call: a redraw must not replay the samples it replaces
        # (backends add the sample index j < n, or the chunk's start, to it).
        base = self.base
        seed = None if base.seed is None else base.seed + call * 1_000_003
        return Sampling(base.temperature, base.top_p, base.max_new_tokens, seed)


Ready = list[tuple[Prompt, list[Completion]]]


@dataclass
class _Pending:
    """A prompt without K valid completions yet: what is stored for it, and its draws so far."""

    prompt: Prompt
    stored: list[Completion]
    draws: int = 0


def _complete(
    round_: Round, prompt_ids: list[int], *, sampler: _Sampler, max_retries: int,
    batch_prompts: int, on_ready: Callable[[Ready], None],
    on_progress: Callable[[int, int], None],
) -> int:  # fmt: skip
    """Hand ``on_ready`` each prompt that has, or after drawing gets, K valid completions, with
    them; a prompt still short after ``max_retries`` draws is left out. Returns how many were
    left out; ``on_progress(settled, left out)`` after every backend call.

    Each backend call is one batch: the prompts to draw again first, then prompts not tried yet
    up to ``batch_prompts``. A redraw therefore rides in the next full batch instead of a call
    of its own (a batch of two costs a model about as much time as a batch of sixteen, since
    each decoding step reads all the weights either way)."""
    waiting = list(prompt_ids)
    pending: dict[int, _Pending] = {}
    skipped = call = 0
    while waiting or pending:
        for pid in [pid for pid, entry in pending.items() if entry.draws >= max_retries]:
            log.warning("round %s: left out prompt %s", round_.number, pid)
            del pending[pid]
            skipped += 1
        room = max(0, batch_prompts - len(pending))
        fresh_ids, waiting = waiting[:room], waiting[room:]
        ready: Ready = []
        for prompt, stored in _with_stored(round_, fresh_ids):  # what an earlier job stored
            chosen = _valid_distinct(stored, round_.k)
            if chosen is None:
                pending[prompt.pk] = _Pending(prompt, stored)
            else:
                ready.append((prompt, chosen))
        if pending and max_retries > 0:
            _samples_draw(round_, list(pending.values()), sampler=sampler, call=call)
            call += 1
            for pid, entry in list(pending.items()):
                chosen = _valid_distinct(entry.stored, round_.k)
                if chosen is not None:
                    ready.append((entry.prompt, chosen))
                    del pending[pid]
        on_ready(ready)
        on_progress(len(prompt_ids) - len(waiting) - len(pending), skipped)
    return skipped


def _with_stored(round_: Round, prompt_ids: list[int]) -> list[tuple[Prompt, list[Completion]]]:
    """The prompts, in id order, each with the policy's completions already stored for it."""
    if not prompt_ids:
        return []
    prompts = list(Prompt.objects.filter(pk__in=prompt_ids).order_by("id"))
    stored = _stored(round_, prompt_ids)
    return [(p, stored[p.pk]) for p in prompts]


def _stored(round_: Round, prompt_ids: list[int]) -> dict[int, list[Completion]]:
    stored: dict[int, list[Completion]] = {pid: [] for pid in prompt_ids}
    completions = Completion.objects.filter(
        prompt_id__in=prompt_ids, policy_version=round_.policy_version
    ).order_by("sample_index")
    for c in completions:
        stored[c.prompt_id].append(c)
    return stored


def _samples_draw(round_: Round, batch: list[_Pending], *, sampler: _Sampler, call: int) -> None:
    """One backend call for the batch: a prompt's first draw is what it lacks of K, every
    later one K more (a sharp policy repeats itself, and one more sample rarely makes K
    distinct). The samples are stored after each prompt's highest sample index, in one insert,
    and added to its ``stored``."""
    k = round_.k
    # (K stored but not distinct, on a first draw: K more.)
    wanted = [k - len(e.stored) if e.draws == 0 and len(e.stored) < k else k for e in batch]
    sampling = sampler.sampling(call=call)
    outputs = sampler.backend.generate(
        sampler.target, [e.prompt.messages for e in batch], n=max(wanted), sampling=sampling
    )
    drawn = []
    for entry, n, samples in zip(batch, wanted, outputs, strict=True):
        start = max((c.sample_index for c in entry.stored), default=-1) + 1
        drawn.append(
            _rows(entry.prompt, round_.policy_version, start, samples[:n], sampling.as_dict())
        )
        entry.draws += 1
    every = [row for rows in drawn for row in rows]
    try:
        with transaction.atomic():  # the rows come back with their ids, to publish them by
            Completion.objects.bulk_create(every)
    except IntegrityError:  # a concurrent or repeated run stored some of these sample indices
        Completion.objects.bulk_create(every, ignore_conflicts=True)
        stored = _stored(round_, [e.prompt.pk for e in batch])
        for entry in batch:
            entry.stored = stored[entry.prompt.pk]
        return
    for entry, rows in zip(batch, drawn, strict=True):
        entry.stored += rows


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


def _rows(
    prompt: Prompt,
    policy: PolicyVersion,
    start: int,
    samples: list[Generated],
    sampling: dict[str, Any],
) -> list[Completion]:
    return [
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
    ]


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
