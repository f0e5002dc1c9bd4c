"""Generation backends behind one interface.

* ``transformers``: the model in this process, batched ``generate`` (the CPU default);
* ``openai``: any OpenAI-compatible server over HTTP (``vllm serve`` in production,
  ``transformers serve`` on a CPU, a llama.cpp server for GGUF);
* ``vllm``: vLLM's engine in this process, on a GPU worker, with LoRA adapters per request.

Heavy libraries are imported inside the backend that needs them, so a web process that never
generates never loads torch. Each backend answers ``ready()`` by generating one real token.
"""

from __future__ import annotations

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
    """What to generate with: weights (hub id or path), an optional adapter, serving options."""

    model: str
    adapter: str | None = None
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)


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


def resolve_model_path(model: str) -> str:
    """A folder under the artifacts root if ``model`` names one; else the hub id or path."""
    candidate = (Path(settings.ARTIFACTS_DIR) / model).resolve()
    root = Path(settings.ARTIFACTS_DIR).resolve()
    if candidate.is_relative_to(root) and candidate.exists():
        return str(candidate)
    return model


def get_backend(name: str | None = None, **options: Any) -> Backend:
    name = name or settings.GENERATION_BACKEND
    if name == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend(**options)
    if name == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(**options)
    if name == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(**options)
    raise BackendUnavailable(f"Unknown generation backend {name!r}: transformers, openai or vllm.")


def target_for(policy: Any) -> Target:
    """The backend target of a PolicyVersion."""
    return Target(
        model=resolve_model_path(policy.base_model or policy.name),
        adapter=resolve_model_path(policy.adapter_path) if policy.adapter_path else None,
        name=policy.name,
    )
