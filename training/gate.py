"""The promotion gate: a candidate serves only if it beats the active policy.

Both policies answer the same held-out prompts (the eval split of the reward model's snapshot,
topped up with prompts the reward model never trained on), four sampled answers each at
temperature 1, as in a round. The reward model scores every answer; the candidate's win rate is
the share of (prompt, sample) pairs where its answer scores higher (a tie counts half). At or
above the threshold the candidate is deployed (through the usual readiness-checked deployment);
otherwise it is marked rejected and the active policy keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from feedback.errors import DomainError
from feedback.generation import Sampling, get_backend, resolve_model_path, target_for
from feedback.models import PolicyVersion, Prompt, messages_hash
from feedback.policies import deployment_request

from .models import GateEvaluation, TrainingRun
from .trainers.common import reward_scorer

GATE_SAMPLES = 4
GATE_TEMPERATURE = 1.0


def gate_request(
    *, candidate_id: int, reward_run_id: int | None = None, prompts: int = 32,
    threshold: float = 0.55,
) -> GateEvaluation:  # fmt: skip
    candidate = PolicyVersion.objects.filter(pk=candidate_id).first()
    if candidate is None:
        raise DomainError("No such policy version.", code="not_found", status=404)
    if candidate.status != PolicyVersion.Status.CANDIDATE:
        raise DomainError(f"{candidate.name} is {candidate.status}, not a candidate.", status=409,
                          code="not_candidate")  # fmt: skip
    baseline = PolicyVersion.objects.filter(status=PolicyVersion.Status.ACTIVE).first()
    if baseline is None:
        raise DomainError("No active policy to compare with.", code="no_active_policy", status=409)
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD, status="succeeded")
    reward_run = (runs.filter(pk=reward_run_id) if reward_run_id else runs.order_by("-id")).first()
    if reward_run is None:
        raise DomainError(
            "The gate needs a succeeded reward-model run.",
            fields={"reward_run": ["No succeeded reward-model run."]},
        )
    with transaction.atomic():
        gate = GateEvaluation.objects.create(
            candidate=candidate, baseline=baseline, reward_run=reward_run, prompt_count=prompts,
            threshold=threshold,
        )  # fmt: skip
        transaction.on_commit(lambda: _enqueue(gate.pk))
    return gate


def _enqueue(gate_id: int) -> None:
    from .tasks import gate_evaluate as task

    task.apply_async(args=[gate_id], queue="generation")


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


def gate_evaluate(*, gate_id: int) -> GateEvaluation:
    """Run the comparison and act on it. Idempotent: a finished gate is left as it is."""
    gate = GateEvaluation.objects.select_related(
        "candidate", "baseline", "reward_run__snapshot", "reward_run__base_policy"
    ).get(pk=gate_id)
    if gate.status != GateEvaluation.Status.PENDING:
        return gate
    try:
        prompts, held_out = _gate_prompts(gate.reward_run, gate.prompt_count)
        if not prompts:
            raise DomainError("No prompts to compare the policies on.")
        backend = get_backend()
        # Sampled, as rounds sample: a policy is judged by the answers people will see, and
        # greedy answers of two close policies are mostly the same (a tie says nothing).
        sampling = Sampling(temperature=GATE_TEMPERATURE, max_new_tokens=64, seed=0)
        answers = {
            side: backend.generate(target_for(policy), prompts, n=GATE_SAMPLES, sampling=sampling)
            for side, policy in (("candidate", gate.candidate), ("baseline", gate.baseline))
        }
        base_model = resolve_model_path(gate.reward_run.base_policy.base_model)
        score = reward_scorer(
            Path(settings.ARTIFACTS_DIR) / gate.reward_run.artifact_path / "model", base_model
        )
        wins = 0.0
        rewards: dict[str, list[float]] = {"candidate": [], "baseline": []}
        lengths: dict[str, list[int]] = {"candidate": [], "baseline": []}
        for i, prompt in enumerate(prompts):
            for j in range(GATE_SAMPLES):
                pair = {}
                for side in rewards:
                    text = answers[side][i][j].text
                    pair[side] = score(prompt, text)
                    rewards[side].append(pair[side])
                    lengths[side].append(len(text))
                delta = pair["candidate"] - pair["baseline"]
                wins += 1.0 if delta > 0 else 0.5 if delta == 0 else 0.0
    except Exception as exc:  # recorded on the gate; the active policy is untouched
        GateEvaluation.objects.filter(pk=gate.pk, status="pending").update(
            status=GateEvaluation.Status.ERROR, error=f"{type(exc).__name__}: {exc}"[:4000],
            finished_at=timezone.now(),
        )  # fmt: skip
        raise
    n = max(1, len(prompts) * GATE_SAMPLES)
    mean = {side: sum(v) / n for side, v in rewards.items()}
    length = {side: sum(v) / n for side, v in lengths.items()}
    gate.win_rate = wins / n
    gate.metrics = {
        "prompts": len(prompts),
        "held_out_prompts": held_out,
        "samples_per_prompt": GATE_SAMPLES,
        "temperature": GATE_TEMPERATURE,
        "mean_reward": mean,
        "reward_delta": mean["candidate"] - mean["baseline"],
        "mean_length": length,
        "length_delta": length["candidate"] - length["baseline"],
    }
    passed = gate.win_rate >= gate.threshold
    with transaction.atomic():
        # Two deliveries of the job may both evaluate; only the first to record acts on it.
        if GateEvaluation.objects.select_for_update().get(pk=gate.pk).status != "pending":
            return GateEvaluation.objects.get(pk=gate.pk)
        gate.finished_at = timezone.now()
        gate.status = GateEvaluation.Status.PASSED if passed else GateEvaluation.Status.FAILED
        gate.save(update_fields=["win_rate", "metrics", "status", "finished_at"])
        if passed:
            deployment_request(policy_id=gate.candidate_id)
        else:
            PolicyVersion.objects.filter(pk=gate.candidate_id).update(
                status=PolicyVersion.Status.REJECTED
            )
    return gate
