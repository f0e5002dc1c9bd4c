"""The promotion gate: a candidate serves only if it beats the active policy, without drifting.

Both policies answer the same held-out prompts (the eval split of the reward model's snapshot,
topped up with prompts the reward model never trained on), four sampled answers each at
temperature 1, as in a round. The reward model scores every answer; the candidate's win rate is
the share of (prompt, sample) pairs where its answer scores higher (a tie counts half). The newest
per-axis reward model of each rubric axis (helpful, honest, harmless), where there is one, scores
the same answers too: per-axis deltas show what a win was bought with. The KL drift from the
serving policy is estimated on the candidate's answers (``training.drift``).

The candidate passes when its win rate is at least the threshold and, if the gate has a
``max_kl_drift``, its drift is at most that; it is then deployed (through the usual
readiness-checked deployment). Otherwise it is marked rejected, ``metrics["failed_on"]`` says
which check it failed, and the active policy keeps serving.

With ``human_prompts`` these checks are a first filter: a candidate that passes them is shown to
people, side by side with the serving policy, and they decide (``training.human_gate``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.side_by_side import SideBySideAnswer
from feedback.models import PolicyVersion, Prompt, messages_hash
from feedback.platform.errors import DomainError
from feedback.platform.outbox import outbox_enqueue
from feedback.serving.backends import (
    Backend,
    BackendUnavailable,
    Generated,
    Sampling,
    Target,
    backend_load,
    backend_unload,
    get_backend,
    resolve_model_path,
    target_for,
)
from feedback.serving.policies import deployment_request, policy_active

from .drift import DriftUnavailable, kl_drift
from .human_gate import human_answers, human_round_open
from .models import GateEvaluation, TrainingRun
from .runs import overall_reward_runs
from .trainers.common import reward_scorer

GATE_SAMPLES = 4
GATE_TEMPERATURE = 1.0
SAMPLING = Sampling(temperature=GATE_TEMPERATURE, max_new_tokens=64, seed=0)
SIDES = ("candidate", "baseline")

Answers = dict[str, list[list[Generated]]]

log = logging.getLogger(__name__)


def gate_request(
    *, candidate_id: int, reward_run_id: int | None = None, prompts: int = 32,
    threshold: float = 0.55, max_kl_drift: float | None = None, human_prompts: int = 0,
    human_threshold: float = 0.5, human_overlap: int = 1, human_tags: list[str] | None = None,
) -> GateEvaluation:  # fmt: skip
    """Ask whether the candidate beats the active policy (a job); with ``human_prompts``, people
    decide after the reward model's check (``training.human_gate``)."""
    if max_kl_drift is not None and not max_kl_drift >= 0:  # `not >=` also refuses NaN
        raise DomainError(
            "max_kl_drift: a number of nats, at least 0.",
            fields={"max_kl_drift": ["A number of nats per answer, at least 0."]},
        )
    if not 0 <= human_threshold <= 1:  # `not` also refuses NaN
        raise DomainError("human_threshold: between 0 and 1.",
                          fields={"human_threshold": ["Between 0 and 1."]})  # fmt: skip
    candidate = PolicyVersion.objects.filter(pk=candidate_id).first()
    if candidate is None:
        raise DomainError("No such policy version.", code="not_found", status=404)
    if candidate.status != PolicyVersion.Status.CANDIDATE:
        raise DomainError(f"{candidate.name} is {candidate.status}, not a candidate.", status=409,
                          code="not_candidate")  # fmt: skip
    baseline = policy_active()
    if baseline is None:
        raise DomainError("No active policy to compare with.", code="no_active_policy", status=409)
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD, status="succeeded")
    reward_run = (
        runs.filter(pk=reward_run_id) if reward_run_id else overall_reward_runs().order_by("-id")
    ).first()
    if reward_run is None:
        raise DomainError(
            "The gate needs a succeeded reward-model run.",
            fields={"reward_run": ["No succeeded reward-model run."]},
        )
    with transaction.atomic():
        gate = GateEvaluation.objects.create(
            candidate=candidate, baseline=baseline, reward_run=reward_run, prompt_count=prompts,
            threshold=threshold, max_kl_drift=max_kl_drift, human_prompts=human_prompts,
            human_threshold=human_threshold, human_overlap=human_overlap,
            human_tags=list(human_tags or []),
        )  # fmt: skip
        _enqueue(gate.pk)
    return gate


def _enqueue(gate_id: int) -> None:
    outbox_enqueue(task="training.tasks.gate_evaluate", args=[gate_id], queue="generation")


def _gate_prompts(reward_run: TrainingRun, count: int) -> tuple[list[list[dict[str, str]]], int]:
    """Prompts for the comparison, and how many of them the reward model never trained on.

    Held-out prompts come first (the snapshot's eval split, then prompts not in its train split);
    only when there are too few are training prompts used to fill up, and the count says so.
    """
    folder = Path(settings.ARTIFACTS_DIR) / reward_run.snapshot.path
    chosen: dict[str, list[dict[str, str]]] = {}
    for line in (folder / "eval.jsonl").read_text().splitlines():
        prompt = json.loads(line)["prompt"]
        chosen.setdefault(messages_hash(prompt), prompt)
    trained: dict[str, list[dict[str, str]]] = {}
    for line in (folder / "train.jsonl").read_text().splitlines():
        prompt = json.loads(line)["prompt"]
        trained.setdefault(messages_hash(prompt), prompt)
    for prompt in Prompt.objects.order_by("-id").iterator(chunk_size=500):
        if len(chosen) >= count:
            break
        if prompt.content_hash not in trained:
            chosen.setdefault(prompt.content_hash, prompt.messages)
    held_out = min(len(chosen), count)
    for digest, prompt in trained.items():
        if len(chosen) >= count:
            break
        chosen.setdefault(digest, prompt)
    return list(chosen.values())[:count], held_out


def axis_reward_runs() -> dict[str, TrainingRun]:
    """The newest succeeded per-axis reward model of each axis that has one."""
    newest: dict[str, int] = {}
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD, status="succeeded")
    for pk, axis in runs.order_by("-id").values_list("pk", "recipe__axis"):
        if axis and axis not in newest:
            newest[axis] = pk
    found = TrainingRun.objects.select_related("base_policy").in_bulk(newest.values())
    return {axis: found[pk] for axis, pk in sorted(newest.items())}


def _rewards(
    run: TrainingRun, prompts: list[list[dict[str, str]]], answers: Answers
) -> dict[str, list[float]]:
    """Each side's answers scored by the run's reward model, in (prompt, sample) order."""
    score = reward_scorer(
        Path(settings.ARTIFACTS_DIR) / run.artifact_path / "model",
        resolve_model_path(run.base_policy.base_model),
    )
    return {
        side: [score(prompt, g.text) for prompt, samples in zip(prompts, answers[side], strict=True)
               for g in samples]
        for side in SIDES
    }  # fmt: skip


def _drift(
    gate: GateEvaluation, prompts: list[list[dict[str, str]]], answers: Answers
) -> dict[str, Any]:
    """The KL-drift metrics. Weights that cannot be loaded here leave the drift unmeasured, with
    the reason, unless the gate has a limit on it: that must not pass unchecked, so it errors."""
    samples = [
        (prompt, g) for prompt, gs in zip(prompts, answers["candidate"], strict=True) for g in gs
    ]
    try:
        return kl_drift(
            candidate=target_for(gate.candidate), baseline=target_for(gate.baseline),
            samples=samples,
        )  # fmt: skip
    except DriftUnavailable as exc:
        if gate.max_kl_drift is not None:
            raise DomainError(
                f"KL drift cannot be measured ({exc}); the gate has max_kl_drift "
                f"{gate.max_kl_drift}, so it cannot pass unchecked.", code="kl_drift_unavailable",
            ) from exc  # fmt: skip
        return {"kl_drift": None, "kl_drift_per_token": None, "kl_drift_unavailable": str(exc)}


def _summary(
    gate: GateEvaluation, held_out: int, answers: Answers, rewards: dict[str, list[float]],
    axes: dict[str, tuple[TrainingRun, dict[str, list[float]]]], drift: dict[str, Any],
) -> tuple[float, dict[str, Any], list[str]]:  # fmt: skip
    """The win rate, the metrics, and the checks the candidate failed (none: it passes)."""
    n = max(1, sum(len(samples) for samples in answers["candidate"]))
    pairs = zip(rewards["candidate"], rewards["baseline"], strict=True)
    win_rate = sum(1.0 if c > b else 0.5 if c == b else 0.0 for c, b in pairs) / n
    mean = {side: sum(rewards[side]) / n for side in SIDES}
    length = {side: sum(len(g.text) for gs in answers[side] for g in gs) / n for side in SIDES}
    per_axis = {}
    for axis, (run, scores) in axes.items():
        axis_mean = {side: sum(scores[side]) / n for side in SIDES}
        per_axis[axis] = {"reward_run": run.pk, "mean_reward": axis_mean,
                          "delta": axis_mean["candidate"] - axis_mean["baseline"]}  # fmt: skip
    failed_on = [] if win_rate >= gate.threshold else ["win_rate"]
    # Written so that NaN fails too; a None drift reaches here only when there is no limit.
    if gate.max_kl_drift is not None and not drift["kl_drift"] <= gate.max_kl_drift:
        failed_on.append("kl_drift")
    metrics = {
        "prompts": len(answers["candidate"]),
        "held_out_prompts": held_out,
        "samples_per_prompt": GATE_SAMPLES,
        "temperature": GATE_TEMPERATURE,
        "mean_reward": mean,
        "reward_delta": mean["candidate"] - mean["baseline"],
        "mean_length": length,
        "length_delta": length["candidate"] - length["baseline"],
        "axes": per_axis,
        **drift,
        "failed_on": failed_on,
    }
    return win_rate, metrics, failed_on


def _release(backend: Backend, candidate: Target) -> None:
    """Unload a candidate that will not serve (a server holds its adapter since the gate loaded
    it). A failure here changes nothing people see, so it is logged, not raised."""
    try:
        backend_unload(backend, candidate)
    except BackendUnavailable as exc:
        log.warning("could not unload %s: %s", candidate.name, exc)


def _error(gate: GateEvaluation, exc: Exception) -> None:
    """Record why the gate could not run; the active policy is untouched."""
    GateEvaluation.objects.filter(pk=gate.pk, status="pending").update(
        status=GateEvaluation.Status.ERROR, error=f"{type(exc).__name__}: {exc}"[:4000],
        finished_at=timezone.now(),
    )  # fmt: skip


def _verdict(
    gate: GateEvaluation, backend: Backend, targets: dict[str, Target]
) -> tuple[list[str], list[SideBySideAnswer] | None]:
    """Measure the candidate against the baseline (sets the gate's win rate and metrics).
    Returns the checks it failed and, when it passed them and people decide next, the answers
    they will compare."""
    prompts, held_out = _gate_prompts(gate.reward_run, gate.prompt_count)
    if not prompts:
        raise DomainError("No prompts to compare the policies on.")
    # Sampled, as rounds sample: a policy is judged by the answers people will see, and
    # greedy answers of two close policies are mostly the same (a tie says nothing).
    answers = {
        side: backend.generate(target, prompts, n=GATE_SAMPLES, sampling=SAMPLING)
        for side, target in targets.items()
    }
    drift = _drift(gate, prompts, answers)  # first: an unmeasurable limit fails fast
    rewards = _rewards(gate.reward_run, prompts, answers)
    axes = {axis: (run, _rewards(run, prompts, answers))
            for axis, run in axis_reward_runs().items()}  # fmt: skip
    gate.win_rate, gate.metrics, failed_on = _summary(gate, held_out, answers, rewards, axes, drift)
    if failed_on or not gate.human_prompts:
        return failed_on, None
    return failed_on, human_answers(gate, backend, targets, SAMPLING)


def gate_evaluate(*, gate_id: int) -> GateEvaluation:
    """Run the comparison and act on it: reject, deploy, or (with ``human_prompts``) open the
    side-by-side round people decide on. Idempotent: a gate past pending is left as it is."""
    gate = GateEvaluation.objects.select_related(
        "candidate", "baseline", "reward_run__snapshot", "reward_run__base_policy"
    ).get(pk=gate_id)
    if gate.status != GateEvaluation.Status.PENDING:
        return gate
    backend: Backend | None = None
    targets: dict[str, Target] = {}
    try:
        backend = get_backend()
        targets = {"candidate": target_for(gate.candidate), "baseline": target_for(gate.baseline)}
        # The candidate is not serving yet: a server must be sent its adapter before it is asked.
        backend_load(backend, targets["candidate"])
        failed_on, for_people = _verdict(gate, backend, targets)
    except Exception as exc:  # recorded on the gate; the active policy is untouched
        _error(gate, exc)
        if backend is not None and targets:
            _release(backend, targets["candidate"])
        raise
    with transaction.atomic():
        # Two deliveries of the job may both evaluate; only the first to record acts on it.
        if GateEvaluation.objects.select_for_update().get(pk=gate.pk).status != "pending":
            return GateEvaluation.objects.get(pk=gate.pk)
        if for_people is not None:
            human_round_open(gate, for_people, SAMPLING.as_dict())
        else:
            gate.finished_at = timezone.now()
            gate.status = "failed" if failed_on else "passed"
            gate.save(update_fields=["win_rate", "metrics", "status", "finished_at"])
            if failed_on:
                PolicyVersion.objects.filter(pk=gate.candidate_id).update(
                    status=PolicyVersion.Status.REJECTED
                )
            else:
                deployment_request(policy_id=gate.candidate_id)
    if gate.status != GateEvaluation.Status.PASSED:  # it serves only once deployed
        _release(backend, targets["candidate"])
    return gate
