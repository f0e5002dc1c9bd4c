"""DPO: TRL's DPOTrainer on preference pairs, training LoRA adapters on the policy by default.

Read top to bottom: load the snapshot → build TRL's DPOConfig from the recipe → LoRA on the base
policy (the frozen base is the reference model, so no second copy is loaded) → train → held-out
reward accuracy on the eval split → save the adapter, tokenizer and ``meta.json``.
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
    load_causal_lm,
    lora_config,
    progress_callback,
    save_merged_policy,
    snapshot_splits,
    tracker_callbacks,
    train_resumably,
    trainer_arguments,
)


@dataclass(frozen=True)
class DPORecipe(RecipeBase):
    """Hyperparameters of a DPO run; defaults follow TRL's DPOConfig and the DPO paper."""

    beta: float = 0.1
    """Strength of the KL penalty towards the reference model (Rafailov et al., 2023: 0.1)."""
    loss_type: str = "sigmoid"
    """TRL loss: sigmoid (DPO), ipo, hinge, robust, … (TRL's list)."""
    sft_weight: float = 0.0
    """Weight of an SFT (negative log-likelihood) term on the chosen answers added to the loss,
    as in RPO (Pang et al., 2024); TRL's ``loss_type=[…, "sft"]``. On the tiny model, 1.0 is what
    keeps round after round of DPO from collapsing."""
    learning_rate: float = 1e-6
    """AdamW learning rate (TRL DPOConfig: 1e-6; LoRA usually wants more, e.g. 5e-5)."""
    num_train_epochs: float = 1.0
    """Passes over the train split."""
    per_device_train_batch_size: int = 8
    """Pairs per step (TRL: 8)."""
    max_length: int = 1024
    """Longest prompt plus answer, in tokens (TRL: 1024)."""


# Over 60 lines with its signature, on purpose: a trainer reads top to bottom in one function.
def train(
    *,
    base_model: str,
    snapshot_dir: Path,
    output_dir: Path,
    recipe: DPORecipe,
    base_adapter: str | None = None,
    on_log: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    data = snapshot_splits(snapshot_dir, drop=("margin",))

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_causal_lm(base_model, recipe, base_adapter)  # base + its adapter, folded in

    config = DPOConfig(
        **trainer_arguments(recipe, output_dir, has_eval="eval" in data),
        max_length=recipe.max_length,
        beta=recipe.beta,
        loss_type=[recipe.loss_type, "sft"] if recipe.sft_weight else [recipe.loss_type],
        loss_weights=[1.0, recipe.sft_weight] if recipe.sft_weight else None,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=data["train"],
        eval_dataset=data.get("eval"),
        processing_class=tokenizer,
        peft_config=lora_config(recipe, "CAUSAL_LM"),
        callbacks=[progress_callback(on_log, should_stop), *tracker_callbacks(recipe, output_dir)],
    )
    metrics = train_resumably(trainer)
    if "eval" in data:
        held_out = held_out_metrics(trainer)  # eval_loss, eval_rewards/chosen, …/margins, …
        metrics.update(held_out)
        # The short names the gate's pages and older runs use.
        metrics["eval_reward_accuracy"] = held_out.get("eval_rewards/accuracies")
        metrics["eval_reward_margin"] = held_out.get("eval_rewards/margins")
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    save_merged_policy(
        trainer, tokenizer, output_dir, base_model=base_model, base_adapter=base_adapter,
        recipe=recipe,
    )  # fmt: skip
    (output_dir / "meta.json").write_text(
        json.dumps({"kind": "dpo", "recipe": asdict(recipe), "metrics": metrics}, indent=2)
    )
    return metrics
