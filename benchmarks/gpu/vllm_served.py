"""The production shape: ``vllm serve`` as its own process, the platform's ``openai`` backend in
front of it.

* start: ``vllm serve`` with LoRA enabled and runtime adapter updates allowed
  (``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), polled until ``/v1/models`` answers;
* throughput: the same requests through the backend and through a bare HTTP client (one request
  per sample, in order, as the backend sends them), alternating; plus, for reference only, the
  same samples as concurrent ``n=K`` requests, which is what vLLM's server is built for;
* hot swaps: each adapter loaded at run time (the backend's ``load`` where it has one, else
  ``POST /v1/load_lora_adapter``) and requested by its name; then the base again (the rollback).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.gpu.outcome import Skipped
from benchmarks.gpu.serving_common import (
    Messages,
    Served,
    served_rows,
    target_make,
    tokens_of,
)

TARGET_RATIO = 1.05


class Server:
    def __init__(
        self, outcome: Any, model: Path, *, log: Path, gpu_fraction: float, lora_rank: int
    ) -> None:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise Skipped("vllm is not installed here (pip install 'feedback-loop[vllm]')")
        self.outcome = outcome
        self.model = str(model)
        self.log = log
        with socket.socket() as probe:  # a free port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cli = Path(sys.executable).with_name("vllm")  # `vllm serve`, from this environment
        start = (
            [str(cli), "serve", self.model]
            if cli.exists()
            else [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        )
        self.command = [
            *start,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--gpu-memory-utilization",
            str(gpu_fraction),
            "--enable-lora",
            "--max-lora-rank",
            str(lora_rank),
            "--max-loras",
            "2",
            "--max-model-len",
            "1024",
            "--seed",
            "0",
        ]
        self.process: subprocess.Popen | None = None

    def start(self, deadline_s: float = 420) -> None:
        import httpx

        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        self.outcome.say("$ VLLM_ALLOW_RUNTIME_LORA_UPDATING=True " + " ".join(self.command))
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                self.command, stdout=sink, stderr=subprocess.STDOUT, env=env
            )
        began = time.monotonic()
        while time.monotonic() - began < deadline_s:  # wait for the condition: /v1/models
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited ({self.process.returncode}):\n" + self.log_tail()
                )
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    seconds = time.monotonic() - began
                    self.outcome.measure("vllm serve start seconds", round(seconds, 1))
                    self.outcome.say(f"vllm serve answers at {self.url} after {seconds:.0f} s")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)  # polling interval of the readiness wait above
        raise RuntimeError(f"vllm serve did not answer in {deadline_s:.0f} s:\n" + self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def backend(self) -> Any:
        from feedback.serving.backends import get_backend

        return get_backend("openai", base_url=self.url, read_timeout=300)

    def throughput(self, prompts: list[Messages], *, k: int, sampling: Any, repeats: int) -> None:
        import httpx

        backend, target = self.backend(), target_make(self.model)
        rates: dict[str, list[float]] = {"bare": [], "platform": []}
        with httpx.Client(base_url=self.url, timeout=300) as client:
            for repeat in range(repeats):
                for side in ["bare", "platform"] if repeat % 2 == 0 else ["platform", "bare"]:
                    began = time.perf_counter()
                    if side == "bare":
                        tokens = sum(
                            self._bare_one(client, m, sampling, j)
                            for m in prompts
                            for j in range(k)
                        )
                    else:
                        tokens = tokens_of(
                            backend.generate(target, prompts, n=k, sampling=sampling)
                        )
                    seconds = time.perf_counter() - began
                    rates[side].append(tokens / seconds)
                    self.outcome.say(
                        f"served round {side:8}: {tokens} tokens in "
                        f"{seconds:.2f} s ({tokens / seconds:,.0f} tokens/s)"
                    )
            concurrent = self._concurrent(client, prompts, k=k, sampling=sampling)
        bare, platform = statistics.median(rates["bare"]), statistics.median(rates["platform"])
        self.outcome.measure(
            "vllm serve round",
            {
                "prompts": len(prompts),
                "k": k,
                "max_new_tokens": sampling.max_new_tokens,
                "bare_sequential_tokens_per_s": rates["bare"],
                "platform_tokens_per_s": rates["platform"],
                "reference_concurrent_n_k_tokens_per_s": concurrent,
            },
        )
        ratio = bare / platform
        self.outcome.target(
            "openai backend -> vllm serve: time per token <= 1.05x bare HTTP",
            ratio <= TARGET_RATIO,
            f"{ratio:.3f}x (platform {platform:,.0f} vs bare {bare:,.0f} tokens/s, one request "
            f"per sample in order; {len(prompts)} prompts x K={k}). For reference, the same "
            f"samples as concurrent n={k} requests: {concurrent:,.0f} tokens/s",
        )

    def _payload(self, messages: Messages, sampling: Any, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": messages,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }

    def _bare_one(self, client: Any, messages: Messages, sampling: Any, j: int) -> int:
        payload = self._payload(messages, sampling, self.model)
        if sampling.seed is not None:
            payload["seed"] = sampling.seed + j
        response = client.post("/v1/chat/completions", json=payload)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    def _concurrent(self, client: Any, prompts: list[Messages], *, k: int, sampling: Any) -> float:
        def one(messages: Messages) -> int:
            payload = {**self._payload(messages, sampling, self.model), "n": k}
            response = client.post("/v1/chat/completions", json=payload)
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            tokens = sum(pool.map(one, prompts))
        return tokens / (time.perf_counter() - began)

    def hot_swaps(
        self,
        adapters: dict[str, tuple[Path, int]],
        prompts: list[Messages],
        *,
        k: int,
        sampling: Any,
    ) -> dict[str, list[Served]]:
        import httpx

        backend = self.backend()
        sets: dict[str, list[Served]] = {}
        loaded = []
        for name, (path, version) in adapters.items():
            lora_name = f"gpu-{name}-v{version}"
            if load := getattr(backend, "load", None):
                target = target_make(
                    self.model, adapter=str(path), name=lora_name, version_id=version
                )
                load(target)
            else:  # today's backend has no load: do what it will do, and name the adapter
                response = httpx.post(
                    f"{self.url}/v1/load_lora_adapter",
                    timeout=120,
                    json={"lora_name": lora_name, "lora_path": str(path)},
                )
                if response.status_code >= 400:
                    raise RuntimeError(
                        f"load_lora_adapter answered {response.status_code}: {response.text[:300]}"
                    )
                target = target_make(
                    self.model,
                    adapter=str(path),
                    name=lora_name,
                    version_id=version,
                    served_model=lora_name,
                )
                self.outcome.say(
                    f"the openai backend has no load(): loaded {lora_name} by "
                    "POST /v1/load_lora_adapter"
                )
            loaded.append(target)
            backend.ready(target)
            sets[name] = served_rows(
                prompts, backend.generate(target, prompts, n=k, sampling=sampling)
            )
            self.outcome.say(
                f"served {len(sets[name])} completions with {lora_name}: "
                f"{sets[name][0].text[:60]!r}"
            )
        models = httpx.get(f"{self.url}/v1/models", timeout=10).json()
        self.outcome.measure(
            "vllm serve models after loading", [m.get("id") for m in models.get("data", [])]
        )
        sets["base"] = served_rows(
            prompts, backend.generate(target_make(self.model), prompts, n=k, sampling=sampling)
        )
        self.outcome.say(f"rolled back to the base: {sets['base'][0].text[:60]!r}")
        if getattr(backend, "unload", None):
            for target in loaded:
                backend.unload(target)
            left = [m.get("id") for m in httpx.get(f"{self.url}/v1/models").json()["data"]]
            self.outcome.check(
                "openai backend unload removes the adapters from vllm serve",
                left == [self.model],
                f"the server lists {left}",
            )
        return sets
