"""The platform's ``vllm`` backend (vLLM's engine in this process), step by step.

* start: the backend builds its engine on the first target (how much device memory it took is the
  yardstick for the release checks below);
* throughput: a round (prompts x K) through ``backend.generate`` against ``LLM.chat`` alone on
  the same engine, prompts and sampling, alternating; the platform may take at most 1.05x the
  time per token;
* full-weight swap: a second full-weight model (another path); the old engine must be gone
  (device memory no lower than with one engine) once the new one serves;
* hot swaps: each candidate adapter as a LoRA request of its own version, then back to the base
  (the rollback); the completions are kept for the log-probability check;
* release: the backend's ``unload`` where it has one, and the memory it gives back.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu.outcome import Skipped
from benchmarks.gpu.serving_common import (
    Messages,
    Served,
    free_gib,
    served_rows,
    target_make,
    tokens_of,
)

TARGET_RATIO = 1.05


class InProcess:
    def __init__(self, outcome: Any, model: Path) -> None:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise Skipped("vllm is not installed here (pip install 'feedback-loop[vllm]')")
        from feedback.serving.backends import get_backend

        self.outcome = outcome
        self.backend = get_backend("vllm")
        self.model = str(model)
        self.engine_gib = 0.0

    def start(self) -> None:
        free_before = free_gib()
        base = target_make(self.model)
        began = time.perf_counter()
        if load := getattr(self.backend, "load", None):
            load(base)
        self.backend.ready(base)
        seconds = time.perf_counter() - began
        self.engine_gib = free_before - free_gib()
        self.outcome.measure(
            "vllm in-process engine",
            {
                "start_seconds": round(seconds, 1),
                "device_gib": round(self.engine_gib, 1),
            },
        )
        self.outcome.say(f"engine up in {seconds:.0f} s, holding {self.engine_gib:.1f} GiB")

    def throughput(self, prompts: list[Messages], *, k: int, sampling: Any, repeats: int) -> None:
        from vllm import SamplingParams

        engine = engine_find(self.backend)
        if engine is None:
            raise Skipped(
                "no vllm.LLM found on the backend or its module: cannot time LLM.chat "
                "alone on the platform's engine"
            )
        params = SamplingParams(
            n=k,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
        )
        target = target_make(self.model)
        rates: dict[str, list[float]] = {"bare": [], "platform": []}
        for repeat in range(repeats):
            for side in ["bare", "platform"] if repeat % 2 == 0 else ["platform", "bare"]:
                began = time.perf_counter()
                if side == "bare":
                    outputs = engine.chat(prompts, params, use_tqdm=False)
                    tokens = sum(len(o.token_ids) for out in outputs for o in out.outputs)
                else:
                    tokens = tokens_of(
                        self.backend.generate(target, prompts, n=k, sampling=sampling)
                    )
                seconds = time.perf_counter() - began
                rates[side].append(tokens / seconds)
                self.outcome.say(
                    f"round {side:8}: {tokens} tokens in {seconds:.2f} s "
                    f"({tokens / seconds:,.0f} tokens/s)"
                )
        bare, platform = statistics.median(rates["bare"]), statistics.median(rates["platform"])
        self.outcome.measure(
            "vllm in-process round",
            {
                "prompts": len(prompts),
                "k": k,
                "max_new_tokens": sampling.max_new_tokens,
                "bare_tokens_per_s": rates["bare"],
                "platform_tokens_per_s": rates["platform"],
            },
        )
        ratio = bare / platform
        self.outcome.target(
            "vllm backend round: time per token <= 1.05x LLM.chat alone",
            ratio <= TARGET_RATIO,
            f"{ratio:.3f}x (platform {platform:,.0f} vs vLLM alone {bare:,.0f} tokens/s, "
            f"{len(prompts)} prompts x K={k}, {sampling.max_new_tokens} new tokens)",
        )

    def full_swap(self, other: Path) -> None:
        """Serve another full-weight model; the old engine must have been released."""
        before = free_gib()
        target = target_make(str(other))
        if load := getattr(self.backend, "load", None):
            load(target)
        self.backend.ready(target)
        extra = before - free_gib()
        self.model = str(other)
        self.outcome.check(
            "vllm backend full-weight swap frees the old engine",
            extra < 0.5 * self.engine_gib,
            f"device memory used went up by {extra:.1f} GiB after the swap (one engine holds "
            f"{self.engine_gib:.1f} GiB; both kept would add about that much)",
        )

    def hot_swaps(
        self,
        adapters: dict[str, tuple[Path, int]],
        prompts: list[Messages],
        *,
        k: int,
        sampling: Any,
    ) -> dict[str, list[Served]]:
        """Each adapter in turn (a LoRA request of its own version), then the base again."""
        sets: dict[str, list[Served]] = {}
        for name, (path, version) in adapters.items():
            target = target_make(
                self.model, adapter=str(path), name=f"gpu-{name}-v{version}", version_id=version
            )
            if load := getattr(self.backend, "load", None):
                load(target)
            self.backend.ready(target)
            sets[name] = served_rows(
                prompts, self.backend.generate(target, prompts, n=k, sampling=sampling)
            )
            self.outcome.say(
                f"served {len(sets[name])} completions with {name}: {sets[name][0].text[:60]!r}"
            )
        base = target_make(self.model)
        sets["base"] = served_rows(
            prompts, self.backend.generate(base, prompts, n=k, sampling=sampling)
        )
        self.outcome.say(f"rolled back to the base: {sets['base'][0].text[:60]!r}")
        return sets

    def adapters_unload(self, adapters: dict[str, tuple[Path, int]]) -> None:
        """A rejected candidate leaves the engine: ``unload`` evicts each adapter, and vLLM's
        engine must no longer list its LoRA id."""
        if getattr(self.backend, "unload", None) is None:
            raise Skipped("the vllm backend has no unload()")
        engine = engine_find(self.backend)
        listing = getattr(getattr(engine, "llm_engine", None), "list_loras", None)
        for name, (path, version) in adapters.items():
            self.backend.unload(
                target_make(
                    self.model, adapter=str(path), name=f"gpu-{name}-v{version}", version_id=version
                )
            )
        if listing is None:
            raise Skipped("this vLLM's engine has no list_loras() to check the eviction with")
        left = set(listing())
        wanted = {version for _, version in adapters.values()}
        self.outcome.check(
            "vllm backend unload evicts the adapters",
            not (left & wanted),
            f"LoRA ids still loaded: {sorted(left)} (evicted: {sorted(wanted)})",
        )

    def release(self) -> None:
        """The platform's ``engine_release`` (a worker shutting down, or a swap) where it has
        one; otherwise the script drops the engine itself."""
        import torch

        from feedback.serving.backends import vllm_backend

        before = free_gib()
        release = getattr(vllm_backend, "engine_release", None)
        if release is not None:
            release()
        else:
            engines_drop(self.backend)
        gc.collect()
        torch.cuda.empty_cache()
        returned = free_gib() - before
        self.outcome.measure(
            "vllm in-process release",
            {
                "platform_release": release is not None,
                "returned_gib": round(returned, 1),
            },
        )
        if release is not None:
            self.outcome.check(
                "vllm backend engine_release gives the engine's memory back",
                returned > 0.5 * self.engine_gib,
                f"{returned:.1f} GiB returned of {self.engine_gib:.1f} GiB",
            )
        else:
            self.outcome.say(
                f"the backend has no engine_release(); the script dropped its "
                f"engine ({returned:.1f} GiB returned)"
            )


def _containers(backend: Any) -> list[Any]:
    """Where the backend may keep its engines: the instance, and its module's globals."""
    from feedback.serving.backends import vllm_backend

    roots: list[Any] = [backend]
    for name, value in vars(vllm_backend).items():
        if not name.startswith("__") and isinstance(value, dict | list):
            roots.append(value)
    return roots


def _walk(value: Any, depth: int) -> list[Any]:
    """Objects reachable through dicts, lists and the project's own objects, ``depth`` deep."""
    found = [value]
    if depth == 0:
        return found
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list | tuple):
        children = list(value)
    elif type(value).__module__.startswith("feedback"):
        children = list(vars(value).values()) if hasattr(value, "__dict__") else []
    else:
        children = []
    for child in children:
        found.extend(_walk(child, depth - 1))
    return found


def engine_find(backend: Any) -> Any | None:
    """The ``vllm.LLM`` the backend serves with, wherever it keeps it."""
    from vllm import LLM

    for root in _containers(backend):
        for value in _walk(root, 3):
            if isinstance(value, LLM):
                return value
    return None


def engines_drop(backend: Any) -> None:
    """Shut down and forget every engine the backend holds (for a backend without unload)."""
    from vllm import LLM

    engine = engine_find(backend)
    if engine is not None:
        shutdown = getattr(engine, "shutdown", None)
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if shutdown is not None:
            shutdown()
        elif core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    for root in _containers(backend):
        if isinstance(root, dict):
            for key in [k for k, v in root.items() if isinstance(v, LLM)]:
                del root[key]
