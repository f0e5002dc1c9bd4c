"""What every trainer shares: the snapshot's splits, progress and cancel hooks, and resuming.

TRL's trainers are Hugging Face ``Trainer``s, so these pieces fit all of them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from feedback.serving.backends import require_safetensors
from feedback.serving.devices import device_placement, inference_load_kwargs, training_load_kwargs

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
    quantization: str | None = None
    """'4bit' or '8bit': load the base through bitsandbytes (NF4, double quantization, compute
    in bf16) and train LoRA on top (QLoRA, Dettmers et al., 2023); needs CUDA and use_lora. The
    adapter serves on the full-precision base; a merged policy is merged into that base too."""
    eval_every: int = 0
    """Evaluate on the held-out split every this many optimizer steps; 0: ten times over the run.
    The last step is always evaluated, so even a two-step run has a held-out point."""
    report_to: str | None = None
    """Where else the Trainer logs, besides the run's page: a comma-separated list of
    tensorboard (event files kept with the run's artifacts; offline), trackio, wandb, or none.
    None takes the TRAINING_REPORT_TO setting ("tensorboard" unless set). Trackio and W&B only
    when installed on the worker and configured there as their docs say."""


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


# What ``report_to`` may name; "tensorboard" is written by a callback of ours (see trackers).
TRACKERS = ("tensorboard", "trackio", "wandb")
# Per-evaluation bookkeeping that the Trainer logs beside the metrics; not a held-out metric.
_EVAL_BOOKKEEPING = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def trackers_named(report_to: str | None) -> list[str]:
    """The trackers a ``report_to`` value names, in order; none for "none" or empty."""
    names = [part.strip() for part in (report_to or "").split(",") if part.strip()]
    return [name for name in names if name != "none"]


def trainer_arguments(recipe: Any, output_dir: Path, *, has_eval: bool = False) -> dict[str, Any]:
    """The TrainingArguments every trainer shares, from the recipe's common fields: logging at
    every step (the run's row shows it), evaluation on the held-out split every ``eval_every``
    steps when there is one, checkpoints every ``checkpoint_every`` steps (one kept), the
    trackers ``report_to`` names besides TensorBoard (see ``tracker_callbacks``), the device and
    mixed precision ``DEVICE`` picks (bf16 on a GPU that has it, else fp16; fp32 on the CPU),
    and no gradient checkpointing on CPU (TRL turns it on; on CPU it only slows a run down)."""
    import torch

    placement = device_placement()
    gpu = placement.on_gpu
    return {
        "output_dir": str(output_dir / "checkpoints"),
        "run_name": f"feedback-run-{output_dir.name.split('.')[0]}",
        "learning_rate": recipe.learning_rate,
        "num_train_epochs": recipe.num_train_epochs,
        "max_steps": recipe.max_steps,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "per_device_eval_batch_size": recipe.per_device_train_batch_size,
        "seed": recipe.seed,
        "logging_steps": 1,
        # A float below 1 is a share of the run's steps to the Trainer: ten evaluations.
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": (recipe.eval_every or 0.1) if has_eval else None,
        "save_strategy": "steps",
        "save_steps": recipe.checkpoint_every,
        "save_total_limit": 1,
        "report_to": [t for t in trackers_named(recipe.report_to) if t != "tensorboard"],
        "disable_tqdm": True,
        "use_cpu": not gpu,
        "bf16": placement.dtype == torch.bfloat16,
        "fp16": placement.dtype == torch.float16,
        "gradient_checkpointing": gpu,
        # Written by training/launch.py next to the checkpoints when the recipe asks for ZeRO.
        "deepspeed": str(output_dir / "deepspeed.json") if recipe.deepspeed_stage else None,
    }


def tracker_callbacks(recipe: Any, output_dir: Path) -> list[Any]:
    """TensorBoard's callback writing to ``<run folder>/tensorboard`` when ``report_to`` names
    it. Transformers 5 takes the folder only from the TENSORBOARD_LOGGING_DIR environment
    variable, which a worker training one run after another must not share; so the callback is
    given its own writer and folder instead of being named in ``report_to``."""
    if "tensorboard" not in trackers_named(recipe.report_to):
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    folder = str(output_dir / "tensorboard")
    callback = TensorBoardCallback(tb_writer=SummaryWriter(log_dir=folder))
    callback.logging_dir = folder  # where it reopens a writer after train end (evaluate)
    return [callback]


def held_out_metrics(trainer: Any) -> dict[str, float]:
    """The last held-out evaluation: the Trainer evaluates at the run's last step (eval_steps
    or not), so it is in the log history; only a run that evaluated nothing is evaluated here.
    Bookkeeping (runtime, throughput) is left out."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if evals:
        latest = evals[-1]
    else:
        latest = trainer.evaluate()
        for callback in trainer.callback_handler.callbacks:  # flush a writer evaluate reopened
            if getattr(callback, "tb_writer", None) is not None:
                callback.tb_writer.close()
                callback.tb_writer = None
    return {
        k: v
        for k, v in latest.items()
        if k.startswith("eval_") and k not in _EVAL_BOOKKEEPING and isinstance(v, int | float)
    }


def load_causal_lm(base_model: str, recipe: Any, base_adapter: str | None = None) -> Any:
    """The policy a trainer starts from: the base with ``base_adapter`` (the policy's last tune)
    folded in, in the precision ``DEVICE`` picks. With ``recipe.quantization`` the base is loaded
    through bitsandbytes and made ready for k-bit training (QLoRA); the trainer's LoRA config then
    goes on top (TRL applies ``peft_config`` to the model it is given)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        base_model,
        use_safetensors=True,
        **training_load_kwargs(recipe.quantization, recipe.use_lora),
    )
    if base_adapter:
        # PEFT merges into 4-bit and 8-bit layers too (dequantize, add, quantize again).
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            model, require_safetensors(base_adapter)
        ).merge_and_unload()
    return kbit_prepared(model, recipe)


def load_reward_base(base_model: str, recipe: Any, pad_token_id: int | None) -> Any:
    """The base model with a scalar head (randomly initialised: seed first) for a reward model,
    placed and quantized as ``load_causal_lm`` does. bitsandbytes leaves the head in full
    precision (transformers never quantizes a model's last module)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        base_model,
        num_labels=1,
        use_safetensors=True,
        **training_load_kwargs(recipe.quantization, recipe.use_lora),
    )
    model.config.pad_token_id = pad_token_id
    return kbit_prepared(model, recipe)


def kbit_prepared(model: Any, recipe: Any) -> Any:
    """PEFT's preparation of a quantized base for training adapters on it, before LoRA goes on:
    the remaining full-precision layers (norms, embeddings, head) cast to fp32 for stable
    gradients, gradient checkpointing on, and inputs that carry gradients into the frozen
    layers. A model that is not quantized is returned as it is."""
    if not recipe.quantization:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)


def save_merged_policy(
    trainer: Any, tokenizer: Any, output_dir: Path, *, base_model: str,
    base_adapter: str | None, recipe: Any,
) -> None:  # fmt: skip
    """Save the new policy's full weights to ``merged/`` when its adapter was trained on the base
    with a previous adapter folded in, since it only serves on top of both. (Without LoRA the
    model already holds full weights and ``model/`` is the policy.)

    A QLoRA adapter is not merged into the 4-bit base it trained on (the rounding would be
    saved with it): as the QLoRA recipe ships, the base is loaded again in full precision, the
    previous adapter and the new one are folded in, and that is saved."""
    if not (base_adapter and recipe.use_lora):
        return
    if recipe.quantization:
        from peft import PeftModel

        full = load_causal_lm(base_model, replace(recipe, quantization=None), base_adapter)
        merged = PeftModel.from_pretrained(full, str(output_dir / "model")).merge_and_unload()
    else:
        merged = trainer.model
        if hasattr(merged, "merge_and_unload"):
            merged = merged.merge_and_unload()
    merged.save_pretrained(str(output_dir / "merged"), safe_serialization=True)
    tokenizer.save_pretrained(str(output_dir / "merged"))


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
    placement = inference_load_kwargs()  # on the GPU in bf16 there; fp32 on the CPU
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(
            base_model, num_labels=1, use_safetensors=True, **placement
        )
        base.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(base, require_safetensors(path))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, **placement
        )
    model.eval()

    def score(prompt: list[dict[str, str]], answer: str) -> float:
        text = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False
        )
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True)
        inputs = inputs.to(model.device)
        with torch.inference_mode():
            return float(model(**inputs).logits[0, 0])

    return score
