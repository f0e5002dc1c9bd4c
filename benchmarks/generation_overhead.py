"""Generation overhead: the platform's transformers backend against a bare ``model.generate`` loop.

Both generate K samples for the same synthetic prompts with the same model, batch size, sampling
and seeds; runs alternate, several repetitions, and the table gives the median tokens per second
of each and their ratio. Run: ``make bench`` (or ``python benchmarks/generation_overhead.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")


def bare_loop(tokenizer, model, prompts, *, n, max_new_tokens, batch_size, seed):
    import torch

    tokens = 0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        texts = [
            tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
            for m in chunk
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed + start)
        with torch.inference_mode():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        for row in new.tolist():
            ids = row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
            tokens += len([t for t in ids if t != tokenizer.pad_token_id])
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "var" / "bench" / "generation_overhead.json"
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from feedback import synthetic
    from feedback.generation import Sampling, Target
    from feedback.generation.transformers_backend import TransformersBackend, _load
    from feedback.tiny_model import build_tiny_model

    model_dir = Path(settings.ARTIFACTS_DIR) / settings.TINY_MODEL_DIR
    if not (model_dir / "meta.json").exists():
        build_tiny_model(model_dir)
    target = Target(model=str(model_dir))
    tokenizer, model = _load(target)
    prompts = [[{"role": "user", "content": q}] for q in synthetic.prompts(args.prompts, seed=11)]
    backend = TransformersBackend(batch_size=args.batch_size)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=1)

    rates: dict[str, list[float]] = {"bare model.generate": [], "platform backend": []}
    for _ in range(args.repeats):
        began = time.perf_counter()
        tokens = bare_loop(
            tokenizer,
            model,
            prompts,
            n=args.k,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=1,
        )
        rates["bare model.generate"].append(tokens / (time.perf_counter() - began))
        began = time.perf_counter()
        out = backend.generate(target, prompts, n=args.k, sampling=sampling)
        tokens = sum(s.completion_tokens or 0 for samples in out for s in samples)
        rates["platform backend"].append(tokens / (time.perf_counter() - began))

    baseline = statistics.median(rates["bare model.generate"])
    print(f"{'':22} {'tokens/s (median)':>18} {'spread':>16} {'ratio':>7}")
    result = {}
    for name, values in rates.items():
        median = statistics.median(values)
        result[name] = {"median_tokens_per_s": median, "runs": values, "ratio": median / baseline}
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"{name:22} {median:18.0f} {spread:>16} {median / baseline:7.3f}")
    overhead = baseline / statistics.median(rates["platform backend"])
    print(f"platform time / bare time: {overhead:.3f} (target ≤ 1.05)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": result}, indent=2
        )
    )


if __name__ == "__main__":
    main()
