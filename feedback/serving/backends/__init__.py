"""Generation backends behind one interface.

* ``transformers``: the model in this process, batched ``generate`` (the CPU default);
* ``openai``: any OpenAI-compatible server over HTTP (``vllm serve`` in production,
  ``transformers serve`` on a CPU, a llama.cpp server for GGUF);
* ``vllm``: vLLM's engine in this process, on a GPU worker, with LoRA adapters per request.

Heavy libraries are imported inside the backend that needs them, so a web process that never
generates never loads torch. Each backend answers ``ready()`` by generating one real token.

A deploy (and the gate, before it generates with a candidate) first asks the backend to
``load`` the version: vLLM builds its engine for the weights, a ``vllm serve`` replica is sent
the adapter through its runtime LoRA API. ``unload`` drops a version nobody will ask for again
(a rejected candidate). transformers loads lazily on the first ``generate`` and has neither, so
callers go through ``backend_load``/``backend_unload``, which treat a missing method as a no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

Messages = list[dict[str, str]]


class BackendUnavailable(Exception):
    """The backend cannot generate: not installed, not reachable, timed out, or failed."""


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters, recorded on every completion they produce."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Generated:
    text: str
    finish_reason: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None


@dataclass(frozen=True)
class Target:
    """What to generate with: weights (hub id or path), an optional adapter, serving options
    (``format``: "gguf" for a serve-only GGUF file), and the PolicyVersion it serves, whose id
    names the version's adapter wherever a server keys adapters by number (vLLM's LoRA id)."""

    model: str
    adapter: str | None = None
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    version_id: int | None = None


class Backend(Protocol):
    name: str

    def generate(
        self, target: Target, prompts: list[Messages], *, n: int, sampling: Sampling
    ) -> list[list[Generated]]:
        """``n`` samples for each prompt, in order."""
        ...

    def ready(self, target: Target) -> None:
        """Generate one real token, or raise BackendUnavailable saying why."""
        ...

    def load(self, target: Target) -> None:
        """Make ``target`` servable (weights in memory, an adapter known to the server), or
        raise BackendUnavailable saying what to change. Loading what is loaded does nothing."""
        ...

    def unload(self, target: Target) -> None:
        """Drop ``target``'s adapter where the backend holds it; unknown ones are a no-op."""
        ...


def backend_load(backend: Backend, target: Target) -> None:
    """``backend.load(target)`` where the backend has it (transformers loads on first use)."""
    load = getattr(backend, "load", None)
    if load is not None:
        load(target)


def backend_unload(backend: Backend, target: Target) -> None:
    """``backend.unload(target)`` where the backend has it."""
    unload = getattr(backend, "unload", None)
    if unload is not None:
        unload(target)


# A hub id: "name" or "org/name", letters, digits and . _ - (no "..", no leading separator).
_HUB_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def model_roots() -> list[Path]:
    """Folders weights may be read from: the artifacts root, then settings.MODEL_DIRS."""
    return [Path(settings.ARTIFACTS_DIR).resolve()] + [
        Path(folder).resolve() for folder in settings.MODEL_DIRS
    ]


def resolve_model_path(model: str) -> str:
    """Where to load ``model`` from: a folder under the artifacts root when it names one, an
    absolute path only inside a folder of ``MODEL_DIRS``, else a hub id. Anything else (a path
    that climbs out with "..", an absolute path elsewhere, a link out of the root) is refused,
    so a stored reference cannot make a worker read an arbitrary file."""
    if not model.strip():
        raise BackendUnavailable("No model named.")
    root = Path(settings.ARTIFACTS_DIR).resolve()
    if not Path(model).is_absolute():
        candidate = root / model
        if candidate.exists() or candidate.is_symlink():
            resolved = candidate.resolve()  # follows links: one that leads out is caught here
            if any(resolved.is_relative_to(folder) for folder in model_roots()):
                return str(resolved)
            raise BackendUnavailable(f"{model!r} leads out of the artifacts root.")
        if _HUB_ID.match(model):
            return model
        raise BackendUnavailable(
            f"{model!r} is neither a folder under the artifacts root nor a hub id."
        )
    candidate = Path(model).resolve()
    if any(candidate.is_relative_to(folder) for folder in model_roots()):
        return str(candidate)
    raise BackendUnavailable(
        f"{model} is outside the artifacts root and every folder of MODEL_DIRS; weights are "
        "read only from there."
    )


def require_safetensors(folder: str) -> str:
    """``folder``, once its weights are known to be safetensors. A ``.bin``/``.pt`` checkpoint is
    a pickle, and loading one runs whatever code it carries, so it is refused (hub ids are
    fetched with ``use_safetensors=True``, which refuses them the same way)."""
    path = Path(folder)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        raise BackendUnavailable(
            f"{folder} has no .safetensors weights; pickled checkpoints (.bin, .pt) are not "
            "loaded. Convert them: model.save_pretrained(out, safe_serialization=True)."
        )
    return folder


def model_server_check(url: str) -> str:
    """``url``, if it is http(s) on an allowed host (settings.MODEL_SERVER_HOSTS, and the host of
    OPENAI_BASE_URL); otherwise refused, so a stored or passed URL cannot aim a worker's
    requests at an arbitrary address (SSRF)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    configured = urlsplit(settings.OPENAI_BASE_URL)
    allowed = {host.lower() for host in settings.MODEL_SERVER_HOSTS} | {
        (configured.hostname or "").lower(),
        configured.netloc.lower(),
    }
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise BackendUnavailable(f"{url!r} is not an http(s) URL of a model server.")
    if host not in allowed and parts.netloc.lower() not in allowed:
        raise BackendUnavailable(
            f"{host} is not an allowed model server; add it to MODEL_SERVER_HOSTS to use it."
        )
    return url


def get_backend(name: str | None = None, **options: Any) -> Backend:
    name = name or settings.GENERATION_BACKEND
    if name == "transformers":
        from feedback.serving.backends.transformers_backend import TransformersBackend

        return TransformersBackend(**options)
    if name == "openai":
        from feedback.serving.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(**options)
    if name == "vllm":
        from feedback.serving.backends.vllm_backend import VLLMBackend

        return VLLMBackend(**options)
    raise BackendUnavailable(f"Unknown generation backend {name!r}: transformers, openai or vllm.")


def target_for(policy: Any) -> Target:
    """The backend target of a PolicyVersion. A serve-only GGUF version (``model_info`` says
    ``format: gguf``) names its file, which only a llama.cpp server behind the openai backend
    serves."""
    info = getattr(policy, "model_info", None) or {}
    model = policy.base_model or policy.name
    options: dict[str, Any] = {}
    if getattr(policy, "revision", ""):  # a hub id pinned at registration to its snapshot
        options["revision"] = policy.revision
    if info.get("format") == "gguf":
        options["format"] = "gguf"
        model = info.get("path") or model
    return Target(
        model=resolve_model_path(model),
        adapter=resolve_model_path(policy.adapter_path) if policy.adapter_path else None,
        name=policy.name,
        options=options,
        version_id=policy.pk,
    )
