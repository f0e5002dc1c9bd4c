"""SFT: TRL's SFTTrainer on demonstrations (and, optionally, top-ranked completions).

Read top to bottom: load the snapshot (conversational prompt-completion rows) → build TRL's
SFTConfig from the recipe (the loss is on the completion only) → LoRA on the base policy (or all
weights) → train → held-out loss and token accuracy on the eval split → save the model, tokenizer
and ``meta.json``.
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
class SFTRecipe(RecipeBase):
    """Hyperparameters of an SFT run; defaults follow TRL's SFTConfig."""

    learning_rate: float = 2e-5
    """AdamW learning rate (TRL SFTConfig: 2e-5; LoRA usually wants more, e.g. 2e-4)."""
    num_train_epochs: float = 3.0
    """Passes over the train split (TRL: 3)."""
    per_device_train_batch_size: int = 8
    """Examples per step (TRL: 8)."""
    max_length: int = 1024
    """Longest prompt plus completion, in tokens; longer ones are truncated (TRL: 1024)."""


def train(
    *,
    base_model: str,
    snapshot_dir: Path,
    output_dir: Path,
    recipe: SFTRecipe,
    base_adapter: str | None = None,
    on_log: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = snapshot_splits(snapshot_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_causal_lm(base_model, recipe, base_adapter)  # base + its adapter, folded in

    config = SFTConfig(
        **trainer_arguments(recipe, output_dir, has_eval="eval" in data),
        max_length=recipe.max_length,
        completion_only_loss=True,
    )
    trainer = SFTTrainer(
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
        held_out = held_out_metrics(trainer)  # eval_loss, eval_mean_token_accuracy, …
        metrics.update(held_out)
        # The short name older runs use.
        metrics["eval_token_accuracy"] = held_out.get("eval_mean_token_accuracy")
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    save_merged_policy(
        trainer, tokenizer, output_dir, base_model=base_model, base_adapter=base_adapter,
        recipe=recipe,
    )  # fmt: skip
    (output_dir / "meta.json").write_text(
        json.dumps({"kind": "sft", "recipe": asdict(recipe), "metrics": metrics}, indent=2)
    )
    return metrics
