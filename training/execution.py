"""Executing a training run: the job the ``training`` queue runs for each queued run.

claim → prepare → train → publish, with the TrainingRun row as the source of truth:

* claim: a conditional UPDATE (queued → running); a redelivered job finds nothing to claim and
  does nothing, also while the first delivery is still training (Redis hands an unacknowledged
  job out again after its visibility timeout; see CELERY_BROKER_TRANSPORT_OPTIONS);
* prepare: the recipe stored on the run (``report_to`` defaulting to the TRAINING_REPORT_TO
  setting), a staging folder (a retried run keeps its checkpoints there and resumes from the
  last complete one), and the held-out split, recorded on the row: the snapshot's, or, when the
  snapshot held nothing out, prompts the run holds out itself (``eval_split_prepare``);
* train: the run's trainer, in this process or through ``accelerate launch`` (training/launch.py);
  it writes heartbeat, progress and the metrics history to the row and honours cancel; a failure
  is recorded on the row, and is final: nothing queues a failed run again (running out of memory
  is said in words, with what to change, since retrying the same recipe would fail the same way);
* publish: the staging folder renamed into place only when complete, with provenance (recipe,
  dataset sha256, base model, seed, git commit and library versions), and the policy it produced
  registered as a candidate.

Queuing, cancelling and recovering runs live in ``training.runs``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from feedback.models import PolicyVersion, Prompt
from feedback.serving.backends import resolve_model_path
from feedback.serving.policies import policy_register

from .launch import needs_launch, train_launched
from .models import DatasetSnapshot, TrainingRun
from .runs import TRAINERS, default_report_to
from .trainers import online_rl

PROGRESS_EVERY_S = 1.0
# "tiny-v0-dpo-run3" → "tiny-v0": a produced policy is named after the root of its lineage.
_LINEAGE_SUFFIX = re.compile(r"-(dpo|kto|sft|online_rl|pretrain)-run\d+$")
# Kinds whose output is a new policy: registered as a candidate (an adapter on the base weights).
POLICY_KINDS = {
    TrainingRun.Kind.DPO, TrainingRun.Kind.KTO, TrainingRun.Kind.SFT, TrainingRun.Kind.ONLINE_RL,
    TrainingRun.Kind.PRETRAIN,
}  # fmt: skip


def training_run_execute(*, run_id: int) -> TrainingRun:
    """Claim and run one training run: claim → prepare → train → publish (see the module doc).
    Safe to call twice: only one call claims it."""
    claimed = _claim(run_id)
    run = TrainingRun.objects.select_related("snapshot", "base_policy").get(pk=run_id)
    if not claimed:
        return run
    recipe = recipe_of(run)
    staging = _staging_prepare(run)
    progress = _RunProgress(run.pk, history=list(run.metrics_history))
    try:
        data = eval_split_prepare(run, staging)
        metrics = _train(run, recipe=recipe, staging=staging, progress=progress, data=data)
    except Exception as exc:  # the run records why it failed; the worker lives on
        shutil.rmtree(staging, ignore_errors=True)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.FAILED, error=_failure_reason(exc)[:4000],
            finished_at=timezone.now(),
        )  # fmt: skip
        raise
    if TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
        shutil.rmtree(staging, ignore_errors=True)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.CANCELLED, finished_at=timezone.now()
        )
        return TrainingRun.objects.get(pk=run.pk)
    return _publish(run, recipe=recipe, staging=staging, metrics=metrics, history=progress.history)


def recipe_of(run: TrainingRun) -> Any:
    """The run's recipe as its trainer's dataclass; ``report_to`` unset takes the setting."""
    recipe_class, _ = TRAINERS[run.kind]
    recipe = recipe_class(**run.recipe)
    if getattr(recipe, "report_to", "") is None:
        recipe = replace(recipe, report_to=default_report_to())
    return recipe


# Below this many prompts a run holds none out of a snapshot that held none out: the one prompt
# held out would be a fifth of the data or more.
MIN_PROMPTS_TO_HOLD_OUT = 5


def _digest(key: Any) -> str:
    # The hash the snapshot's split rule uses (training.snapshots.is_eval), in full.
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _split_read(path: Path, key: str) -> tuple[int, set[str]]:
    """Rows and the distinct prompts (digests) of one split file, read line by line."""
    rows, keys = 0, set()
    with path.open() as lines:
        for line in lines:
            if line.strip():
                rows += 1
                keys.add(_digest(json.loads(line)[key]))
    return rows, keys


def eval_split_prepare(run: TrainingRun, staging: Path) -> Path:
    """The folder with the train and eval files the run trains on, its split recorded on the row.

    The snapshot's own split when it held prompts out. A small snapshot can hold none out (each
    prompt's hash decides, and with few prompts a 10% share can be none); then, when it has at
    least MIN_PROMPTS_TO_HOLD_OUT prompts and an eval fraction above 0, the run holds out the
    prompts the snapshot's rule would move to eval first (the lowest hashes), at the snapshot's
    fraction and at least one, every row of a prompt on the same side, written to
    ``staging/split``. The same snapshot always gives the same split."""
    source = Path(settings.ARTIFACTS_DIR) / run.snapshot.path
    key = "text" if run.snapshot.kind == DatasetSnapshot.Kind.TEXT else "prompt"
    fraction = float(run.snapshot.filters.get("eval_fraction", 0.1))
    folder, whose = source, "snapshot"
    train_rows, train_keys = _split_read(source / "train.jsonl", key)
    eval_rows, eval_keys = _split_read(source / "eval.jsonl", key)
    if not eval_rows and fraction > 0 and len(train_keys) >= MIN_PROMPTS_TO_HOLD_OUT:
        held = set(sorted(train_keys)[: max(1, round(fraction * len(train_keys)))])
        folder, whose = staging / "split", "run"
        folder.mkdir(exist_ok=True)
        with (
            (source / "train.jsonl").open() as lines,
            (folder / "train.jsonl").open("w") as train,
            (folder / "eval.jsonl").open("w") as held_out,
        ):
            for line in lines:
                if line.strip():
                    (held_out if _digest(json.loads(line)[key]) in held else train).write(line)
        train_rows, train_keys = _split_read(folder / "train.jsonl", key)
        eval_rows, eval_keys = _split_read(folder / "eval.jsonl", key)
    unit = "documents" if key == "text" else "prompts"
    record = {
        "source": whose if eval_rows else "none",
        "rule": f"by sha256 of the {key}: no {unit[:-1]} on both sides",
        "eval_fraction": fraction,
        "unit": unit,
        unit: {"train": len(train_keys), "eval": len(eval_keys)},
        "rows": {"train": train_rows, "eval": eval_rows},
    }
    TrainingRun.objects.filter(pk=run.pk).update(eval_split=record)
    return folder


# How each place that can run out of memory says so: PyTorch's CUDA and MPS allocators
# ("CUDA out of memory", torch.OutOfMemoryError), its CPU allocator (a RuntimeError "can't
# allocate memory"), Python itself (MemoryError), and a trainer launched through accelerate, whose
# error comes back as text naming one of these.
_OUT_OF_MEMORY = re.compile(r"OutOfMemoryError|MemoryError|out of memory|can't allocate memory")
OUT_OF_MEMORY_ADVICE = (
    "Out of memory while training: lower per_device_train_batch_size or max_length, use LoRA "
    "(use_lora) or QLoRA (quantization '4bit'), or spread the run over more GPUs "
    "(num_processes with deepspeed_stage)."
)


def _failure_reason(exc: BaseException) -> str:
    """What the run's row says about a failed run: the error, prefixed with advice when it ran
    out of memory (the raw allocator message alone names bytes, not the recipe field to change)."""
    raw = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(raw):
        return f"{OUT_OF_MEMORY_ADVICE} ({raw[:1000]})"
    return raw


def _claim(run_id: int) -> bool:
    """queued → running, in one conditional UPDATE: False when another call got there first."""
    now = timezone.now()
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
        )
    )


def _staging_prepare(run: TrainingRun) -> Path:
    """The folder the trainer writes to, renamed into place only once the run succeeded."""
    staging = Path(settings.ARTIFACTS_DIR) / "runs" / f"{run.pk}.partial"
    if run.attempts <= 1:  # a retried run keeps its checkpoints and resumes from the last
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


class _RunProgress:
    """The trainer's hooks into the run's row: progress and metrics, heartbeat, cancel.

    Progress, heartbeat and the cancel flag go through the database at most once a second (and
    at the last step): a tiny model logs many steps a second, and writing the growing metrics
    history at each one would cost more than the step.
    """

    def __init__(self, run_id: int, *, history: list[dict[str, Any]]) -> None:
        self.run_id = run_id
        self.history = history
        self.last_write = self.last_check = 0.0
        self.stop = False

    def on_log(self, step: int, total: int, logs: dict[str, float]) -> None:
        self.history.append(
            {"step": step, **{k: v for k, v in logs.items() if isinstance(v, int | float)}}
        )
        now = time.monotonic()
        if now - self.last_write >= PROGRESS_EVERY_S or step >= total:
            self.last_write = now
            TrainingRun.objects.filter(pk=self.run_id).update(
                progress_step=step, progress_total=total, heartbeat_at=timezone.now(),
                metrics_history=self.history,
            )  # fmt: skip

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.stop and now - self.last_check >= PROGRESS_EVERY_S:
            self.last_check = now
            self.stop = TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()
        return self.stop

    def heartbeat(self) -> None:
        TrainingRun.objects.filter(pk=self.run_id).update(heartbeat_at=timezone.now())


def _train(
    run: TrainingRun, *, recipe: Any, staging: Path, progress: _RunProgress, data: Path
) -> dict[str, Any]:
    """Train into ``staging`` on the splits in ``data`` with the run's trainer, in this process
    or, for several processes, through accelerate launch (relayed back here). Returns the
    trainer's metrics."""
    inputs = {
        "base_model": resolve_model_path(run.base_policy.base_model or run.base_policy.name),
        "snapshot_dir": data,
        "base_adapter": resolve_model_path(run.base_policy.adapter_path)
        if run.base_policy.adapter_path
        else None,
        **_reward_model_inputs(run),
    }
    if needs_launch(recipe):
        return train_launched(
            kind=run.kind, recipe=recipe, output_dir=staging, on_log=progress.on_log,
            should_stop=progress.should_stop, heartbeat=progress.heartbeat, **inputs,
        )  # fmt: skip
    _, train = TRAINERS[run.kind]
    return train(
        output_dir=staging, recipe=recipe, on_log=progress.on_log,
        should_stop=progress.should_stop, **inputs,
    )  # fmt: skip


def _publish(
    run: TrainingRun,
    *,
    recipe: Any,
    staging: Path,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
) -> TrainingRun:
    """Rename the staged artifacts into place, register the policy the run produced (for the
    kinds that produce one), and mark the run succeeded with its provenance."""
    provenance = {
        "recipe": run.recipe,
        "dataset_sha256": run.snapshot.sha256,
        "base_model": run.base_policy.base_model or run.base_policy.name,
        "seed": getattr(recipe, "seed", None),
        "report_to": getattr(recipe, "report_to", None),
        "git_commit": _git_commit(),
        "versions": _versions(),
    }
    root = Path(settings.ARTIFACTS_DIR)
    final = root / "runs" / str(run.pk)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    produced = _policy_register(run, final) if run.kind in POLICY_KINDS else None
    TrainingRun.objects.filter(pk=run.pk).update(
        produced_policy=produced,
        status=TrainingRun.Status.SUCCEEDED, metrics=metrics, provenance=provenance,
        artifact_path=str(final.relative_to(root)), finished_at=timezone.now(),
        metrics_history=history,
        progress_step=max([h["step"] for h in history] or [0]),
    )  # fmt: skip
    return TrainingRun.objects.get(pk=run.pk)


def _policy_register(run: TrainingRun, final: Path) -> PolicyVersion:
    """The run's policy as a candidate. What serves: a LoRA adapter on the base's weights; or
    full weights, either merged (the base itself carried an adapter) or fully fine-tuned."""
    root = Path(settings.ARTIFACTS_DIR)
    base = run.base_policy
    model, merged = final / "model", final / "merged"
    if merged.exists() or not (model / "adapter_config.json").exists():
        weights, adapter = (merged if merged.exists() else model), ""
        base_model = str(weights.relative_to(root))
    else:
        base_model, adapter = base.base_model, str(model.relative_to(root))
    return policy_register(
        name=f"{_LINEAGE_SUFFIX.sub('', base.name)}-{run.kind}-run{run.pk}",
        base_model=base_model,
        adapter_path=adapter,
        parent=base,
    )


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
