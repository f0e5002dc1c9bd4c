"""DPO candidates trained by the platform's trainer and by a bare TRL script, timed.

The platform side is ``training.trainers.dpo.train``, called as ``training/execution.py`` calls
it (a snapshot folder, an output folder, the recipe, progress and cancel hooks); the database
around a run is left out, since it adds a few row writes a second and the benchmarks of ``make
bench`` measure it. The bare side is what a user would write with TRL alone for the same recipe:
load, ``DPOTrainer(peft_config=…)``, ``train()``, ``save_model()``. For QLoRA the bare script
follows PEFT's and TRL's recipe: a bitsandbytes 4-bit NF4 base with double quantisation and bf16
compute, ``prepare_model_for_kbit_training``, then ``DPOTrainer`` with a LoRA config. Both are
timed from loading the model to the saved adapter, and the Trainer's own loop-only samples/s is
kept beside it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.gpu.outcome import Skipped


@dataclass(frozen=True)
class Plan:
    """The recipe both sides train with. The learning rate is high on purpose: the candidate
    must move a randomly initialised model far enough for its completions to be told apart."""

    steps: int
    batch: int
    learning_rate: float
    max_length: int
    beta: float = 0.1
    sft_weight: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    seed: int = 42

    @property
    def samples(self) -> int:
        return self.steps * self.batch


@dataclass
class Trained:
    seconds: float
    samples: int
    loop_samples_per_s: float | None
    train_loss: float | None
    adapter: Path


def qlora_unavailable() -> str | None:
    """Why 4-bit training cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (bitsandbytes 4-bit needs one)"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    return None


def platform_recipe(plan: Plan, quantization: str | None) -> Any:
    """The platform's DPORecipe for the plan; QLoRA needs the recipe's ``quantization`` field."""
    from training.trainers.dpo import DPORecipe

    names = {f.name for f in dataclasses.fields(DPORecipe)}
    if quantization and "quantization" not in names:
        raise Skipped(
            "the platform's DPORecipe has no `quantization` field yet (training/trainers/"
            "common.py); the platform cannot train QLoRA"
        )
    values = {
        "max_steps": plan.steps,
        "per_device_train_batch_size": plan.batch,
        "learning_rate": plan.learning_rate,
        "max_length": plan.max_length,
        "beta": plan.beta,
        "sft_weight": plan.sft_weight,
        "use_lora": True,
        "lora_r": plan.lora_r,
        "lora_alpha": plan.lora_alpha,
        "lora_dropout": plan.lora_dropout,
        "seed": plan.seed,
        "checkpoint_every": 10_000,
    }
    if quantization:
        values["quantization"] = quantization
    return DPORecipe(**values)


def platform_train(
    model_dir: Path, snapshot: Path, out: Path, plan: Plan, *, quantization: str | None = None
) -> Trained:
    from training.trainers.dpo import train

    recipe = platform_recipe(plan, quantization)
    last: dict[str, float] = {}

    def on_log(step: int, total: int, logs: dict[str, float]) -> None:
        if "train_runtime" in logs:  # the Trainer's summary line at the end
            last.update(logs)

    _clean(out)
    began = time.perf_counter()
    metrics = train(
        base_model=str(model_dir),
        snapshot_dir=snapshot,
        output_dir=out,
        recipe=recipe,
        base_adapter=None,
        on_log=on_log,
        should_stop=lambda: False,
    )
    seconds = time.perf_counter() - began
    _free()
    return Trained(
        seconds,
        plan.samples,
        last.get("train_samples_per_second"),
        metrics.get("train_loss"),
        out / "model",
    )


def bare_train(
    model_dir: Path,
    snapshot: Path,
    out: Path,
    plan: Plan,
    *,
    quantization: str | None = None,
    steps: int | None = None,
) -> Trained:
    """A user's TRL script for the plan (``steps`` overrides it, for a warm-up)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    gpu = torch.cuda.is_available()
    _clean(out)
    began = time.perf_counter()
    set_seed(plan.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    load: dict[str, Any] = {"dtype": torch.bfloat16 if gpu else torch.float32}
    if quantization:
        from transformers import BitsAndBytesConfig

        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, **load)
    if quantization:  # PEFT's QLoRA recipe: fp32 norms and embeddings, checkpointing on
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    data = load_dataset("json", data_files={"train": str(snapshot / "train.jsonl")})["train"]
    config = DPOConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=steps or plan.steps,
        per_device_train_batch_size=plan.batch,
        learning_rate=plan.learning_rate,
        max_length=plan.max_length,
        beta=plan.beta,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, plan.sft_weight],
        seed=plan.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=10_000,
        save_total_limit=1,
        report_to=[],
        disable_tqdm=True,
        use_cpu=not gpu,
        bf16=gpu,
        gradient_checkpointing=gpu,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=data.remove_columns("margin"),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            task_type="CAUSAL_LM",
            r=plan.lora_r,
            lora_alpha=plan.lora_alpha,
            lora_dropout=plan.lora_dropout,
        ),
    )
    trainer.remove_callback(PrinterCallback)  # the platform prints no log lines either
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    seconds = time.perf_counter() - began
    _free()
    return Trained(
        seconds,
        (steps or plan.steps) * plan.batch,
        result.metrics.get("train_samples_per_second"),
        result.training_loss,
        out / "model",
    )


def compare(
    outcome: Any,
    *,
    label: str,
    model_dir: Path,
    snapshot: Path,
    work: Path,
    plan: Plan,
    quantization: str | None,
    repeats: int,
) -> dict[str, Trained]:
    """Warm up (kernels, bitsandbytes), then the bare script and the platform's trainer,
    alternating who goes first. Each run is a part of its own: one side failing, or the
    platform being unable to train this kind, still leaves the other side's adapter."""
    outcome.part(
        f"{label}: warm-up, 2 bare steps",
        lambda: bare_train(
            model_dir, snapshot, work / f"{label}-warmup", plan, quantization=quantization, steps=2
        ),
    )
    runs: dict[str, list[Trained]] = {"bare": [], "platform": []}
    for repeat in range(repeats):
        for side in ["bare", "platform"] if repeat % 2 == 0 else ["platform", "bare"]:
            run = bare_train if side == "bare" else platform_train
            trained = outcome.part(
                f"{label}: {side}",
                lambda run=run, side=side: run(
                    model_dir, snapshot, work / f"{label}-{side}", plan, quantization=quantization
                ),
            )
            if trained is None:
                continue
            runs[side].append(trained)
            outcome.say(
                f"{label} {side:8}: {trained.samples} pairs in {trained.seconds:.1f} s "
                f"({trained.samples / trained.seconds:.1f} samples/s end to end; loop "
                f"{_fmt(trained.loop_samples_per_s)} samples/s; train loss "
                f"{_fmt(trained.train_loss)})"
            )
    _report(outcome, label, runs)
    return {side: min(r, key=lambda t: t.seconds) for side, r in runs.items() if r}


def _report(outcome: Any, label: str, runs: dict[str, list[Trained]]) -> None:
    import statistics

    summary: dict[str, Any] = {}
    for side, trained in runs.items():
        if trained:
            seconds = statistics.median(t.seconds for t in trained)
            loops = [t.loop_samples_per_s for t in trained if t.loop_samples_per_s]
            summary[side] = {
                "seconds": [round(t.seconds, 2) for t in trained],
                "samples_per_s": trained[0].samples / seconds,
                "loop_samples_per_s": statistics.median(loops) if loops else None,
                "train_loss": trained[-1].train_loss,
            }
    outcome.measure(f"train {label}", summary)
    if "bare" in summary and "platform" in summary:
        ratio = summary["bare"]["samples_per_s"] / summary["platform"]["samples_per_s"]
        loop = None
        if summary["bare"]["loop_samples_per_s"] and summary["platform"]["loop_samples_per_s"]:
            loop = summary["bare"]["loop_samples_per_s"] / summary["platform"]["loop_samples_per_s"]
        outcome.target(
            f"train {label}: platform time <= 1.10x bare TRL",
            ratio <= 1.10,
            f"{ratio:.3f}x (platform {summary['platform']['samples_per_s']:.1f} vs bare "
            f"{summary['bare']['samples_per_s']:.1f} samples/s end to end; training loop "
            f"alone {_fmt(loop)}x)",
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _clean(out: Path) -> None:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)


def _free() -> None:
    """Return the trainer's GPU memory, so the next run (and the vLLM engines) start clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
