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

from .common import last_complete_checkpoint, progress_callback, quiet, snapshot_splits


@dataclass(frozen=True)
class DPORecipe:
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
    max_steps: int = -1
    """Stop after this many steps if positive (overrides epochs)."""
    per_device_train_batch_size: int = 8
    """Pairs per step (TRL: 8)."""
    max_length: int = 1024
    """Longest prompt plus answer, in tokens (TRL: 1024)."""
    use_lora: bool = True
    """Train LoRA adapters; the frozen base then serves as the reference model."""
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
    recipe: DPORecipe,
    base_adapter: str | None = None,
    on_log: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    data = snapshot_splits(snapshot_dir, drop=("margin",))

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model)
    if base_adapter:
        # The policy being improved is the base plus its adapter: fold it in, then train anew.
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, base_adapter).merge_and_unload()

    gpu = torch.cuda.is_available()
    config = DPOConfig(
        output_dir=str(output_dir / "checkpoints"),
        beta=recipe.beta,
        loss_type=[recipe.loss_type, "sft"] if recipe.sft_weight else [recipe.loss_type],
        loss_weights=[1.0, recipe.sft_weight] if recipe.sft_weight else None,
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_train_batch_size,
        max_length=recipe.max_length,
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
            task_type="CAUSAL_LM",
            r=recipe.lora_r,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=recipe.lora_dropout,
        )

    trainer = DPOTrainer(
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
        metrics["eval_loss"] = held_out.get("eval_loss")
        metrics["eval_reward_accuracy"] = held_out.get("eval_rewards/accuracies")
        metrics["eval_reward_margin"] = held_out.get("eval_rewards/margins")
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    if base_adapter and recipe.use_lora:
        # This adapter was trained on base + the previous adapter folded in, so it only serves
        # on top of both: save the full merged weights as the new policy. (Without LoRA,
        # ``model`` already holds full weights.)
        merged = trainer.model
        if hasattr(merged, "merge_and_unload"):
            merged = merged.merge_and_unload()
        merged.save_pretrained(str(output_dir / "merged"), safe_serialization=True)
        tokenizer.save_pretrained(str(output_dir / "merged"))
    (output_dir / "meta.json").write_text(
        json.dumps({"kind": "dpo", "recipe": asdict(recipe), "metrics": metrics}, indent=2)
    )
    return metrics
