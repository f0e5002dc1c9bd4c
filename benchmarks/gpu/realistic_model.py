"""A realistic-size model and its data, made offline: the lent GPU machine has no network.

The model is a randomly initialised Qwen2 with Qwen2.5-0.5B's body (hidden 896, 24 layers, 14
heads, 2 KV heads, MLP 4864, tied embeddings) and the project's tiny tokenizer (so its vocabulary,
and its embedding, are small: about 0.36B parameters instead of 0.49B). Random weights write
garbage, which costs vLLM and the trainers exactly what sensible text would: throughput and
training speed depend on the shapes, not on the values.

The preference data comes from the synthetic task in two styles, so that the two candidates the
script trains learn different things and their completions can be told apart by log-probability:
``polite`` (a right, polite answer over a rude or wrong one) and ``terse`` (the bare answer over a
polite sentence).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    init_std: float = 0.02
    """Qwen2's initializer range. A LoRA adapter can raise a token's logit by at most about
    |hidden state| x |embedding| = sqrt(hidden) x init_std x sqrt(hidden) (the final norm fixes
    the first factor): 18 nats at hidden 896, but 1.3 at hidden 64, too little for the smoke
    test's candidates to differ clearly; so the smoke model starts from wider weights."""

    @classmethod
    def parse(cls, text: str) -> Shape:
        """ "hidden,intermediate,layers,heads,kv_heads[,init_std]" (``--shape``)."""
        parts = text.split(",")
        return cls(*(int(p) for p in parts[:5]), *(float(p) for p in parts[5:6]))


QWEN2_0_5B = Shape(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2)
SMOKE = Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, init_std=0.2)


def tokenizer_build() -> Any:
    """The project's tiny tokenizer and chat template (trained in a second on the synthetic
    corpus), with a context long enough for 128-token completions."""
    from feedback.serving import synthetic
    from feedback.serving.tiny_model import TinyRecipe, build_tokenizer

    recipe = TinyRecipe(context=2048)
    texts = [f"{q} {a}" for q, a in synthetic.chat_examples(recipe.corpus_size, seed=recipe.seed)]
    return build_tokenizer(texts, recipe)


def model_build(folder: Path, shape: Shape, *, bf16: bool) -> dict[str, Any]:
    """Write the random model, its tokenizer and a generation config with token ids only (so no
    engine picks up sampling defaults from it) to ``folder``; reused when already built with
    this shape. Returns what was built."""
    marker = folder / "built.json"
    wanted = {"shape": asdict(shape), "bf16": bf16}
    if marker.exists() and json.loads(marker.read_text()).get("wanted") == wanted:
        return json.loads(marker.read_text())
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    began = time.perf_counter()
    tokenizer = tokenizer_build()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=shape.init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialising 0.36B parameters on the GPU takes a second
        model = Qwen2ForCausalLM(config)
    model = model.to(torch.bfloat16 if bf16 else torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    built = {
        "wanted": wanted,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": len(tokenizer),
        "seconds": round(time.perf_counter() - began, 1),
    }
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    marker.write_text(json.dumps(built, indent=2))
    return built


def model_copy(source: Path, folder: Path) -> Path:
    """A second full-weight model (hard links to the same files where the disk allows): another
    path, so the serving side must swap engines to serve it."""
    if folder.exists():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in source.iterdir():
        try:
            os.link(item, staging / item.name)
        except OSError:
            shutil.copy2(item, staging / item.name)
    staging.rename(folder)
    return folder


def prompts(n: int, *, seed: int) -> list[Messages]:
    from feedback.serving import synthetic

    return [[{"role": "user", "content": q}] for q in synthetic.prompts(n, seed=seed)]


def preference_rows(n: int, *, style: str, seed: int) -> list[dict[str, Any]]:
    """Preference pairs in the snapshot's columns (TRL's conversational DPO format)."""
    from feedback.serving import synthetic

    rng = random.Random(seed)
    rows = []
    for text in synthetic.prompts(n, seed=seed):
        kind = "capital" if "capital" in text else "arithmetic"
        question = synthetic.Question(text, synthetic.expected_answer(text), kind)
        polite = synthetic.answer_for(question, correct=True, polite=True, rng=rng)
        if style == "polite":
            rude = synthetic.answer_for(question, correct=rng.random() < 0.5, polite=False, rng=rng)
            chosen, rejected = polite, rude
        else:  # terse: the bare answer over a sentence
            chosen, rejected = f"{question.answer}.", polite
        rows.append(
            {
                "prompt": [{"role": "user", "content": text}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "margin": 1.0,
            }
        )
    return rows


def snapshot_write(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """A snapshot folder as the platform writes one (train.jsonl, eval.jsonl); the eval split is
    empty so the platform's trainer and the bare script do the same work."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval.jsonl").write_text("")
    return folder
