"""What every trainer shares: the snapshot's splits, progress and cancel hooks, and resuming.

TRL's trainers are Hugging Face ``Trainer``s, so these pieces fit all of them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.serving.backends import require_safetensors

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RecipeBase:
    """The fields every recipe has; each trainer's recipe adds its own (and its defaults)."""

    max_steps: int = -1
    """Stop after this many steps if positive (overrides epochs)."""
    use_lora: bool = True
    """Train LoRA adapters instead of all weights."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling (alpha / r multiplies the update)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA path."""
    seed: int = 42
    """Seed for initialisation and data order."""
    checkpoint_every: int = 50
    """Save a checkpoint every this many steps; a run whose worker died resumes from the last."""
    num_processes: int = 1
    """Processes to train on, one per GPU; above 1 the run goes through ``accelerate launch``
    (data parallel; see training/launch.py). The per-device batch size is per process."""
    deepspeed_stage: int = 0
    """DeepSpeed ZeRO stage (1: optimizer states, 2: + gradients, 3: + weights sharded across
    the processes); 0 runs without DeepSpeed. Needs GPUs and the deepspeed package."""


def snapshot_splits(snapshot_dir: Path, *, drop: tuple[str, ...] = ()) -> Any:
    """The snapshot's train split and, when it has rows, its eval split, as a DatasetDict."""
    from datasets import load_dataset

    files = {"train": str(snapshot_dir / "train.jsonl")}
    if (snapshot_dir / "eval.jsonl").stat().st_size > 0:
        files["eval"] = str(snapshot_dir / "eval.jsonl")
    data = load_dataset("json", data_files=files)
    present = [column for column in drop if column in data["train"].column_names]
    return data.remove_columns(present) if present else data


def progress_callback(
    on_log: Callable[[int, int, dict[str, float]], None], should_stop: Callable[[], bool]
) -> Any:
    """A TrainerCallback that reports each log line and stops at the next step when cancelled."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            on_log(state.global_step, state.max_steps, dict(logs or {}))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if should_stop():
                control.should_training_stop = True

    return Progress()


def quiet(trainer: Any) -> Any:
    """No log lines on stdout (the Trainer prints every log dict when tqdm is off): progress
    goes to the run's row instead, and stdout stays the caller's."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing, or None.

    ``transformers.trainer_utils.get_last_checkpoint`` returns the newest folder even when the
    worker died while writing it. The Trainer writes ``trainer_state.json`` last, so a folder
    without it is incomplete: it is removed, and the one before it is used.
    """
    if not folder.is_dir():
        return None
    found = {}
    for child in folder.iterdir():
        if child.is_dir() and (match := _CHECKPOINT.match(child.name)):
            found[int(match.group(1))] = child
    for step in sorted(found, reverse=True):
        if (found[step] / "trainer_state.json").is_file():
            return str(found[step])
        shutil.rmtree(found[step], ignore_errors=True)
    return None


def trainer_arguments(recipe: Any, output_dir: Path) -> dict[str, Any]:
    """The TrainingArguments every trainer shares, from the recipe's common fields: logging at
    every step (the run's row shows it), checkpoints every ``checkpoint_every`` steps (one kept),
    bf16 on a GPU that has it, and no gradient checkpointing on CPU (TRL turns it on; on CPU
    it only slows a run down)."""
    import torch

    gpu = torch.cuda.is_available()
    return {
        "output_dir": str(output_dir / "checkpoints"),
        "learning_rate": recipe.learning_rate,
        "num_train_epochs": recipe.num_train_epochs,
        "max_steps": recipe.max_steps,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "per_device_eval_batch_size": recipe.per_device_train_batch_size,
        "seed": recipe.seed,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": recipe.checkpoint_every,
        "save_total_limit": 1,
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": not gpu,
        "bf16": gpu and torch.cuda.is_bf16_supported(),
        "gradient_checkpointing": gpu,
        # Written by training/launch.py next to the checkpoints when the recipe asks for ZeRO.
        "deepspeed": str(output_dir / "deepspeed.json") if recipe.deepspeed_stage else None,
    }


def lora_config(recipe: Any, task_type: str) -> Any:
    """PEFT's LoraConfig from the recipe, or None when it trains all weights."""
    if not recipe.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type, r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
    )  # fmt: skip


def train_resumably(trainer: Any) -> dict[str, Any]:
    """Train, continuing from the last complete checkpoint when a run is taken over after its
    worker died; the final train loss, and the step it resumed from if it did."""
    checkpoint = last_complete_checkpoint(Path(trainer.args.output_dir))
    quiet(trainer).train(resume_from_checkpoint=checkpoint)
    metrics: dict[str, Any] = {"train_loss": trainer.state.log_history[-1].get("train_loss")}
    if checkpoint:
        metrics["resumed_from_step"] = int(checkpoint.rsplit("-", 1)[-1])
    return metrics


def reward_scorer(path: Path, base_model: str) -> Callable[[list[dict[str, str]], str], float]:
    """A reward model as a function: (prompt messages, answer) → its scalar score.

    ``path`` holds the model, or a LoRA adapter (with the scalar head) on ``base_model``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(
            base_model, num_labels=1, use_safetensors=True
        )
        base.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(base, require_safetensors(path))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    model.eval()

    def score(prompt: list[dict[str, str]], answer: str) -> float:
        text = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False
        )
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True)
        with torch.inference_mode():
            return float(model(**inputs).logits[0, 0])

    return score
