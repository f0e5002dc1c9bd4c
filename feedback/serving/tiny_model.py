"""Build the tiny offline policy: a tokenizer and a small Llama, trained on CPU in about a minute.

Read top to bottom: make the synthetic corpus → train a byte-level BPE tokenizer on it (the
``tokenizers`` library) → pre-train a 2-layer Llama on plain question-and-answer text → fine-tune
it on chat turns, with the loss on the assistant's tokens only → save weights (safetensors),
tokenizer, chat template and ``meta.json`` to a temporary folder, renamed into place when done.

The same seed gives the same weights. Nothing is downloaded: the point is that tests and the demo
run a real transformers model with no network. Real deployments name a hub id or a local path.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from feedback.serving import synthetic

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# A minimal chat format the tokenizer carries, so apply_chat_template and `transformers serve`
# work with this model exactly as with a hub model.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyRecipe:
    """How the tiny model is made. Small on purpose: it must train on two CPU cores in a minute."""

    seed: int = 0
    vocab_size: int = 512
    hidden_size: int = 96
    intermediate_size: int = 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    context: int = 96
    corpus_size: int = 6000
    pretrain_steps: int = 300
    sft_steps: int = 700
    batch_size: int = 32
    learning_rate: float = 3e-3


def _texts(recipe: TinyRecipe) -> tuple[list[str], list[tuple[str, str]]]:
    chats = list(synthetic.chat_examples(recipe.corpus_size, seed=recipe.seed))
    plain = [f"{question} {answer}" for question, answer in chats]
    return plain, chats


def corpus_sha256(recipe: TinyRecipe) -> str:
    """What the corpus of this recipe hashes to; it changes when the synthetic task does."""
    plain, _ = _texts(recipe)
    return hashlib.sha256("\n".join(plain).encode()).hexdigest()


def tiny_model_current(output: Path, recipe: TinyRecipe) -> bool:
    """Whether ``output`` holds a tiny model built from this recipe and today's corpus."""
    meta = output / "meta.json"
    if not meta.exists():
        return False
    built = json.loads(meta.read_text())
    return built.get("recipe") == asdict(recipe) and built.get("corpus_sha256") == corpus_sha256(
        recipe
    )


def build_tokenizer(texts: list[str], recipe: TinyRecipe) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=recipe.context,
    )


def _batches(
    encoded: list[tuple[list[int], int]], recipe: TinyRecipe, pad_id: int, generator: Any
) -> Callable[[], tuple[Any, Any]]:
    """A sampler of (input_ids, labels) batches; labels are -100 before each example's start."""
    import torch

    def sample() -> tuple[Any, Any]:
        index = torch.randint(len(encoded), (recipe.batch_size,), generator=generator).tolist()
        rows = [encoded[i] for i in index]
        width = min(recipe.context, max(len(ids) for ids, _ in rows))
        inputs = torch.full((len(rows), width), pad_id)
        labels = torch.full((len(rows), width), -100)
        for r, (ids, start) in enumerate(rows):
            ids = ids[:width]
            inputs[r, : len(ids)] = torch.tensor(ids)
            labels[r, start : len(ids)] = torch.tensor(ids[start:])
        return inputs, labels

    return sample


def _train(
    model: Any, sample: Callable[[], tuple[Any, Any]], steps: int, lr: float, bar: Any, pad_id: int
) -> float:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.1
    )
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        inputs, labels = sample()
        loss = model(input_ids=inputs, attention_mask=inputs != pad_id, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
    return loss_value


def build_tiny_model(
    output: Path, recipe: TinyRecipe | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Train the tiny model and write it to ``output`` (replaced only when complete)."""
    import torch
    from tqdm import tqdm

    recipe = recipe or TinyRecipe()
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(recipe.seed)

    plain, chats = _texts(recipe)
    tokenizer = build_tokenizer(plain, recipe)
    pad_id = tokenizer.pad_token_id
    pretrain, sft = _examples(tokenizer, plain, chats)
    model = _model_new(tokenizer, recipe)
    total = recipe.pretrain_steps + recipe.sft_steps
    with tqdm(total=total, desc="tiny model", unit="step", disable=not progress) as bar:
        bar.set_description("pre-training")
        pretrain_loss = _train(
            model, _batches(pretrain, recipe, pad_id, generator), recipe.pretrain_steps,
            recipe.learning_rate, bar, pad_id,
        )  # fmt: skip
        bar.set_description("chat fine-tuning")
        sft_loss = _train(
            model, _batches(sft, recipe, pad_id, generator), recipe.sft_steps,
            recipe.learning_rate, bar, pad_id,
        )  # fmt: skip
    losses = {"pretrain_loss": round(pretrain_loss, 4), "sft_loss": round(sft_loss, 4)}
    return _save(output, model, tokenizer, recipe, losses=losses, started=started)


def _examples(
    tokenizer: Any, plain: list[str], chats: list[tuple[str, str]]
) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]]]:
    """Token ids with how many leading tokens carry no loss: whole texts for pre-training; for
    chat fine-tuning, the prompt in the chat template (no loss) and the answer."""
    pretrain = [(tokenizer(text)["input_ids"] + [tokenizer.eos_token_id], 0) for text in plain]
    sft = []
    for question, answer in chats:
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        sft.append((list(prompt_ids) + answer_ids, len(prompt_ids)))
    return pretrain, sft


def _model_new(tokenizer: Any, recipe: TinyRecipe) -> Any:
    """A freshly initialised Llama of the recipe's size (from the torch seed already set)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        max_position_embeddings=recipe.context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _save(
    output: Path,
    model: Any,
    tokenizer: Any,
    recipe: TinyRecipe,
    *,
    losses: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """Write the model, its tokenizer and meta.json to a staging folder, then rename it into
    place, so ``output`` is never half-written."""
    import torch
    import transformers
    from transformers import GenerationConfig

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        max_new_tokens=40,
    )
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    meta = {
        "kind": "tiny",
        "recipe": asdict(recipe),
        "corpus_sha256": corpus_sha256(recipe),
        "parameters": sum(p.numel() for p in model.parameters()),
        **losses,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    return meta
