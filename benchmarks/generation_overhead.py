"""Generation overhead: round generation through the platform against the raw backend on the
same prompts.

Three arms generate K samples for the same synthetic prompts with the same tiny model, batch
size and sampling: **platform**, ``round_generate`` of a freshly opened round (the policy
registry, the batches, storing every completion, checking K distinct answers and drawing again
where they are not, publishing tasks, progress); **backend**, the transformers backend's
``generate`` alone (what the platform calls); and **bare**, a plain ``model.generate`` loop.
Throughput is generated tokens per second, so the platform's redraws count as work, not as
overhead. Arms alternate for several repetitions; each platform repetition serves a new policy
version, so nothing stored is reused. DESIGN target: platform time within 1.05x of the raw
backend's (tokens/s ratio at least 1/1.05). On a GPU the backend would be vLLM; here it is
transformers on the CPU.

It works in a SQLite database of its own (``var/bench/generation``). Run: ``make bench`` or
``python benchmarks/generation_overhead.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "feedback.settings"
os.environ["VAR_DIR"] = str(ROOT / "var" / "bench" / "generation")
os.environ["ARTIFACTS_DIR"] = str(ROOT / "var" / "bench" / "artifacts")
os.environ.pop("DATABASE_URL", None)  # its own SQLite file, whatever the shell points at
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.report import quick, results_write, spread, verdict  # noqa: E402

TARGET_TIME_RATIO = 1.05
ARMS = ("bare model.generate", "backend", "platform round")


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


def platform_round(
    policy_index: int, *, base_model: str, prompt_ids: list[int], k: int, sampling: Any
) -> tuple[int, float]:
    """Open a round for a new policy version on the same model and generate it; its tokens and
    seconds."""
    from django.db.models import Sum

    from annotation.round_generation import round_generate
    from annotation.rounds import round_open_for_policy
    from feedback.models import Completion, PolicyVersion

    PolicyVersion.objects.filter(status=PolicyVersion.Status.ACTIVE).update(
        status=PolicyVersion.Status.RETIRED
    )
    policy = PolicyVersion.objects.create(name=f"tiny-gen-{policy_index}", base_model=base_model,
                                          status=PolicyVersion.Status.ACTIVE)  # fmt: skip
    round_ = round_open_for_policy(k=k, overlap=1, prompt_ids=prompt_ids, sampling=sampling,
                                   backend="transformers", include_used=True,
                                   enqueue=False)  # fmt: skip
    began = time.perf_counter()
    round_ = round_generate(round_id=round_.pk)
    seconds = time.perf_counter() - began
    assert round_.status == "open", round_.generation_error
    tokens = Completion.objects.filter(policy_version=policy).aggregate(n=Sum("completion_tokens"))[
        "n"
    ]
    return tokens, seconds


def main() -> None:
    args = _arguments()
    model_dir, questions, prompt_ids = _prepare(args.prompts)
    rates = _measure(args, model_dir=model_dir, questions=questions, prompt_ids=prompt_ids)
    backend_rate = statistics.median(rates["backend"])
    result: dict[str, Any] = {
        arm: {**spread(values), "ratio_to_backend": statistics.median(values) / backend_rate}
        for arm, values in rates.items()
    }
    overhead = backend_rate / statistics.median(rates["platform round"])
    met = overhead <= TARGET_TIME_RATIO
    _print_table(result, overhead=overhead, met=met)
    results_write(
        "generation_overhead",
        {"prompts": args.prompts, "k": args.k, "max_new_tokens": args.max_new_tokens,
         "repeats": args.repeats, "backend": "transformers (CPU)", "results": result,
         "platform_time_over_backend": overhead, "target_at_most": TARGET_TIME_RATIO,
         "verdicts": {"platform within 1.05x of the backend": met}},
        chart=lambda plt: _chart(plt, result, overhead=overhead),
        command=f"python benchmarks/generation_overhead.py --prompts {args.prompts} "
        f"--repeats {args.repeats}",
    )  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=32 if quick() else 64)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2 if quick() else 3)
    return parser.parse_args()


def _prepare(prompts: int) -> tuple[Path, list[str], list[int]]:
    """A fresh database, migrated, holding ``prompts`` synthetic prompts, and the tiny model built
    where it is missing or stale; the model's folder, the questions and their prompts' ids."""
    import shutil

    shutil.rmtree(ROOT / "var" / "bench" / "generation", ignore_errors=True)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from annotation.imports import prompts_import
    from feedback.models import Prompt
    from feedback.serving import synthetic
    from feedback.serving.tiny_model import TinyRecipe, build_tiny_model, tiny_model_current

    call_command("migrate", verbosity=0)
    model_dir = Path(settings.ARTIFACTS_DIR) / settings.TINY_MODEL_DIR
    if not tiny_model_current(model_dir, TinyRecipe()):
        build_tiny_model(model_dir, TinyRecipe())
    questions = synthetic.prompts(prompts, seed=11)
    prompts_import(lines=[json.dumps({"prompt": q, "tags": ["bench"]}) for q in questions])
    prompt_ids = list(Prompt.objects.order_by("id").values_list("pk", flat=True))
    return model_dir, questions, prompt_ids


def _measure(
    args: argparse.Namespace, *, model_dir: Path, questions: list[str], prompt_ids: list[int]
) -> dict[str, list[float]]:
    """Tokens per second of each arm, per repetition, the arms alternating."""
    from django.conf import settings

    from feedback.serving.backends import Sampling, Target
    from feedback.serving.backends.transformers_backend import TransformersBackend, _load

    target = Target(model=str(model_dir))
    tokenizer, model = _load(target)
    messages = [[{"role": "user", "content": q}] for q in questions]
    backend = TransformersBackend(batch_size=args.batch_size)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=1)

    # Warm-up, untimed: each side loads the model once (the platform's backend caches it).
    backend.generate(target, messages[:2], n=args.k, sampling=sampling)
    platform_round(-1, base_model=settings.TINY_MODEL_DIR, prompt_ids=prompt_ids[:2], k=args.k,
                   sampling=sampling)  # fmt: skip
    rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        began = time.perf_counter()
        tokens = bare_loop(tokenizer, model, messages, n=args.k,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           seed=1)  # fmt: skip
        rates["bare model.generate"].append(tokens / (time.perf_counter() - began))
        began = time.perf_counter()
        out = backend.generate(target, messages, n=args.k, sampling=sampling)
        tokens = sum(s.completion_tokens or 0 for samples in out for s in samples)
        rates["backend"].append(tokens / (time.perf_counter() - began))
        tokens, seconds = platform_round(repeat, base_model=settings.TINY_MODEL_DIR,
                                         prompt_ids=prompt_ids, k=args.k,
                                         sampling=sampling)  # fmt: skip
        rates["platform round"].append(tokens / seconds)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{a} {rates[a][-1]:.0f} tokens/s"
                                                  for a in ARMS), flush=True)  # fmt: skip
    return rates


def _print_table(result: dict[str, Any], *, overhead: float, met: bool) -> None:
    print(f"{'':22} {'tokens/s (median)':>18} {'spread':>16} {'vs backend':>10}")
    for arm, r in result.items():
        span = f"{r['min']:.0f}-{r['max']:.0f}"
        print(f"{arm:22} {r['median']:18.0f} {span:>16} {r['ratio_to_backend']:10.3f}")
    print(f"platform time / backend time: {overhead:.3f} (target <= {TARGET_TIME_RATIO}: "
          f"{verdict(met)})")  # fmt: skip


def _chart(plt: Any, result: dict[str, Any], *, overhead: float) -> Any:
    figure, axes = plt.subplots(figsize=(6, 4))
    medians = [result[arm]["median"] for arm in ARMS]
    errors = [
        [m - result[a]["min"] for m, a in zip(medians, ARMS, strict=True)],
        [result[a]["max"] - m for m, a in zip(medians, ARMS, strict=True)],
    ]
    axes.bar(list(ARMS), medians, yerr=errors, capsize=4)
    axes.set_ylabel("generated tokens per second (median, range)")
    axes.set_title(f"Generation: platform time {overhead:.2f}x the backend's")
    return figure


if __name__ == "__main__":
    main()
