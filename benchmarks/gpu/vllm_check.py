"""GPU check (run by hand on a CUDA machine; never by the tests).

Serves a model with vLLM and generates the same K samples per prompt four ways, printing tokens
per second for each against vLLM alone:

1. vLLM alone (``LLM.generate`` on the chat prompts): the baseline;
2. the platform's ``vllm`` backend (in-process engine);
3. the platform's ``openai`` backend against a ``vllm serve`` process;
4. the ``vllm`` backend with a LoRA adapter passed per request.

The model defaults to the tiny model (built here if missing), because a lent GPU machine may have
no network; pass ``--model`` with a local path or hub id of a small instruct model where one is
reachable. Usage::

    pip install -e '.[vllm]' && python benchmarks/gpu/vllm_check.py [--model PATH] [--prompts 256]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")


def wait_port(port: int, process: subprocess.Popen, deadline_s: float = 600) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit("vllm serve exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)
    raise SystemExit("vllm serve did not start")


def make_adapter(model_path: str, out: Path) -> str:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    lora = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    import django

    django.setup()
    import torch
    import vllm  # noqa: F401  (missing, it fails here: before the tiny model is built)

    from feedback.serving import synthetic
    from feedback.serving.backends import Sampling

    assert torch.cuda.is_available(), "this check needs a CUDA device"
    model = _model_ready(args.model)
    prompts = [[{"role": "user", "content": q}] for q in synthetic.prompts(args.prompts, seed=1)]
    sampling = Sampling(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    rows = _in_process(model, prompts, k=args.k, max_new_tokens=args.max_new_tokens,
                       sampling=sampling)  # fmt: skip
    few = prompts[: max(16, args.prompts // 8)]  # one HTTP request per sample
    rows.append(_served(model, few, k=args.k, sampling=sampling))

    baseline = rows[0][1]
    print(f"{'path':32} {'tokens/s':>10} {'vs vLLM alone':>14}")
    for name, rate in rows:
        print(f"{name:32} {rate:10.0f} {rate / baseline:14.3f}")


def _model_ready(model: str) -> str:
    """``--model``, or else the tiny model, built where it is missing."""
    if model:
        return model
    from django.conf import settings

    from feedback.serving.tiny_model import build_tiny_model

    tiny = Path(settings.ARTIFACTS_DIR) / settings.TINY_MODEL_DIR
    if not (tiny / "meta.json").exists():
        build_tiny_model(tiny)
    return str(tiny)


def _in_process(
    model: str, prompts: list, *, k: int, max_new_tokens: int, sampling: Any
) -> list[tuple[str, float]]:
    """Tokens per second of vLLM alone (the baseline, first), then of the platform's ``vllm``
    backend on the same engine, plain and with a LoRA adapter; the engine is freed after."""
    import torch
    from vllm import LLM, SamplingParams

    from feedback.serving.backends import Target, get_backend

    engine = LLM(model=model, enable_lora=True, max_lora_rank=8, gpu_memory_utilization=0.4)
    params = SamplingParams(n=k, temperature=1.0, max_tokens=max_new_tokens, seed=0)
    began = time.perf_counter()
    outputs = engine.chat(prompts, params, use_tqdm=False)
    tokens = sum(len(o.token_ids) for out in outputs for o in out.outputs)
    rows = [("vLLM alone", tokens / (time.perf_counter() - began))]

    from feedback.serving.backends import vllm_backend

    vllm_backend._ENGINES[model] = engine  # share the loaded engine with the platform backend
    backend = get_backend("vllm")
    for name, target in (
        ("platform vllm backend", Target(model=model)),
        (
            "vllm backend + LoRA",
            Target(
                model=model, adapter=make_adapter(model, ROOT / "var" / "gpu-lora"), name="lora"
            ),
        ),
    ):
        began = time.perf_counter()
        out = backend.generate(target, prompts, n=k, sampling=sampling)
        tokens = sum(s.completion_tokens or 0 for samples in out for s in samples)
        rows.append((name, tokens / (time.perf_counter() - began)))
    del engine
    vllm_backend._ENGINES.clear()
    torch.cuda.empty_cache()
    return rows


def _served(model: str, prompts: list, *, k: int, sampling: Any) -> tuple[str, float]:
    """Tokens per second of the platform's ``openai`` backend against a ``vllm serve``."""
    from feedback.serving.backends import Target, get_backend

    port = 8077
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
         "--port", str(port), "--gpu-memory-utilization", "0.4"],
    )  # fmt: skip
    try:
        wait_port(port, server)
        openai = get_backend("openai", base_url=f"http://127.0.0.1:{port}", read_timeout=300)
        began = time.perf_counter()
        out = openai.generate(Target(model=model), prompts, n=k, sampling=sampling)
        tokens = sum(s.completion_tokens or 0 for samples in out for s in samples)
        return ("openai backend -> vllm serve", tokens / (time.perf_counter() - began))
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
