"""vLLM's engine in this process: batch generation on a GPU worker, LoRA adapters per request.

An optional extra (``pip install 'feedback-loop[vllm]'`` on a CUDA machine). Engine options come
from settings: ``VLLM_TENSOR_PARALLEL``, ``VLLM_QUANTIZATION``, ``VLLM_GPU_MEMORY_UTILIZATION``,
``VLLM_MAX_MODEL_LEN``, and for adapters ``VLLM_MAX_LORA_RANK`` and ``VLLM_MAX_LORAS``.

**The worker.** vLLM starts its engine core in a child process, and a Celery prefork child is
daemonic (a daemonic process may not have children), so the generation queue runs in a worker
of its own whose tasks run in the main process and thread (vLLM's engine client installs signal
handlers, which Python allows only in the main thread)::

    celery -A feedback worker -Q generation --pool solo
    celery -A feedback worker -Q default,training          # the rest, prefork as usual

The backend refuses to start an engine in a daemonic process, naming that command.

**Adapters.** vLLM caches an adapter by its LoRA int id: two adapters sent under one id serve
the first one's weights. Each adapter therefore has its own, stable id, the id of its
PolicyVersion (a target without a version, in a script, gets one from a hash of the adapter
path, in a range versions do not reach), and its LoRA name is the version's name. An adapter of
a higher rank than ``VLLM_MAX_LORA_RANK`` is refused before the engine sees it.

**One engine at a time.** A version with other weights (or engine options) replaces the engine:
the old one is shut down and its GPU memory freed *before* the new one loads, since both rarely
fit on one GPU. Adapters on the same base share the engine.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from feedback.serving.backends import (
    BackendUnavailable,
    Generated,
    Messages,
    Sampling,
    Target,
    require_safetensors,
)

WORKER_COMMAND = "celery -A feedback worker -Q generation --pool solo"
# LoRA ids of adapters without a PolicyVersion start here, above any version's id in practice.
HASHED_IDS_FROM = 2**30

_LOCK = threading.RLock()
_ENGINE: dict[str, Any] = {}  # "options": what it was built with, "llm": the engine


def lora_int_id(target: Target) -> int:
    """The adapter's LoRA id: its version's id, or a stable hash of its path (never 0)."""
    if target.version_id:
        return int(target.version_id)
    digest = hashlib.sha256((target.adapter or "").encode()).digest()
    return HASHED_IDS_FROM + int.from_bytes(digest[:4], "big") % (2**31 - 1 - HASHED_IDS_FROM)


def adapter_rank(folder: str) -> int | None:
    """The largest LoRA rank in a local PEFT adapter (``r`` and any per-module ``rank_pattern``);
    None where there is no local config to read (an adapter named by hub id)."""
    config = Path(folder) / "adapter_config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    ranks = [data.get("r") or 0, *(data.get("rank_pattern") or {}).values()]
    return max(int(rank) for rank in ranks)


def _lora_request(target: Target) -> Any:
    """vLLM's request for the target's adapter, after checking its rank fits the engine."""
    from vllm.lora.request import LoRARequest

    adapter = require_safetensors(target.adapter or "")
    rank = adapter_rank(adapter)
    if rank is not None and rank > settings.VLLM_MAX_LORA_RANK:
        raise BackendUnavailable(
            f"{target.name or adapter} is a rank-{rank} LoRA adapter; the engine takes ranks up "
            f"to VLLM_MAX_LORA_RANK={settings.VLLM_MAX_LORA_RANK}. Set VLLM_MAX_LORA_RANK to at "
            f"least {rank} (8, 16, 32, 64, 128 or 256) and restart the generation worker."
        )
    lora_id = lora_int_id(target)
    return LoRARequest(target.name or f"adapter-{lora_id}", lora_id, adapter)


def _engine_options(target: Target) -> dict[str, Any]:
    return {
        "model": require_safetensors(target.model),
        "tensor_parallel_size": settings.VLLM_TENSOR_PARALLEL,
        "quantization": settings.VLLM_QUANTIZATION or None,
        "gpu_memory_utilization": settings.VLLM_GPU_MEMORY_UTILIZATION,
        "max_model_len": settings.VLLM_MAX_MODEL_LEN or None,
        # On even for a full-weight version: the next deploy may well be an adapter on it.
        "enable_lora": True,
        "max_lora_rank": settings.VLLM_MAX_LORA_RANK,
        "max_loras": settings.VLLM_MAX_LORAS,
        "revision": target.options.get("revision"),
    }


def _refuse_daemonic() -> None:
    import multiprocessing

    daemonic = multiprocessing.current_process().daemon
    try:  # Celery's prefork children are billiard processes
        from billiard.process import current_process

        daemonic = daemonic or bool(current_process().daemon)
    except ImportError:  # pragma: no cover - billiard comes with celery
        pass
    if daemonic:
        raise BackendUnavailable(
            "vLLM starts its engine in a child process, which this daemonic worker process "
            f"may not have. Run the generation queue in a solo pool: `{WORKER_COMMAND}`."
        )


def _engine(target: Target) -> Any:
    """The engine for the target's weights, built (after releasing any other) when needed."""
    if target.options.get("format") == "gguf":
        raise BackendUnavailable(
            f"{target.name or target.model} is a serve-only GGUF file: serve it with llama.cpp's "
            "server and GENERATION_BACKEND=openai."
        )
    options = _engine_options(target)
    with _LOCK:
        if _ENGINE.get("options") == options:
            return _ENGINE["llm"]
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendUnavailable(
                "vLLM is not installed. On a CUDA machine: pip install 'feedback-loop[vllm]'; "
                "or use GENERATION_BACKEND=openai against a running `vllm serve`."
            ) from exc
        _refuse_daemonic()
        engine_release()
        _ENGINE["llm"] = LLM(**options)
        _ENGINE["options"] = options
        return _ENGINE["llm"]


def engine_release() -> None:
    """Shut the engine down and give its GPU memory back (a swap, or a worker shutting down).

    Dropping the last reference is not enough: the engine core runs in its own process, and
    the distributed state and CUDA caching allocator hold memory until told otherwise."""
    with _LOCK:
        engine = _ENGINE.pop("llm", None)
        _ENGINE.pop("options", None)
        if engine is None:
            return
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if callable(getattr(core, "shutdown", None)):
            core.shutdown()  # the engine core process: stop it now, not at garbage collection
        del engine, core
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:  # a vLLM without it: the collection below does what it can
            pass
        else:
            cleanup_dist_env_and_memory()  # its process groups, then its cached memory
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VLLMBackend:
    name = "vllm"

    def generate(
        self, target: Target, prompts: list[Messages], *, n: int, sampling: Sampling
    ) -> list[list[Generated]]:
        from vllm import SamplingParams

        lora = _lora_request(target) if target.adapter else None
        engine = _engine(target)
        params = SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
        )
        began = time.perf_counter()
        outputs = engine.chat(prompts, params, lora_request=lora, use_tqdm=False)
        latency = int((time.perf_counter() - began) * 1000) // max(1, len(prompts))
        return [
            [
                Generated(
                    text=sample.text.strip(),
                    finish_reason=sample.finish_reason or "",
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(sample.token_ids),
                    latency_ms=latency,
                )
                for sample in output.outputs
            ]
            for output in outputs
        ]

    def load(self, target: Target) -> None:
        """The engine for the target's weights, and its adapter checked; vLLM reads the adapter
        on its first request (the readiness probe) and keeps it in its cache."""
        if target.adapter:
            _lora_request(target)
        _engine(target)

    def unload(self, target: Target) -> None:
        """Evict the target's adapter from the engine's cache (a rejected candidate)."""
        if not target.adapter:
            return
        with _LOCK:
            remove = getattr(getattr(_ENGINE.get("llm"), "llm_engine", None), "remove_lora", None)
            if remove is not None:
                remove(lora_int_id(target))

    def ready(self, target: Target) -> None:
        out = self.generate(
            target,
            [[{"role": "user", "content": "Hi"}]],
            n=1,
            sampling=Sampling(temperature=0, max_new_tokens=1),
        )
        if not out or not out[0]:
            raise BackendUnavailable(f"vLLM gave no answer with {target.name or target.model}.")
