"""Whose completions are these? Their log-probabilities under the base and under each adapter.

Completions sampled at temperature 1 (top_p 1) from a model S have, on average, the highest
log-likelihood under S itself: E_{x~S}[log S(x) - log M(x)] = KL(S || M) >= 0 for every other
model M (Gibbs' inequality). So when the serving side really served adapter S, the mean
log-probability of its completions is highest under S; when it served the base instead, or kept
serving the previous adapter (vLLM caches adapters by LoRA id, so a reused id serves the old
one), the matrix shows it. The scoring is transformers + PEFT, independent of the engine that
served. Completions come back as text, so they are re-tokenized after the prompt (the chat
template's generation prompt); the end-of-sequence token is scored where a completion stopped
on it, since sampling it is part of what the model chose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.gpu.serving_common import Served


def _encode(tokenizer: Any, row: Served) -> tuple[list[int], int] | None:
    prompt = tokenizer.apply_chat_template(row.messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer(row.text, add_special_tokens=False)["input_ids"]
    if row.stopped:
        answer = [*answer, tokenizer.eos_token_id]
    if not answer:
        return None
    return [*prompt_ids, *answer], len(prompt_ids)


def _scores(model: Any, encoded: list[tuple[list[int], int]], pad: int, batch: int) -> list[float]:
    """The summed log-probability of each completion's tokens."""
    import torch

    device = next(model.parameters()).device
    sums: list[float] = []
    for start in range(0, len(encoded), batch):
        chunk = encoded[start : start + batch]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for r, (row, answer_start) in enumerate(chunk):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
            scored[r, answer_start : len(row)] = True
        ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        sums.extend((logp * scored[:, 1:]).sum(dim=1).tolist())
    return sums


def logprob_matrix(
    model_dir: Path, adapters: dict[str, Path], sets: dict[str, list[Served]], *, batch: int = 32
) -> dict[str, dict[str, dict[str, float]]]:
    """{served as: {scored by: {"per_completion": mean summed log p, "per_token": …}}}."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16 if gpu else torch.float32, use_safetensors=True
    ).to("cuda" if gpu else "cpu")
    names = list(adapters)
    model = PeftModel.from_pretrained(base, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.eval()
    encoded = {
        served: [e for e in (_encode(tokenizer, row) for row in rows) if e is not None]
        for served, rows in sets.items()
    }
    matrix: dict[str, dict[str, dict[str, float]]] = {served: {} for served in sets}
    for scorer in ["base", *names]:
        for served, rows in encoded.items():
            if scorer == "base":
                with model.disable_adapter():
                    sums = _scores(model, rows, tokenizer.pad_token_id, batch)
            else:
                model.set_adapter(scorer)
                sums = _scores(model, rows, tokenizer.pad_token_id, batch)
            tokens = sum(len(ids) - start for ids, start in rows)
            matrix[served][scorer] = {
                "per_completion": sum(sums) / max(1, len(sums)),
                "per_token": sum(sums) / max(1, tokens),
                "completions": len(sums),
                "sums": sums,
            }
    del model, base
    if gpu:
        torch.cuda.empty_cache()
    return matrix


def matrix_check(outcome: Any, shape: str, matrix: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Print the matrix; one check per served set: its own model scores it highest. The margin
    is paired (each completion under both models), and its z (margin over its standard error)
    says how far from noise it is."""
    import statistics

    scorers = list(next(iter(matrix.values())))
    print(
        f"{shape}: mean log p per completion [per token]; rows: served as, columns: scored by",
        flush=True,
    )
    print(f"{'served as':>12} " + " ".join(f"{s:>20}" for s in scorers), flush=True)
    for served, row in matrix.items():
        cells = " ".join(
            f"{row[s]['per_completion']:>11.1f} [{row[s]['per_token']:>6.2f}]" for s in scorers
        )
        print(f"{served:>12} {cells}", flush=True)
    outcome.measure(
        f"log-probabilities {shape}",
        {
            served: {s: {k: v for k, v in cell.items() if k != "sums"} for s, cell in row.items()}
            for served, row in matrix.items()
        },
    )
    for served, row in matrix.items():
        rival = max((s for s in row if s != served), key=lambda s: row[s]["per_completion"])
        gaps = [a - b for a, b in zip(row[served]["sums"], row[rival]["sums"], strict=True)]
        margin = statistics.fmean(gaps)
        spread = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else 0.0
        z = margin / spread if spread else float("inf")
        outcome.check(
            f"{shape}: completions served as {served} come from {served}",
            margin > 0,
            f"mean log p {row[served]['per_completion']:.1f} under {served} vs "
            f"{row[rival]['per_completion']:.1f} under {rival} (paired margin {margin:+.1f} "
            f"per completion, z {z:.1f}, {len(gaps)} completions)",
        )
