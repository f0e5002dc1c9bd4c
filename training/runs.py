"""Training runs as background jobs. The TrainingRun row is the source of truth.

* Creating a run validates the recipe overrides against the trainer's recipe dataclass (an unknown
  field or a wrong type is a 400 naming it), cuts a dataset snapshot, and enqueues the job on the
  ``training`` queue once the transaction commits. One queued or running run per base policy: a
  second is a 409 naming the first (a partial unique index enforces it).
* The job claims the run with a conditional UPDATE (queued → running); a redelivered job finds
  nothing to claim and does nothing.
* While training it writes heartbeat, progress and the metrics history, and honours cancel.
* Artifacts go to a temporary folder renamed into place only when complete, with provenance:
  recipe, dataset sha256, base model, seed, git commit and library versions.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import time
from dataclasses import asdict, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from annotation.rounds import rubric_current
from feedback.models import PolicyVersion, Prompt
from feedback.platform.errors import DomainError
from feedback.platform.outbox import outbox_enqueue
from feedback.serving.backends import resolve_model_path
from feedback.serving.policies import policy_active, policy_register

from .launch import needs_launch, train_launched
from .models import DatasetSnapshot, TrainingRun
from .snapshots import snapshot_create_kto, snapshot_create_preference, snapshot_create_sft
from .trainers import dpo, kto, online_rl, pretrain, reward, sft

TRAINERS = {
    TrainingRun.Kind.REWARD: (reward.RewardRecipe, reward.train),
    TrainingRun.Kind.DPO: (dpo.DPORecipe, dpo.train),
    TrainingRun.Kind.KTO: (kto.KTORecipe, kto.train),
    TrainingRun.Kind.SFT: (sft.SFTRecipe, sft.train),
    TrainingRun.Kind.ONLINE_RL: (online_rl.OnlineRLRecipe, online_rl.train),
    TrainingRun.Kind.PRETRAIN: (pretrain.PretrainRecipe, pretrain.train),
}
# The snapshot kind each run kind trains on.
SNAPSHOT_KIND = {
    TrainingRun.Kind.REWARD: DatasetSnapshot.Kind.PREFERENCE,
    TrainingRun.Kind.DPO: DatasetSnapshot.Kind.PREFERENCE,
    TrainingRun.Kind.KTO: DatasetSnapshot.Kind.KTO,
    TrainingRun.Kind.ONLINE_RL: DatasetSnapshot.Kind.PREFERENCE,
    TrainingRun.Kind.SFT: DatasetSnapshot.Kind.SFT,
    TrainingRun.Kind.PRETRAIN: DatasetSnapshot.Kind.TEXT,
}
PROGRESS_EVERY_S = 1.0
# "tiny-v0-dpo-run3" → "tiny-v0": a produced policy is named after the root of its lineage.
_LINEAGE_SUFFIX = re.compile(r"-(dpo|kto|sft|online_rl|pretrain)-run\d+$")
# Kinds whose output is a new policy: registered as a candidate (an adapter on the base weights).
POLICY_KINDS = {
    TrainingRun.Kind.DPO, TrainingRun.Kind.KTO, TrainingRun.Kind.SFT, TrainingRun.Kind.ONLINE_RL,
    TrainingRun.Kind.PRETRAIN,
}  # fmt: skip


def overall_reward_runs() -> QuerySet[TrainingRun]:
    """Succeeded reward-model runs trained on the rankings (not on one 3H axis): the default
    judge wherever one reward model is wanted."""
    return TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD, status="succeeded").filter(
        Q(recipe__axis__isnull=True) | Q(recipe__axis=None)
    )


def _type_ok(value: Any, annotation: Any) -> bool:
    # Under `from __future__ import annotations` a dataclass field's type is its source text.
    allowed = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
    options = [part.strip() for part in str(annotation).split("|")]
    if value is None:
        return "None" in options
    for option in options:
        types_ = allowed.get(option)
        if (
            types_
            and isinstance(value, types_)
            and not (option != "bool" and isinstance(value, bool))
        ):
            return True
    return False


def recipe_validate(kind: str, overrides: dict[str, Any]) -> Any:
    """The trainer's recipe with ``overrides`` applied, or a 400 naming each bad field."""
    recipe_class, _ = TRAINERS[kind]
    known = {f.name: f for f in fields(recipe_class)}
    errors: dict[str, list[str]] = {}
    for key, value in overrides.items():
        if key not in known:
            errors[f"recipe.{key}"] = [f"Unknown field; {kind} recipes have {', '.join(known)}."]
        elif not _type_ok(value, known[key].type):
            errors[f"recipe.{key}"] = [f"Must be {known[key].type}, got {type(value).__name__}."]
    recipe = recipe_class(**overrides) if not errors else None
    if recipe is not None and recipe.num_processes < 1:
        errors["recipe.num_processes"] = ["At least 1."]
    if recipe is not None and recipe.deepspeed_stage not in (0, 1, 2, 3):
        errors["recipe.deepspeed_stage"] = ["0 (no DeepSpeed) or a ZeRO stage: 1, 2 or 3."]
    if errors:
        raise DomainError(
            "; ".join(f"{name}: {' '.join(why)}" for name, why in errors.items()), fields=errors
        )
    return recipe


def training_run_create(
    *,
    kind: str,
    rounds: list[int] | None = None,
    recipe: dict[str, Any] | None = None,
    base_policy_id: int | None = None,
    snapshot_id: int | None = None,
    top_ranked: bool = False,
    consensus: str = "bradley_terry",
    created_by: Any = None,
    enqueue: bool = True,
) -> TrainingRun:
    """Queue a run on ``snapshot_id``, or on a new snapshot of ``rounds`` (all rounds if None):
    preference pairs (a task judged several times by ``consensus``), or for SFT demonstrations
    (and with ``top_ranked`` each judgment's best). Continued pre-training needs a text snapshot
    (an uploaded corpus)."""
    if kind not in TRAINERS:
        raise DomainError("Unknown kind.", fields={"kind": [f"One of: {', '.join(TRAINERS)}."]})
    full_recipe = recipe_validate(kind, recipe or {})
    if kind == TrainingRun.Kind.ONLINE_RL:
        full_recipe = _online_rl_recipe(full_recipe)
    axis = getattr(full_recipe, "axis", None)
    if axis is not None and axis not in (keys := [a["key"] for a in rubric_current().axes]):
        raise DomainError(
            f"recipe.axis: one of {', '.join(keys)}.",
            fields={"recipe.axis": [f"One of the rubric's axes: {', '.join(keys)}."]},
        )
    base = (
        PolicyVersion.objects.filter(pk=base_policy_id).first()
        if base_policy_id
        else policy_active()
    )
    if base is None:
        raise DomainError("No such base policy.", fields={"base_policy": ["No such policy."]})
    active = TrainingRun.objects.filter(base_policy=base, status__in=TrainingRun.ACTIVE).first()
    if active is not None:
        raise DomainError(
            f"Run {active.pk} is already {active.status} on {base.name}.",
            code="conflict", status=409, extra={"training_run": active.pk},
        )  # fmt: skip
    if snapshot_id is not None:
        snapshot = DatasetSnapshot.objects.filter(pk=snapshot_id).first()
        if snapshot is None:
            raise DomainError("No such snapshot.", fields={"snapshot": ["No such snapshot."]})
        if snapshot.kind != SNAPSHOT_KIND[kind]:
            why = (
                f"A {kind} run trains on a {SNAPSHOT_KIND[kind]} snapshot; snapshot "
                f"{snapshot.pk} is {snapshot.kind}."
            )
            raise DomainError(why, fields={"snapshot": [why]})
    elif kind == TrainingRun.Kind.PRETRAIN:
        why = "Continued pre-training needs a corpus: upload one to /api/v1/snapshots/text/."
        raise DomainError(why, fields={"snapshot": [why]})
    elif kind == TrainingRun.Kind.KTO:  # each task's best and worst answers, unpaired
        snapshot = snapshot_create_kto(rounds=rounds, created_by=created_by)
    elif kind == TrainingRun.Kind.SFT:  # demonstrations (+ top-ranked completions)
        snapshot = snapshot_create_sft(rounds=rounds, top_ranked=top_ranked, created_by=created_by)
    else:
        axis = getattr(full_recipe, "axis", None)  # a per-axis reward model
        snapshot = snapshot_create_preference(
            rounds=rounds, axis=axis, consensus=consensus, created_by=created_by
        )
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                kind=kind,
                base_policy=base,
                snapshot=snapshot,
                recipe=asdict(full_recipe),
                created_by=created_by,
            )
            if enqueue:  # `simulate` runs the job in its own process instead
                _enqueue(run.pk)
    except IntegrityError:
        active = TrainingRun.objects.filter(base_policy=base, status__in=TrainingRun.ACTIVE).first()
        raise DomainError(
            f"Run {getattr(active, 'pk', '?')} is already active on {base.name}.",
            code="conflict", status=409, extra={"training_run": getattr(active, "pk", None)},
        ) from None  # fmt: skip
    return run


def _online_rl_recipe(recipe: online_rl.OnlineRLRecipe) -> online_rl.OnlineRLRecipe:
    """Check the algorithm and the combination rule, and pin the reward models (for a single
    one, the newest unless named), so the run and its provenance say exactly what scored it."""
    errors: dict[str, list[str]] = {}
    if recipe.algorithm not in online_rl.ALGORITHMS:
        errors["recipe.algorithm"] = [f"One of: {', '.join(online_rl.ALGORITHMS)}."]
    if recipe.combine not in online_rl.COMBINE_RULES:
        errors["recipe.combine"] = [f"One of: {', '.join(online_rl.COMBINE_RULES)}."]
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD, status="succeeded")
    pinned: dict[str, int] = {}
    if recipe.combine == "single":
        found = (
            runs.filter(pk=recipe.reward_run)
            if recipe.reward_run
            else overall_reward_runs().order_by("-id")
        )
        if (reward_run := found.first()) is None:
            errors["recipe.reward_run"] = ["No succeeded reward-model run."]
        else:
            pinned["reward_run"] = reward_run.pk
    elif recipe.combine in online_rl.COMBINE_RULES:
        needed = ("helpful", "harmless") if recipe.combine == "llama2_gate" else ()
        named = {axis: getattr(recipe, f"{axis}_reward_run") for axis in online_rl.AXES}
        if not any(named.values()):
            needed = needed or ("helpful",)
        for axis, run_id in named.items():
            if run_id is None:
                if axis in needed:
                    errors[f"recipe.{axis}_reward_run"] = [f"{recipe.combine} needs it."]
                continue
            run = runs.filter(pk=run_id).first()
            if run is None or run.recipe.get("axis") != axis:
                errors[f"recipe.{axis}_reward_run"] = [
                    f"Not a succeeded reward run with axis {axis!r}."
                ]
    if errors:
        raise DomainError(
            "; ".join(f"{name}: {' '.join(why)}" for name, why in errors.items()), fields=errors
        )
    return replace(recipe, **pinned)


def _enqueue(run_id: int) -> None:
    outbox_enqueue(task="training.tasks.training_run_execute", args=[run_id], queue="training")


def training_run_cancel(*, run_id: int) -> TrainingRun:
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        raise DomainError("No such training run.", code="not_found", status=404)
    if TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED, finished_at=timezone.now()
    ):
        return TrainingRun.objects.get(pk=run_id)
    if run.status == TrainingRun.Status.RUNNING:
        TrainingRun.objects.filter(pk=run_id).update(cancel_requested=True)
        return TrainingRun.objects.get(pk=run_id)
    raise DomainError(f"Run {run_id} already {run.status}.", code="finished", status=409)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True,
            timeout=5, check=True,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    import datasets
    import peft
    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
    }


def training_run_execute(*, run_id: int) -> TrainingRun:
    """Claim and run one training run. Safe to call twice: only one call claims it."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
    )
    run = TrainingRun.objects.select_related("snapshot", "base_policy").get(pk=run_id)
    if not claimed:
        return run
    recipe_class, train = TRAINERS[run.kind]
    recipe = recipe_class(**run.recipe)
    root = Path(settings.ARTIFACTS_DIR)
    final = root / "runs" / str(run.pk)
    staging = root / "runs" / f"{run.pk}.partial"
    if run.attempts <= 1:  # a retried run keeps its checkpoints and resumes from the last
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = list(run.metrics_history)

    # Progress, heartbeat and the cancel flag go through the database at most once a second
    # (and at the last step): a tiny model logs many steps a second, and writing the growing
    # metrics history at each one would cost more than the step.
    last = {"write": 0.0, "check": 0.0, "stop": False}

    def on_log(step: int, total: int, logs: dict[str, float]) -> None:
        history.append(
            {"step": step, **{k: v for k, v in logs.items() if isinstance(v, int | float)}}
        )
        now = time.monotonic()
        if now - last["write"] >= PROGRESS_EVERY_S or step >= total:
            last["write"] = now
            TrainingRun.objects.filter(pk=run.pk).update(
                progress_step=step, progress_total=total, heartbeat_at=timezone.now(),
                metrics_history=history,
            )  # fmt: skip

    def should_stop() -> bool:
        now = time.monotonic()
        if not last["stop"] and now - last["check"] >= PROGRESS_EVERY_S:
            last["check"] = now
            last["stop"] = TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists()
        return bool(last["stop"])

    def heartbeat() -> None:
        TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())

    try:
        base_model = resolve_model_path(run.base_policy.base_model or run.base_policy.name)
        inputs = {
            "base_model": base_model,
            "snapshot_dir": root / run.snapshot.path,
            "base_adapter": resolve_model_path(run.base_policy.adapter_path)
            if run.base_policy.adapter_path
            else None,
            **_reward_model_inputs(run),
        }
        if needs_launch(recipe):  # several processes: accelerate launch, relayed back here
            metrics = train_launched(
                kind=run.kind, recipe=recipe, output_dir=staging, on_log=on_log,
                should_stop=should_stop, heartbeat=heartbeat, **inputs,
            )  # fmt: skip
        else:
            metrics = train(
                output_dir=staging, recipe=recipe, on_log=on_log, should_stop=should_stop,
                **inputs,
            )  # fmt: skip
    except Exception as exc:  # the run records why it failed; the worker lives on
        shutil.rmtree(staging, ignore_errors=True)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000],
            finished_at=timezone.now(),
        )  # fmt: skip
        raise
    if TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
        shutil.rmtree(staging, ignore_errors=True)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.CANCELLED, finished_at=timezone.now()
        )
        return TrainingRun.objects.get(pk=run.pk)
    provenance = {
        "recipe": run.recipe,
        "dataset_sha256": run.snapshot.sha256,
        "base_model": run.base_policy.base_model or run.base_policy.name,
        "seed": getattr(recipe, "seed", None),
        "git_commit": _git_commit(),
        "versions": _versions(),
    }
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    produced = None
    if run.kind in POLICY_KINDS:
        base = run.base_policy
        # What serves: a LoRA adapter on the base's weights; or full weights, either merged
        # (the base itself carried an adapter) or fully fine-tuned.
        model, merged = final / "model", final / "merged"
        if merged.exists() or not (model / "adapter_config.json").exists():
            weights, adapter = (merged if merged.exists() else model), ""
            base_model = str(weights.relative_to(root))
        else:
            base_model, adapter = base.base_model, str(model.relative_to(root))
        produced = policy_register(
            name=f"{_LINEAGE_SUFFIX.sub('', base.name)}-{run.kind}-run{run.pk}",
            base_model=base_model,
            adapter_path=adapter,
            parent=base,
        )
    TrainingRun.objects.filter(pk=run.pk).update(
        produced_policy=produced,
        status=TrainingRun.Status.SUCCEEDED, metrics=metrics, provenance=provenance,
        artifact_path=str(final.relative_to(root)), finished_at=timezone.now(),
        progress_step=max([h["step"] for h in history] or [0]),
    )  # fmt: skip
    return TrainingRun.objects.get(pk=run.pk)


def _reward_model_inputs(run: TrainingRun) -> dict[str, Any]:
    """For online RL: where each pinned reward model is (with the base weights it may adapt),
    and which prompts are safety-tagged (for Llama 2's rule)."""
    if run.kind != TrainingRun.Kind.ONLINE_RL:
        return {}
    recipe = run.recipe
    if recipe.get("combine", "single") == "single":
        roles = {"reward": recipe["reward_run"]}
    else:
        roles = {axis: recipe[f"{axis}_reward_run"] for axis in online_rl.AXES}
    models = {}
    for role, run_id in roles.items():
        if run_id is None:
            continue
        reward_run = TrainingRun.objects.select_related("base_policy").get(pk=run_id)
        models[role] = (
            Path(settings.ARTIFACTS_DIR) / reward_run.artifact_path / "model",
            resolve_model_path(reward_run.base_policy.base_model),
        )
    safety = set(Prompt.objects.filter(safety=True).values_list("content_hash", flat=True))
    return {"reward_models": models, "safety_prompts": safety}


def training_runs_recover(*, stale_after_s: int | None = None) -> list[int]:
    """Notice runs whose worker died (no heartbeat for ``stale_after_s``) and requeue each once;
    a run that was already retried is marked failed with the reason. Returns the requeued ids."""
    stale_after_s = settings.TRAINING_STALE_SECONDS if stale_after_s is None else stale_after_s
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    stale = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    requeued = []
    for run in stale:
        if run.attempts >= 2:
            TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
                status=TrainingRun.Status.FAILED,
                error="Its worker stopped twice (no heartbeat since "
                f"{run.heartbeat_at:%H:%M:%S} UTC).",
                finished_at=timezone.now(),
            )
        elif TrainingRun.objects.filter(
            pk=run.pk, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff
        ).update(status=TrainingRun.Status.QUEUED):
            requeued.append(run.pk)
            _enqueue(run.pk)
    return requeued
