"""What the serving parts share: targets that fit the backends of today and of tomorrow, the
completions kept for the adapter check, and the device's free memory.

The backends are being extended (a ``version_id`` on ``Target``, ``load``/``unload`` on the
backends), so the script asks for those at run time instead of assuming either shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Served:
    """One completion as served, with what the log-probability check needs."""

    messages: Messages
    text: str
    stopped: bool  # ended on the end-of-sequence token (scored too), not on the length limit


def target_make(
    model: str,
    *,
    adapter: str | None = None,
    name: str = "",
    version_id: int | None = None,
    **options: Any,
) -> Any:
    """A ``Target``; ``version_id`` only where ``Target`` has that field."""
    from feedback.serving.backends import Target

    fields = {f.name for f in dataclasses.fields(Target)}
    extra = {"version_id": version_id} if version_id is not None and "version_id" in fields else {}
    return Target(model=model, adapter=adapter, name=name, options=dict(options), **extra)


def served_rows(prompts: list[Messages], generated: list[list[Any]]) -> list[Served]:
    return [
        Served(messages, sample.text, sample.finish_reason == "stop")
        for messages, samples in zip(prompts, generated, strict=True)
        for sample in samples
    ]


def tokens_of(generated: list[list[Any]]) -> int:
    return sum(sample.completion_tokens or 0 for samples in generated for sample in samples)


def free_gib() -> float:
    """Free memory on the device, every process's use counted (vLLM's engine runs in its own)."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    return free / 2**30
