"""KTO: TRL's KTOTrainer on unpaired desirable / undesirable answers (Ethayarajh et al., 2024).

KTO needs no pairs: each row is one answer labelled good or bad, so it also learns from tasks
whose ranking has a clear best or worst but no other order. Read top to bottom: load the snapshot
(``prompt``, ``completion``, ``label``) → build TRL's KTOConfig from the recipe → LoRA on the base
policy (the frozen base is the reference model) → train → held-out reward margins on the eval
split → save the adapter, tokenizer and ``meta.json``.
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
class KTORecipe(RecipeBase):
    """Hyperparameters of a KTO run; defaults follow TRL's KTOConfig and the KTO paper."""

    beta: float = 0.1
    """Strength of the pull towards the reference model (KTO paper and TRL: 0.1)."""
    desirable_weight: float = 1.0
    """Weight of the loss on desirable answers; raise it when they are fewer (the paper keeps
    desirable_weight x desirable count / undesirable_weight x undesirable count in [1, 4/3])."""
    undesirable_weight: float = 1.0
    """Weight of the loss on undesirable answers."""
    learning_rate: float = 1e-6
    """AdamW learning rate (TRL KTOConfig: 1e-6; LoRA usually wants more, e.g. 5e-5)."""
    num_train_epochs: float = 1.0
    """Passes over the train split."""
    per_device_train_batch_size: int = 8
    """Answers per step; above 1, since KTO estimates its KL term from mismatched pairs in the
    batch (TRL: 8)."""
    max_length: int = 1024
    """Longest prompt plus answer, in tokens (TRL: 1024)."""


def train(
    *,
    base_model: str,
    snapshot_dir: Path,
    output_dir: Path,
    recipe: KTORecipe,
    base_adapter: str | None = None,
    on_log: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    from transformers import AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    data = snapshot_splits(snapshot_dir)

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_causal_lm(base_model, recipe, base_adapter)  # base + its adapter, folded in

    config = KTOConfig(
        **trainer_arguments(recipe, output_dir, has_eval="eval" in data),
        max_length=recipe.max_length,
        beta=recipe.beta,
        desirable_weight=recipe.desirable_weight,
        undesirable_weight=recipe.undesirable_weight,
    )
    trainer = KTOTrainer(
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
        held_out = held_out_metrics(trainer)  # eval_loss, eval_kl, eval_rewards/margins, …
        metrics.update(held_out)
        # The short name older runs use.
        metrics["eval_reward_margin"] = held_out.get("eval_rewards/margins")
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    save_merged_policy(
        trainer, tokenizer, output_dir, base_model=base_model, base_adapter=base_adapter,
        recipe=recipe,
    )  # fmt: skip
    (output_dir / "meta.json").write_text(
        json.dumps({"kind": "kto", "recipe": asdict(recipe), "metrics": metrics}, indent=2)
    )
    return metrics
