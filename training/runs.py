"""Training runs as background jobs: queuing, cancelling and recovering them. The TrainingRun
row is the source of truth.

* Creating a run validates the recipe overrides against the trainer's recipe dataclass (an unknown
  field or a wrong type is a 400 naming it) and the base (``base_trainable``: its weights present
  in safetensors inside the artifacts root, a MODEL_DIRS folder or the Hugging Face cache; not a
  GGUF file; not quantized under full fine-tuning; QLoRA only where CUDA is), records the
  registry's warnings on the run, cuts a dataset snapshot, and enqueues the job on the
  ``training`` queue once the transaction commits. One queued or running run per base policy: a
  second is a 409 naming the first (a partial unique index enforces it).
* The job itself (claim → prepare → train → publish) is ``training.execution``.
* Cancelling a queued run ends it; a running one is asked to stop and its job honours it.
* A run whose worker died (a stale heartbeat) is queued again once and resumes from its last
  complete checkpoint; a second death fails it.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from annotation.rubrics import rubric_current
from feedback.models import PolicyVersion
from feedback.platform.errors import DomainError
from feedback.platform.outbox import outbox_enqueue
from feedback.serving.backends import BackendUnavailable, require_safetensors, resolve_model_path
from feedback.serving.devices import quantization_refusal
from feedback.serving.guidance import (
    device_memory_bytes,
    policy_reading,
    reading_memory,
    training_guidance,
    training_mode,
)
from feedback.serving.model_files import ModelSourceError, model_inspect
from feedback.serving.policies import policy_active

from .models import DatasetSnapshot, TrainingRun
from .snapshots import snapshot_create_kto, snapshot_create_preference, snapshot_create_sft
from .trainers import dpo, kto, online_rl, pretrain, reward, sft
from .trainers.common import TRACKERS

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
    if recipe is not None and (why := _report_to_refusal(recipe.report_to)):
        errors["recipe.report_to"] = [why]
    if recipe is not None and recipe.eval_every < 0:
        errors["recipe.eval_every"] = ["0 (ten evaluations over the run) or a number of steps."]
    if recipe is not None and recipe.num_processes < 1:
        errors["recipe.num_processes"] = ["At least 1."]
    if recipe is not None and recipe.deepspeed_stage not in (0, 1, 2, 3):
        errors["recipe.deepspeed_stage"] = ["0 (no DeepSpeed) or a ZeRO stage: 1, 2 or 3."]
    if errors:
        raise DomainError(
            "; ".join(f"{name}: {' '.join(why)}" for name, why in errors.items()), fields=errors
        )
    return recipe


def default_report_to() -> str:
    """The TRAINING_REPORT_TO setting: TensorBoard, offline, unless set otherwise. Nothing that
    sends data off the machine is on by default."""
    return getattr(settings, "TRAINING_REPORT_TO", "tensorboard")


def _report_to_refusal(report_to: str | None) -> str | None:
    """Why a ``report_to`` value cannot be used on this machine, or None. A tracker must be one
    the trainers know and, for Trackio and W&B, installed (they are not dependencies)."""
    import importlib.util

    names = [part.strip() for part in (report_to or "").split(",") if part.strip()]
    for name in names:
        if name not in (*TRACKERS, "none"):
            return f"{name!r} is not a tracker: use {', '.join(TRACKERS)} or none, comma-separated."
        if name != "none" and importlib.util.find_spec(name) is None:
            return f"{name} is not installed where the server runs; pip install {name} first."
    if "none" in names and len(names) > 1:
        return "none cannot be combined with a tracker."
    return None


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
    full_recipe = _recipe_complete(kind, recipe or {})
    warnings = base_trainable(_base_policy_free(base_policy_id), kind=kind, recipe=full_recipe)
    # The base's row is locked from the check to the run's insert, so of two requests at once on
    # one base the second waits, then gets its 409 before cutting a snapshot no run would own.
    with transaction.atomic():
        base = _base_policy_free(base_policy_id, lock=True)
        if snapshot_id is not None:
            snapshot = _snapshot_given(kind, snapshot_id)
        else:
            snapshot = _snapshot_cut(
                kind, recipe=full_recipe, rounds=rounds, top_ranked=top_ranked,
                consensus=consensus, created_by=created_by,
            )  # fmt: skip
        try:
            with transaction.atomic():
                run = TrainingRun.objects.create(
                    kind=kind,
                    base_policy=base,
                    snapshot=snapshot,
                    recipe=asdict(full_recipe),
                    warnings=warnings,
                    created_by=created_by,
                )
        except IntegrityError:
            active = TrainingRun.objects.filter(
                base_policy=base, status__in=TrainingRun.ACTIVE
            ).first()
            raise DomainError(
                f"Run {getattr(active, 'pk', '?')} is already active on {base.name}.",
                code="conflict", status=409, extra={"training_run": getattr(active, "pk", None)},
            ) from None  # fmt: skip
        if enqueue:  # `simulate` runs the job in its own process instead
            _enqueue(run.pk)
    return run


def _recipe_complete(kind: str, overrides: dict[str, Any]) -> Any:
    """The validated recipe; for online RL with its reward models pinned; a per-axis reward
    model's axis one of the rubric's."""
    full_recipe = recipe_validate(kind, overrides)
    if full_recipe.report_to is None:  # the run records where it reported
        full_recipe = replace(full_recipe, report_to=default_report_to())
    if kind == TrainingRun.Kind.ONLINE_RL:
        full_recipe = _online_rl_recipe(full_recipe)
    axis = getattr(full_recipe, "axis", None)
    if axis is not None and axis not in (keys := [a["key"] for a in rubric_current().axes]):
        raise DomainError(
            f"recipe.axis: one of {', '.join(keys)}.",
            fields={"recipe.axis": [f"One of the rubric's axes: {', '.join(keys)}."]},
        )
    return full_recipe


def _base_policy_free(base_policy_id: int | None, *, lock: bool = False) -> PolicyVersion:
    """The policy to train from (the active one unless named), with no run queued or running
    on it yet; with ``lock``, its row locked until the transaction ends."""
    base = (
        PolicyVersion.objects.filter(pk=base_policy_id).first()
        if base_policy_id
        else policy_active()
    )
    if base is not None and lock:
        base = PolicyVersion.objects.select_for_update().get(pk=base.pk)
    if base is None:
        raise DomainError("No such base policy.", fields={"base_policy": ["No such policy."]})
    active = TrainingRun.objects.filter(base_policy=base, status__in=TrainingRun.ACTIVE).first()
    if active is not None:
        raise DomainError(
            f"Run {active.pk} is already {active.status} on {base.name}.",
            code="conflict", status=409, extra={"training_run": active.pk},
        )  # fmt: skip
    return base


def base_trainable(base: PolicyVersion, *, kind: str, recipe: Any) -> list[str]:
    """Refuse a base a run cannot start from, with the reason (a 400 on ``base_policy``, or on
    ``recipe.quantization``); otherwise the registry's warnings for it, which the run keeps.

    A base must be weights on this machine, read as a worker would read them: the model inside
    the artifacts root, a MODEL_DIRS folder or the local Hugging Face cache, in safetensors
    (``model_inspect`` refuses a path that climbs out, a link out of the roots, a pickle-only
    folder and a hub id not in the cache), and its adapter likewise. An imported "external"
    version is a name, not weights, and is refused by the same reading."""
    quantization = getattr(recipe, "quantization", None)
    trust = settings.TRAINING_WORKERS_HAVE_CUDA
    if why := quantization_refusal(quantization, recipe.use_lora, trust_workers=trust):
        raise DomainError(why, fields={"recipe.quantization": [why]})
    try:
        model_inspect(base.base_model or base.name, revision=base.revision or None)
        if base.adapter_path:
            adapter = Path(resolve_model_path(base.adapter_path))
            if not adapter.is_dir():
                raise BackendUnavailable(f"its adapter {base.adapter_path} is not on this machine.")
            require_safetensors(str(adapter))
    except (ModelSourceError, BackendUnavailable) as exc:
        why = f"{base.name} cannot be a training base: {_reason(exc)}"
        raise DomainError(why, fields={"base_policy": [why]}) from None
    reading = policy_reading(base)
    said = training_guidance(
        reading, kind=kind, mode=training_mode(use_lora=recipe.use_lora, quantization=quantization),
        memory=reading_memory(reading), device_memory_bytes=device_memory_bytes(),
    )  # fmt: skip
    if said.refusals:
        why = " ".join(said.refusals)
        raise DomainError(why, fields={"base_policy": [why]})
    return said.warnings


def _reason(exc: Exception) -> str:
    fields = getattr(exc, "fields", None) or {}
    return " ".join(" ".join(v) for v in fields.values()) or str(exc)


def _snapshot_given(kind: str, snapshot_id: int) -> DatasetSnapshot:
    """A snapshot named by the caller, of the kind this run trains on."""
    snapshot = DatasetSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is None:
        raise DomainError("No such snapshot.", fields={"snapshot": ["No such snapshot."]})
    if snapshot.kind != SNAPSHOT_KIND[kind]:
        why = (
            f"A {kind} run trains on a {SNAPSHOT_KIND[kind]} snapshot; snapshot "
            f"{snapshot.pk} is {snapshot.kind}."
        )
        raise DomainError(why, fields={"snapshot": [why]})
    return snapshot


def _snapshot_cut(
    kind: str,
    *,
    recipe: Any,
    rounds: list[int] | None,
    top_ranked: bool,
    consensus: str,
    created_by: Any,
) -> DatasetSnapshot:
    """A new snapshot of ``rounds`` of what this kind of run trains on."""
    if kind == TrainingRun.Kind.PRETRAIN:
        why = "Continued pre-training needs a corpus: upload one to /api/v1/snapshots/text/."
        raise DomainError(why, fields={"snapshot": [why]})
    if kind == TrainingRun.Kind.KTO:  # each task's best and worst answers, unpaired
        return snapshot_create_kto(rounds=rounds, created_by=created_by)
    if kind == TrainingRun.Kind.SFT:  # demonstrations (+ top-ranked completions)
        return snapshot_create_sft(rounds=rounds, top_ranked=top_ranked, created_by=created_by)
    return snapshot_create_preference(
        rounds=rounds,
        axis=getattr(recipe, "axis", None),  # a per-axis reward model
        consensus=consensus,
        created_by=created_by,
    )


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
