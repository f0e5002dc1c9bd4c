"""Continued pre-training: next-token prediction on a plain-text corpus (domain adaptation).

Read top to bottom: load the snapshot (one document a row) → build TRL's SFTConfig for language
modelling: documents joined with the end-of-text token and cut into ``max_length`` blocks
("wrapped" packing, the concatenate-and-chunk of Hugging Face's ``run_clm`` example), the loss on
every token → LoRA on the base policy (or all weights) → train → held-out loss and perplexity on
the eval documents → save the model, tokenizer and ``meta.json``.

TRL's SFTTrainer is used rather than a bare ``Trainer`` because it already tokenizes, appends the
end-of-text token and packs a ``text`` column; a plain-text dataset makes it a language-modelling
trainer with nothing of chat about it.
"""

from __future__ import annotations

import json
import math
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
class PretrainRecipe(RecipeBase):
    """Hyperparameters of a continued pre-training run; defaults follow Hugging Face's
    ``run_clm`` example (learning rate 5e-5, one epoch) and TRL's SFTConfig."""

    learning_rate: float = 5e-5
    """AdamW learning rate (run_clm: 5e-5; LoRA usually wants more, e.g. 2e-4)."""
    num_train_epochs: float = 1.0
    """Passes over the corpus (run_clm: 1 for continued pre-training of a large corpus)."""
    per_device_train_batch_size: int = 8
    """Blocks per step (TRL: 8)."""
    max_length: int = 1024
    """Block length in tokens: the corpus is concatenated and cut into blocks this long."""


def train(
    *,
    base_model: str,
    snapshot_dir: Path,
    output_dir: Path,
    recipe: PretrainRecipe,
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
        dataset_text_field="text",
        packing=True,
        packing_strategy="wrapped",
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
        metrics.update(held_out_metrics(trainer))
        if metrics["eval_loss"] is not None:
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    save_merged_policy(
        trainer, tokenizer, output_dir, base_model=base_model, base_adapter=base_adapter,
        recipe=recipe,
    )  # fmt: skip
    (output_dir / "meta.json").write_text(
        json.dumps({"kind": "pretrain", "recipe": asdict(recipe), "metrics": metrics}, indent=2)
    )
    return metrics
