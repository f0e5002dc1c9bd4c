"""Any OpenAI-compatible chat server over HTTP, with timeouts, bounded retries and backoff."""

from __future__ import annotations

import time
from typing import Any

import httpx
from django.conf import settings

from feedback.serving.backends import (
    BackendUnavailable,
    Generated,
    Messages,
    Sampling,
    Target,
    model_server_check,
)

RETRYABLE = {429, 500, 502, 503, 504}


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        retries: int | None = None,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = model_server_check(base_url or settings.OPENAI_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else settings.OPENAI_API_KEY
        self.timeout = httpx.Timeout(
            read_timeout if read_timeout is not None else settings.GENERATION_READ_TIMEOUT,
            connect=connect_timeout
            if connect_timeout is not None
            else settings.GENERATION_CONNECT_TIMEOUT,
        )
        self.retries = retries if retries is not None else settings.GENERATION_RETRIES
        self.backoff = backoff

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                with httpx.Client(timeout=self.timeout) as client:
                    response = client.post(
                        f"{self.base_url}/v1/chat/completions", json=payload, headers=headers
                    )
                if response.status_code in RETRYABLE:
                    last = BackendUnavailable(f"{self.base_url} answered {response.status_code}")
                elif response.status_code >= 400:
                    raise BackendUnavailable(
                        f"{self.base_url} refused the request ({response.status_code}): "
                        f"{response.text[:300]}"
                    )
                else:
                    return response.json()
            except httpx.TimeoutException as exc:
                last = BackendUnavailable(f"{self.base_url} timed out ({type(exc).__name__})")
            except httpx.TransportError as exc:
                last = BackendUnavailable(f"{self.base_url} is unreachable: {exc}")
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise last or BackendUnavailable(f"{self.base_url} failed")

    def _one(self, target: Target, messages: Messages, sampling: Sampling) -> Generated:
        payload: dict[str, Any] = {
            "model": target.options.get("served_model") or target.model,
            "messages": messages,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            payload["seed"] = sampling.seed
        began = time.perf_counter()
        data = self._post(payload)
        latency = int((time.perf_counter() - began) * 1000)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendUnavailable(f"Unexpected answer from {self.base_url}: {exc}") from exc
        usage = data.get("usage") or {}
        return Generated(
            text=text.strip(),
            finish_reason=choice.get("finish_reason") or "",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_ms=latency,
        )

    def generate(
        self, target: Target, prompts: list[Messages], *, n: int, sampling: Sampling
    ) -> list[list[Generated]]:
        # One request per sample: not every OpenAI-compatible server implements `n`.
        results = []
        for messages in prompts:
            samples = []
            for j in range(n):
                seeded = Sampling(
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_new_tokens=sampling.max_new_tokens,
                    seed=None if sampling.seed is None else sampling.seed + j,
                )
                samples.append(self._one(target, messages, seeded))
            results.append(samples)
        return results

    def ready(self, target: Target) -> None:
        self._one(
            target, [{"role": "user", "content": "Hi"}], Sampling(temperature=0, max_new_tokens=1)
        )
