"""Online RL: TRL's GRPOTrainer (or RLOOTrainer) against our reward model(s).

Read top to bottom: the prompts of the snapshot (each once) → build TRL's config from the recipe
→ the reward model(s), combined by the recipe's rule, as a reward function (prompt, sampled
answer → score) → the policy samples
``num_generations`` answers a prompt, the group's mean is the baseline (no critic), and PPO's
clipped objective updates it → save the model, tokenizer and ``meta.json``. On a GPU worker with
vLLM installed, ``use_vllm`` lets vLLM generate the samples (TRL's colocate mode).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common import (
    RecipeBase,
    load_causal_lm,
    lora_config,
    progress_callback,
    reward_scorer,
    save_merged_policy,
    snapshot_splits,
    tracker_callbacks,
    train_resumably,
    trainer_arguments,
)

ALGORITHMS = ("grpo", "rloo")
COMBINE_RULES = ("single", "weighted_sum", "llama2_gate")
AXES = ("helpful", "honest", "harmless")


def combined_reward(
    recipe: OnlineRLRecipe,
    scorers: dict[str, Callable[[list[dict[str, str]], str], float]],
    safety_prompts: set[str],
) -> Callable[[list[dict[str, str]], str], float]:
    """The recipe's rule as one function: (prompt, answer) → reward. ``scorers`` is keyed by
    "reward" (single) or by axis; ``safety_prompts`` holds hashes of safety-tagged prompts."""
    from feedback.models import messages_hash

    if recipe.combine == "single":
        return scorers["reward"]
    if recipe.combine == "weighted_sum":
        weights = {axis: getattr(recipe, f"{axis}_weight") for axis in scorers}
        return lambda prompt, answer: sum(
            weights[axis] * score(prompt, answer) for axis, score in scorers.items()
        )

    def llama2_gate(prompt: list[dict[str, str]], answer: str) -> float:
        safety = scorers["harmless"](prompt, answer)
        if messages_hash(prompt) in safety_prompts or safety < recipe.safety_threshold:
            return safety
        return scorers["helpful"](prompt, answer)

    return llama2_gate


@dataclass(frozen=True)
class OnlineRLRecipe(RecipeBase):
    """Hyperparameters of an online RL run; defaults follow TRL's GRPOConfig."""

    algorithm: str = "grpo"
    """grpo (TRL GRPOTrainer) or rloo (TRL RLOOTrainer)."""
    combine: str = "single"
    """How reward models make the reward: single (reward_run); weighted_sum of the per-axis
    models (helpful/honest/harmless_reward_run, each times its weight); or llama2_gate, Llama 2's
    rule: the harmless model's score when the prompt is safety-tagged or that score is under
    safety_threshold, the helpful model's otherwise (Touvron et al., 2023, §3.2.2)."""
    reward_run: int | None = None
    """single: the reward-model run that scores the samples; the newest succeeded one if unset."""
    helpful_reward_run: int | None = None
    """The per-axis reward model for helpfulness (a reward run with axis "helpful")."""
    honest_reward_run: int | None = None
    """The per-axis reward model for honesty."""
    harmless_reward_run: int | None = None
    """The per-axis reward model for harmlessness."""
    helpful_weight: float = 1.0
    """weighted_sum: the helpful model's weight."""
    honest_weight: float = 1.0
    """weighted_sum: the honest model's weight."""
    harmless_weight: float = 1.0
    """weighted_sum: the harmless model's weight."""
    safety_threshold: float = 0.0
    """llama2_gate: a harmless score under this (the model's raw output) means the answer is
    judged on harmlessness alone."""
    learning_rate: float = 1e-6
    """AdamW learning rate (TRL: 1e-6)."""
    num_train_epochs: float = 1.0
    """Passes over the prompts."""
    per_device_train_batch_size: int = 8
    """Samples per step; a multiple of num_generations (TRL: 8)."""
    num_generations: int = 4
    """Answers sampled per prompt; their mean reward is the baseline (TRL GRPO: 8)."""
    max_completion_length: int = 256
    """Longest sampled answer, in tokens (TRL: 512)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    beta: float = 0.0
    """KL penalty towards the starting policy (TRL GRPO: 0.0; RLOO uses 0.05)."""
    use_vllm: bool = False
    """Generate the rollouts with vLLM in the training process (needs a GPU and the extra)."""


# Over 60 lines with its signature, on purpose: a trainer reads top to bottom in one function.
def train(
    *,
    base_model: str,
    snapshot_dir: Path,
    output_dir: Path,
    recipe: OnlineRLRecipe,
    base_adapter: str | None = None,
    reward_models: dict[str, tuple[Path, str]],
    safety_prompts: set[str] | None = None,
    on_log: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    prompts = _prompts_once(snapshot_splits(snapshot_dir, drop=("chosen", "rejected", "margin")))

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_causal_lm(base_model, recipe, base_adapter)  # base + its adapter, folded in

    reward_model_score = _reward_function(recipe, reward_models, safety_prompts or set())
    config_class, trainer_class = (
        (GRPOConfig, GRPOTrainer) if recipe.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    )
    config = config_class(
        **trainer_arguments(recipe, output_dir),
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_length,
        temperature=recipe.temperature,
        beta=recipe.beta,
        use_vllm=recipe.use_vllm,
        vllm_mode="colocate",
    )
    trainer = trainer_class(
        model=model,
        reward_funcs=reward_model_score,
        args=config,
        train_dataset=prompts,
        processing_class=tokenizer,
        peft_config=lora_config(recipe, "CAUSAL_LM"),
        callbacks=[progress_callback(on_log, should_stop), *tracker_callbacks(recipe, output_dir)],
    )
    metrics = train_resumably(trainer)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    if rewards:
        metrics["reward_first_step"], metrics["reward_last_step"] = rewards[0], rewards[-1]
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    save_merged_policy(
        trainer, tokenizer, output_dir, base_model=base_model, base_adapter=base_adapter,
        recipe=recipe,
    )  # fmt: skip
    (output_dir / "meta.json").write_text(
        json.dumps({"kind": "online_rl", "recipe": asdict(recipe), "metrics": metrics}, indent=2)
    )
    return metrics


def _prompts_once(data: Any) -> Any:
    """The train split's prompts, each once: a snapshot has a row per pair."""
    seen: set[str] = set()
    return data["train"].filter(
        lambda row: (key := json.dumps(row["prompt"])) not in seen and not seen.add(key)
    )


def _reward_function(
    recipe: OnlineRLRecipe, reward_models: dict[str, tuple[Path, str]], safety_prompts: set[str]
) -> Callable[..., list[float]]:
    """The reward model(s), loaded and combined by the recipe's rule, as TRL's reward function:
    (prompts, sampled conversations) → one reward each."""
    scorers = {role: reward_scorer(path, base) for role, (path, base) in reward_models.items()}
    score = combined_reward(recipe, scorers, safety_prompts)

    def reward_model_score(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        return [score(p, c[-1]["content"]) for p, c in zip(prompts, completions, strict=True)]

    return reward_model_score
