"""Reward model: TRL's RewardTrainer on preference pairs (Bradley-Terry loss, margins optional).

Read top to bottom: load the snapshot → build TRL's RewardConfig from the recipe → put a scalar
head on the base model (LoRA adapters by default) → train → held-out pairwise accuracy on the eval
split → save the model and ``meta.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common import last_complete_checkpoint, progress_callback, quiet, snapshot_splits


@dataclass(frozen=True)
class RewardRecipe:
    """Hyperparameters of a reward-model run; defaults follow TRL's RewardConfig."""

    learning_rate: float = 1e-4
    """AdamW learning rate (TRL RewardConfig: 1e-4)."""
    num_train_epochs: float = 1.0
    """Passes over the train split."""
    max_steps: int = -1
    """Stop after this many steps if positive (overrides epochs)."""
    per_device_train_batch_size: int = 8
    """Pairs per step (TRL: 8)."""
    max_length: int = 1024
    """Longest prompt plus answer, in tokens; longer pairs are dropped (TRL: 1024)."""
    use_margins: bool = True
    """Subtract each pair's margin inside the loss, as Llama 2 does (needs the margin column)."""
    center_rewards_coefficient: float | None = None
    """Pull rewards towards zero mean (Eisenstein et al., 2023); None disables it (TRL default)."""
    use_lora: bool = True
    """Train LoRA adapters and the scalar head instead of all weights."""
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


def train(
    *,
    base_model: str,
    snapshot_dir: Path,
    output_dir: Path,
    recipe: RewardRecipe,
    base_adapter: str | None = None,
    on_log: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    data = snapshot_splits(snapshot_dir, drop=() if recipe.use_margins else ("margin",))

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The reward model starts from the base weights; a policy adapter (base_adapter) is not
    # folded in, since a reward model need not share the policy's latest tune.
    set_seed(recipe.seed)  # the scalar head is initialised at random: seed it
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id

    gpu = torch.cuda.is_available()
    config = RewardConfig(
        output_dir=str(output_dir / "checkpoints"),
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_train_batch_size,
        max_length=recipe.max_length,
        center_rewards_coefficient=recipe.center_rewards_coefficient,
        seed=recipe.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=recipe.checkpoint_every,
        save_total_limit=1,
        report_to=[],
        disable_tqdm=True,
        use_cpu=not gpu,
        bf16=gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=gpu,  # TRL turns it on; on CPU it only slows a run down
    )
    peft_config = None
    if recipe.use_lora:
        peft_config = LoraConfig(
            task_type="SEQ_CLS",
            r=recipe.lora_r,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=recipe.lora_dropout,
        )

    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=data["train"],
        eval_dataset=data.get("eval"),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[progress_callback(on_log, should_stop)],
    )
    # A run taken over after its worker died continues from its last complete checkpoint.
    checkpoint = last_complete_checkpoint(Path(config.output_dir))
    quiet(trainer).train(resume_from_checkpoint=checkpoint)
    metrics: dict[str, Any] = {"train_loss": trainer.state.log_history[-1].get("train_loss")}
    if checkpoint:
        metrics["resumed_from_step"] = int(checkpoint.rsplit("-", 1)[-1])
    if "eval" in data:
        held_out = trainer.evaluate()
        metrics["eval_accuracy"] = held_out.get("eval_accuracy")
        metrics["eval_loss"] = held_out.get("eval_loss")
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    (output_dir / "meta.json").write_text(
        json.dumps({"kind": "reward", "recipe": asdict(recipe), "metrics": metrics}, indent=2)
    )
    return metrics
