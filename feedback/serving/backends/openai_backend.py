"""Any OpenAI-compatible chat server over HTTP, with timeouts, bounded retries and backoff.

The production shape is ``vllm serve`` replicas beside the platform, started so that adapters
can be added while they run::

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve /srv/artifacts/models/base \\
        --served-model-name base-v0 --enable-lora --max-lora-rank 64 --max-loras 4

* A LoRA version is loaded into the running server when it is deployed (or gated):
  ``POST /v1/load_lora_adapter`` under the version's name, with the adapter's path as the
  server sees it (``OPENAI_ADAPTER_ROOT``), and then requested as ``model=<version name>``. A
  server that lost it (a restart) is sent it again before it is asked for it. A candidate the
  gate rejects is unloaded (``POST /v1/unload_lora_adapter``).
* A server's full weights are chosen when it starts. A full-weight version is requested by the
  id under which ``GET /v1/models`` lists it (its version name, its path or its hub id); one the
  server does not list is refused at deploy with the command to restart the server with.
* The readiness probe checks that the answer came from the model it asked for.

llama.cpp's server (GGUF, serve-only versions: ``llama-server -m FILE --alias NAME``) and
``transformers serve`` answer the same chat and model routes.
"""

from __future__ import annotations

import time
from pathlib import Path
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
PROBE = [{"role": "user", "content": "Hi"}]


def adapter_name(target: Target) -> str:
    """The name a LoRA version is loaded and requested under: the version's name."""
    return target.name or Path(target.adapter or "adapter").name


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
        self._listed: list[dict[str, Any]] | None = None  # GET /v1/models, until a change

    # -- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, payload: Any = None) -> httpx.Response:
        """The server's answer (an error status included), after retrying what may pass."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                with httpx.Client(timeout=self.timeout) as client:
                    response = client.request(
                        method, f"{self.base_url}{path}", json=payload, headers=headers
                    )
                if response.status_code not in RETRYABLE:
                    return response
                last = BackendUnavailable(f"{self.base_url} answered {response.status_code}")
            except httpx.TimeoutException as exc:
                last = BackendUnavailable(f"{self.base_url} timed out ({type(exc).__name__})")
            except httpx.TransportError as exc:
                last = BackendUnavailable(f"{self.base_url} is unreachable: {exc}")
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise last or BackendUnavailable(f"{self.base_url} failed")

    def _models(self, *, fresh: bool = False) -> list[dict[str, Any]] | None:
        """What the server serves (``GET /v1/models``: base models, then loaded adapters with a
        ``parent``); None from a server without that route."""
        if self._listed is None or fresh:
            response = self._request("GET", "/v1/models")
            if response.status_code >= 400:
                return None
            try:
                self._listed = [m for m in response.json()["data"] if isinstance(m, dict)]
            except (ValueError, KeyError, TypeError) as exc:
                raise BackendUnavailable(f"Unexpected model list from {self.base_url}") from exc
        return self._listed

    def _server_path(self, path: str) -> str:
        """``path`` as the server sees it: under OPENAI_ADAPTER_ROOT for the artifacts root."""
        root = settings.OPENAI_ADAPTER_ROOT
        artifacts = Path(settings.ARTIFACTS_DIR).resolve()
        if root and Path(path).is_absolute() and Path(path).is_relative_to(artifacts):
            return str(Path(root) / Path(path).relative_to(artifacts))
        return path

    # -- which model to ask for ------------------------------------------------------------

    def _served_id(self, target: Target, models: list[dict[str, Any]]) -> str | None:
        """The id a full-weight target is served under: its version name, its path (as the
        server sees it, or as given) or hub id, matched against ids and then the paths a
        server loaded them from (vLLM's ``root``); for GGUF, the file name too."""
        bases = [m for m in models if not m.get("parent")]
        wanted = [n for n in (target.name, self._server_path(target.model), target.model) if n]
        for field in ("id", "root"):
            for name in wanted:
                for model in bases:
                    if model.get(field) == name:
                        return str(model["id"])
        if target.options.get("format") == "gguf":
            file = Path(target.model).name
            for model in bases:
                if file in (Path(str(model.get("id"))).name, Path(str(model.get("root"))).name):
                    return str(model["id"])
        return None

    def _model_for(self, target: Target) -> str:
        """The ``model`` to request; an adapter the server lost is loaded again first."""
        models = self._models()
        if target.adapter:
            name = adapter_name(target)
            if models is not None and name not in {m.get("id") for m in models}:
                self._load_adapter(target)
            return name
        # A server that does not list what it serves (transformers serve loads on demand) is
        # asked by the path or hub id.
        return (self._served_id(target, models) if models else None) or target.model

    # -- adapters and deploys --------------------------------------------------------------

    def _no_runtime_lora(self, response: httpx.Response) -> bool:
        """A 404 from the route itself (not about an adapter): runtime updating is off."""
        text = response.text.lower()
        return response.status_code in (404, 405) and "adapter" not in text and "lora" not in text

    def _runtime_hint(self, route: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"{self.base_url} has no runtime LoRA API ({route} answered 404). Start the server "
            "with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment and --enable-lora, "
            "so that LoRA versions can be loaded into it at deploy."
        )

    def _load_adapter(self, target: Target) -> None:
        path = self._server_path(target.adapter or "")
        route = "/v1/load_lora_adapter"
        body = {"lora_name": adapter_name(target), "lora_path": path}
        response = self._request("POST", route, body)
        self._listed = None
        text = response.text
        if response.status_code < 400 or "already been loaded" in text:
            return
        if self._no_runtime_lora(response):
            raise self._runtime_hint(route)
        raise BackendUnavailable(
            f"{self.base_url} did not load {adapter_name(target)} from {path} "
            f"({response.status_code}: {text[:300]}). The server must run with --enable-lora and "
            "a --max-lora-rank at least the adapter's, and see the adapter at that path "
            "(OPENAI_ADAPTER_ROOT: where the server sees ARTIFACTS_DIR)."
        )

    def _restart_hint(self, target: Target, models: list[dict[str, Any]]) -> str:
        served = ", ".join(str(m.get("id")) for m in models if not m.get("parent")) or "nothing"
        name = target.name or target.model
        path = self._server_path(target.model)
        if target.options.get("format") == "gguf":
            command = f"llama-server -m {path} --alias {name}"
        else:
            command = (
                f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve {path} --served-model-name "
                f"{name} --enable-lora --max-lora-rank {settings.VLLM_MAX_LORA_RANK}"
            )
        return (
            f"The server at {self.base_url} serves {served}, not {name}; a server's full weights "
            f"are chosen when it starts. Restart it with `{command}`, or point OPENAI_BASE_URL "
            f"at a server that serves {name}."
        )

    def load(self, target: Target) -> None:
        """Make the version servable: an adapter is loaded (once: one the server lists, or
        answers is already loaded, is not sent again); full weights must already be served."""
        models = self._models(fresh=True)
        if target.adapter:
            if models is None or adapter_name(target) not in {m.get("id") for m in models}:
                self._load_adapter(target)
            return
        if models is None:
            raise BackendUnavailable(
                f"{self.base_url} does not list its models (GET /v1/models), so it cannot be "
                f"checked to serve {target.name or target.model}."
            )
        if self._served_id(target, models) is None:
            raise BackendUnavailable(self._restart_hint(target, models))

    def unload(self, target: Target) -> None:
        """Drop the version's adapter from the server; one it does not hold is a no-op."""
        if not target.adapter:
            return  # full weights are the server's own; restarting it is an operator's call
        route = "/v1/unload_lora_adapter"
        response = self._request("POST", route, {"lora_name": adapter_name(target)})
        self._listed = None
        if response.status_code < 400:
            return
        if self._no_runtime_lora(response):
            raise self._runtime_hint(route)
        if response.status_code not in (400, 404):  # 400/404: it was not loaded
            raise BackendUnavailable(
                f"{self.base_url} did not unload {adapter_name(target)} "
                f"({response.status_code}: {response.text[:300]})"
            )

    # -- generation ------------------------------------------------------------------------

    def _chat(self, model: str, messages: Messages, sampling: Sampling) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            payload["seed"] = sampling.seed
        response = self._request("POST", "/v1/chat/completions", payload)
        if response.status_code >= 400:
            raise BackendUnavailable(
                f"{self.base_url} refused the request ({response.status_code}): "
                f"{response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise BackendUnavailable(f"Unexpected answer from {self.base_url}: {exc}") from exc

    def _one(self, model: str, messages: Messages, sampling: Sampling) -> Generated:
        began = time.perf_counter()
        data = self._chat(model, messages, sampling)
        return self._generated(data, int((time.perf_counter() - began) * 1000))

    def _generated(self, data: dict[str, Any], latency: int) -> Generated:
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
        model = self._model_for(target)
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
                samples.append(self._one(model, messages, seeded))
            results.append(samples)
        return results

    def ready(self, target: Target) -> None:
        """One real token from the model being deployed, and the server's word that it was
        that model which answered (a proxy or a default model answering instead fails)."""
        model = self._model_for(target)
        data = self._chat(model, PROBE, Sampling(temperature=0, max_new_tokens=1))
        self._generated(data, 0)  # an answer of the expected shape
        answered = str(data.get("model"))
        # transformers serve names a hub model with its revision: "org/name@main".
        if model not in (answered, answered.rsplit("@", 1)[0]):
            raise BackendUnavailable(
                f"{self.base_url} was asked for {model} and answered as {data.get('model')!r}."
            )
