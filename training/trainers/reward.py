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

from .common import (
    RecipeBase,
    held_out_metrics,
    load_reward_base,
    lora_config,
    progress_callback,
    snapshot_splits,
    tracker_callbacks,
    train_resumably,
    trainer_arguments,
)


@dataclass(frozen=True)
class RewardRecipe(RecipeBase):
    """Hyperparameters of a reward-model run; defaults follow TRL's RewardConfig."""

    learning_rate: float = 1e-4
    """AdamW learning rate (TRL RewardConfig: 1e-4)."""
    num_train_epochs: float = 1.0
    """Passes over the train split."""
    per_device_train_batch_size: int = 8
    """Pairs per step (TRL: 8)."""
    max_length: int = 1024
    """Longest prompt plus answer, in tokens; longer pairs are dropped (TRL: 1024)."""
    axis: str | None = None
    """Train on pairs from one rubric axis's scores (helpful, honest, harmless) instead of the
    rankings: a per-axis reward model, as Llama 2 trains helpfulness and safety apart."""
    use_margins: bool = True
    """Subtract each pair's margin inside the loss, as Llama 2 does (needs the margin column)."""
    center_rewards_coefficient: float | None = None
    """Pull rewards towards zero mean (Eisenstein et al., 2023); None disables it (TRL default)."""


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
    from transformers import AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    data = snapshot_splits(snapshot_dir, drop=() if recipe.use_margins else ("margin",))

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The reward model starts from the base weights; a policy adapter (base_adapter) is not
    # folded in, since a reward model need not share the policy's latest tune.
    set_seed(recipe.seed)  # the scalar head is initialised at random: seed it
    model = load_reward_base(base_model, recipe, tokenizer.pad_token_id)

    config = RewardConfig(
        **trainer_arguments(recipe, output_dir, has_eval="eval" in data),
        max_length=recipe.max_length,
        center_rewards_coefficient=recipe.center_rewards_coefficient,
    )
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=data["train"],
        eval_dataset=data.get("eval"),
        processing_class=tokenizer,
        peft_config=lora_config(recipe, "SEQ_CLS"),
        callbacks=[progress_callback(on_log, should_stop), *tracker_callbacks(recipe, output_dir)],
    )
    metrics = train_resumably(trainer)
    if "eval" in data:
        metrics.update(held_out_metrics(trainer))  # eval_loss, eval_accuracy, eval_margin, …
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    (output_dir / "meta.json").write_text(
        json.dumps(
            {"kind": "reward", "axis": recipe.axis, "recipe": asdict(recipe), "metrics": metrics},
            indent=2,
        )
    )
    return metrics
