"""The GPU check, in one go: what a lent GPU machine runs (no network there), and what tells
whether the production path (vLLM, LoRA and QLoRA, hot swaps) works on real hardware.

Read top to bottom:

1. preflight: versions, the device, and which parts can run here (a part that cannot is printed
   as skipped, with why, and the rest still runs);
2. build a realistic-size model offline: a random Qwen2 with Qwen2.5-0.5B's body and the tiny
   tokenizer, bf16 safetensors;
3. train two DPO candidates through the platform's trainer, each against a bare TRL script on
   the same data and recipe (target: at most 1.10x the time): LoRA in bf16 on ``polite``
   preferences, QLoRA (recipe ``quantization: "4bit"``) on ``terse`` ones, so that the two
   candidates write differently. Training runs first, so it has the whole device, and each
   vLLM engine is started once;
4. serve with the platform's ``vllm`` backend (in process): a round (prompts x K) against
   ``LLM.chat`` alone on the same engine (target: at most 1.05x the time per token), a
   full-weight swap that must free the old engine, then each candidate hot-swapped in as its own
   LoRA version, then the rollback to the base;
5. serve with ``vllm serve`` through the ``openai`` backend: the same round against bare HTTP,
   each candidate loaded at run time and requested by name, then the rollback;
6. after each serving shape, whose completions were they: the log-probability of each served set
   under the base and under each candidate (transformers + PEFT); each set must be likeliest
   under the model it was served as (see adapter_logprobs.py for why that is the right test).

Results print as they come and go to ``<work dir>/results.json`` and, when ``$OUT`` is set,
``$OUT/gpu_results.json``. Exit status 0 when every part that could run passed.

    python benchmarks/gpu/run_all.py              # on the GPU machine, ~6-8 minutes on an H100
    python benchmarks/gpu/run_all.py --cpu-smoke  # tiny sizes on CPU, vLLM parts skipped
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny sizes on CPU (CUDA hidden); the vLLM parts are skipped",
    )
    parser.add_argument("--work-dir", default=str(ROOT / "var" / "gpu-bench"))
    parser.add_argument("--budget-s", type=float, help="skip parts that would not fit in this")
    parser.add_argument(
        "--shape",
        help="the model: hidden,intermediate,layers,heads,kv_heads"
        "[,init_std] (default: Qwen2.5-0.5B's body; the smoke's with --cpu-smoke)",
    )
    parser.add_argument("--prompts", type=int, help="prompts in the timed round")
    parser.add_argument("--k", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--check-prompts", type=int, help="prompts per hot-swapped version")
    parser.add_argument(
        "--served-prompts",
        type=int,
        help="prompts in vllm serve's timed round (one request per sample)",
    )
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds")
    parser.add_argument("--train-repeats", type=int, default=1)
    parser.add_argument(
        "--gpu-fraction", type=float, default=0.3, help="device memory each vLLM engine may take"
    )
    parser.add_argument(
        "--skip", default="", help="comma list of: qlora, inprocess, fullswap, served"
    )
    return parser.parse_args(argv)


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    """The run's sizes: a real round on a GPU; a few seconds of each thing on CPU. The hot-swap
    sets are shorter than the timed round: 64 tokens tell whose completion it is as well as 128,
    and through the server each sample is a request of its own."""
    from dataclasses import replace

    from benchmarks.gpu import realistic_model
    from benchmarks.gpu.train_compare import Plan

    smoke = args.cpu_smoke
    if smoke:
        plan = Plan(steps=40, batch=4, learning_rate=2e-2, max_length=64)
        shape = realistic_model.SMOKE
    else:
        plan = Plan(steps=80, batch=8, learning_rate=1e-3, max_length=192)
        shape = realistic_model.QWEN2_0_5B
    plan = replace(
        plan,
        steps=args.train_steps or plan.steps,
        learning_rate=args.learning_rate or plan.learning_rate,
    )
    return {
        "shape": realistic_model.Shape.parse(args.shape) if args.shape else shape,
        "plan": plan,
        "budget_s": args.budget_s or (300 if smoke else 480),
        "prompts": args.prompts or (8 if smoke else 256),
        "max_new_tokens": args.max_new_tokens or (24 if smoke else 128),
        "check_prompts": args.check_prompts or (6 if smoke else 32),
        "check_new_tokens": 24 if smoke else 64,
        "served_prompts": args.served_prompts or (3 if smoke else 6),
        "need": (lambda seconds: 0) if smoke else (lambda seconds: seconds),
    }


def environment(work: Path, args: argparse.Namespace) -> None:
    """Settings for this run, set before the platform's settings are first read: its own
    folders (never the demo's), offline libraries, the vLLM settings the backends read."""
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("DEVICE", "cpu")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")
    os.environ.pop("DATABASE_URL", None)
    os.environ["VAR_DIR"] = str(work / "var")
    os.environ["ARTIFACTS_DIR"] = str(work / "artifacts")
    os.environ["MODEL_DIRS"] = str(work)
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_GPU_MEMORY_UTILIZATION": str(args.gpu_fraction),
        "VLLM_MAX_LORA_RANK": "16",
        "VLLM_MAX_LORAS": "2",
        "VLLM_MAX_MODEL_LEN": "1024",
    }.items():
        os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    # A time limit's SIGTERM unwinds like an exception: `vllm serve` is stopped and the results
    # so far are saved on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = arguments(argv)
    work = Path(args.work_dir).resolve()
    environment(work, args)
    from benchmarks.gpu.outcome import Outcome
    from benchmarks.gpu.preflight import preflight

    size = sizes(args)
    paths = [work / "results.json"]
    if os.environ.get("OUT"):
        paths.append(Path(os.environ["OUT"]) / "gpu_results.json")
    outcome = Outcome(
        budget_s=size["budget_s"],
        paths=paths,
        header={
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
            "machine": {
                "host": platform.node(),
                "system": platform.platform(terse=True),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            },
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sizes": {k: v for k, v in size.items() if k != "need"},
        },
        timings_count=not args.cpu_smoke,
    )
    facts = outcome.part("preflight", lambda: preflight(outcome)) or {}
    if not facts.get("platform_ok"):
        outcome.say("the platform does not import here; nothing else can run")
        return outcome.summary()
    from benchmarks.gpu import realistic_model

    model_dir = work / "model"
    built = outcome.part(
        "build the model",
        lambda: realistic_model.model_build(model_dir, size["shape"], bf16=facts["cuda"]),
        needs_s=size["need"](40),
    )
    if built is None:
        return outcome.summary()
    outcome.measure("model", built)
    outcome.say(
        f"model: {built['parameters'] / 1e6:.1f}M parameters, vocabulary "
        f"{built['vocab']}, in {model_dir}"
    )

    from benchmarks.gpu.pipeline import Pipeline

    pipeline = Pipeline(outcome, args=args, size=size, facts=facts, work=work, model=model_dir)
    pipeline.train()
    if not pipeline.adapters:
        outcome.say("no candidate was trained: nothing to hot-swap")
        return outcome.summary()
    pipeline.serve()
    return outcome.summary()


if __name__ == "__main__":  # vLLM's engine process imports this file again: keep this guard
    sys.exit(main())
