"""Training on several processes (GPUs) with ``accelerate launch``, optionally under DeepSpeed ZeRO.

A recipe with ``num_processes`` above 1 (or a ``deepspeed_stage``) is not trained inside the
worker: the worker writes what the trainer needs to ``launch.json`` in the run's folder and runs
``accelerate launch -m training.launch launch.json``, which starts one process per GPU (data
parallel, torch.distributed; gloo on a machine without GPUs, so the path is tested on CPU). Each
process calls the same trainer function as a one-process run; the Hugging Face Trainer inside it
does the distributed work, and with ``deepspeed_stage`` reads the ZeRO config this module writes
(``"auto"`` values are filled in by the Trainer from its own arguments). Scaling is the engine's
job, not ours: nothing here splits data or reduces gradients.

The worker stays in charge of the run's row. Process 0 appends each log line to
``progress.jsonl``, which the worker reads into the row (so the web page shows the same live
progress); the worker writes ``cancel`` when the run is cancelled, and the processes agree on
stopping with an all-reduce at each step (one stopping alone would leave the others waiting in
the next gradient reduction). Process 0 writes the metrics to ``result.json`` when it is done.
If the worker dies, the launcher gets SIGTERM (Linux's parent-death signal) and takes its
processes down with it, so a resumed run never races a stale one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

SPEC = "launch.json"
PROGRESS = "progress.jsonl"
RESULT = "result.json"
CANCEL = "cancel"
DEEPSPEED_CONFIG = "deepspeed.json"
STDERR_TAIL = 3000


def needs_launch(recipe: Any) -> bool:
    return getattr(recipe, "num_processes", 1) > 1 or getattr(recipe, "deepspeed_stage", 0) > 0


def deepspeed_config(stage: int) -> dict[str, Any]:
    """A ZeRO config for the Hugging Face Trainer: the stage, with batch size, accumulation,
    clipping and precision left "auto" so they follow the recipe's TrainingArguments."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:  # gather the sharded weights into one file when the model is saved
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def launch_command(recipe: Any, spec: Path) -> list[str]:
    """``accelerate launch`` with one process per GPU on this machine."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", str(recipe.num_processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "training.launch", str(spec),
    ]  # fmt: skip


def check_launchable(recipe: Any) -> None:
    """Fail before starting anything when this worker cannot run the recipe as asked."""
    import importlib.util

    import torch

    if recipe.deepspeed_stage and importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError(
            f"deepspeed_stage {recipe.deepspeed_stage} needs DeepSpeed on the training worker "
            "(pip install deepspeed); it is not installed."
        )
    if recipe.deepspeed_stage and not torch.cuda.is_available():
        raise RuntimeError("DeepSpeed needs GPUs; this worker has none.")
    gpus = torch.cuda.device_count()
    if gpus and recipe.num_processes > gpus:
        raise RuntimeError(f"num_processes is {recipe.num_processes}; this worker has {gpus} GPUs.")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def train_launched(
    *,
    kind: str,
    recipe: Any,
    output_dir: Path,
    on_log: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool],
    heartbeat: Callable[[], None],
    **inputs: Any,
) -> dict[str, Any]:
    """Run ``kind``'s trainer under ``accelerate launch`` and relay its progress; its metrics."""
    check_launchable(recipe)
    for stale in (PROGRESS, RESULT, CANCEL):
        (output_dir / stale).unlink(missing_ok=True)
    if recipe.deepspeed_stage:
        (output_dir / DEEPSPEED_CONFIG).write_text(
            json.dumps(deepspeed_config(recipe.deepspeed_stage), indent=2)
        )
    spec = output_dir / SPEC
    spec.write_text(json.dumps({
        "kind": kind, "recipe": asdict(recipe), "output_dir": str(output_dir),
        "inputs": _to_json(inputs),
    }))  # fmt: skip
    stderr = (output_dir / "launch.log").open("w+b")
    process = subprocess.Popen(
        launch_command(recipe, spec), cwd=Path(__file__).resolve().parent.parent,
        stdout=stderr, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )  # fmt: skip
    offset = 0
    try:
        while True:
            try:
                process.wait(timeout=1.0)  # at most a second between progress reads
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            offset = _relay(output_dir / PROGRESS, offset, on_log)
            heartbeat()
            if should_stop():
                (output_dir / CANCEL).touch()
            if finished:
                break
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
    if process.returncode != 0:
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-STDERR_TAIL:]
        raise RuntimeError(f"accelerate launch exited with {process.returncode}:\n{tail}")
    stderr.close()
    return json.loads((output_dir / RESULT).read_text())


def _relay(path: Path, offset: int, on_log: Callable[[int, int, dict[str, float]], None]) -> int:
    """Hand the log lines written since ``offset`` to ``on_log``; the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            if not line.endswith(b"\n"):  # being written: read it next time
                break
            entry = json.loads(line)
            on_log(entry["step"], entry["total"], entry["logs"])
            offset += len(line)
    return offset


def _to_json(inputs: dict[str, Any]) -> dict[str, Any]:
    out = dict(inputs)
    out["snapshot_dir"] = str(out["snapshot_dir"])
    if "reward_models" in out:
        out["reward_models"] = {k: [str(p), b] for k, (p, b) in out["reward_models"].items()}
    if "safety_prompts" in out:
        out["safety_prompts"] = sorted(out["safety_prompts"])
    return out


def _from_json(inputs: dict[str, Any]) -> dict[str, Any]:
    out = dict(inputs)
    if "reward_models" in out:
        out["reward_models"] = {k: (Path(p), b) for k, (p, b) in out["reward_models"].items()}
    if "safety_prompts" in out:
        out["safety_prompts"] = set(out["safety_prompts"])
    out["snapshot_dir"] = Path(out["snapshot_dir"])
    return out


def main(spec_path: str) -> None:
    """One of the launched processes: the trainer, reporting through files (process 0)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")
    django.setup()
    import torch.distributed as dist

    from .runs import TRAINERS

    spec = json.loads(Path(spec_path).read_text())
    output_dir = Path(spec["output_dir"])
    recipe_class, train = TRAINERS[spec["kind"]]
    recipe = recipe_class(**spec["recipe"])
    first = int(os.environ.get("RANK", "0")) == 0
    progress = (output_dir / PROGRESS).open("a") if first else None

    def on_log(step: int, total: int, logs: dict[str, float]) -> None:
        if progress is not None:
            progress.write(json.dumps({"step": step, "total": total, "logs": logs}) + "\n")
            progress.flush()

    def should_stop() -> bool:
        import torch

        flag = torch.tensor([1.0 if (output_dir / CANCEL).exists() else 0.0])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    metrics = train(
        output_dir=output_dir, recipe=recipe, on_log=on_log, should_stop=should_stop,
        **_from_json(spec["inputs"]),
    )  # fmt: skip
    distributed = dist.is_available() and dist.is_initialized()
    if first:
        world = dist.get_world_size() if distributed else 1
        (output_dir / RESULT).write_text(json.dumps({**metrics, "world_size": world}))
    if distributed:
        # Leave together and shut the process group down before exiting: a process that exits
        # with the group's threads still running can abort ("terminate called without an
        # active exception", SIGABRT), which failed a finished two-process run once in CI.
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
