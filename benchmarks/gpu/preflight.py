"""What this machine has: library versions, the device, whether the platform imports, and so
which parts of the GPU script can run. Printed first, so a reader of a cut-off log knows."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

# import name → distribution name; the platform's own imports need the first block.
PACKAGES = {
    "django": "Django",
    "dj_database_url": "dj-database-url",
    "celery": "celery",
    "httpx": "httpx",
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "accelerate": "accelerate",
    "datasets": "datasets",
    "peft": "peft",
    "trl": "trl",
    "bitsandbytes": "bitsandbytes",
    "vllm": "vllm",
}
TRAINING = ("datasets", "peft", "trl", "accelerate")


def _version(module: str, dist: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def preflight(outcome: Any) -> dict[str, Any]:
    import platform

    versions = {dist: _version(module, dist) for module, dist in PACKAGES.items()}
    outcome.say(
        f"python {platform.python_version()}; "
        + ", ".join(f"{dist} {version or 'MISSING'}" for dist, version in versions.items())
    )
    facts: dict[str, Any] = {"versions": versions, "cuda": False}
    if versions["torch"]:
        import torch

        facts["cuda"] = torch.cuda.is_available()
        if facts["cuda"]:
            props = torch.cuda.get_device_properties(0)
            facts["device"] = {
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported(),
                "torch_cuda": torch.version.cuda,
            }
            outcome.say(f"device: {facts['device']}")
        else:
            outcome.say("device: CPU only")
    _quiet()
    facts["platform_ok"], facts["platform_error"] = _platform_imports()
    facts["vllm"] = bool(versions["vllm"]) and facts["cuda"]
    facts["training"] = all(versions[PACKAGES[m]] for m in TRAINING)
    outcome.data["preflight"] = facts
    _plan_print(outcome, facts)
    return facts


def _quiet() -> None:
    """No progress bars or deprecation notices from the libraries: the log is for results."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if importlib.util.find_spec("transformers"):
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    if importlib.util.find_spec("datasets"):
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()


def _platform_imports() -> tuple[bool, str]:
    """Whether the platform's backends and DPO trainer import (they need Django, dj-database-url
    and celery besides the ML libraries: ``feedback/__init__`` loads the Celery app)."""
    try:
        import feedback.serving.backends  # noqa: F401
        import training.trainers.dpo  # noqa: F401
    except Exception as exc:  # any missing piece: say which
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def _plan_print(outcome: Any, facts: dict[str, Any]) -> None:
    """One line per part: runs, or why not."""
    versions = facts["versions"]
    missing = [d for m, d in PACKAGES.items() if m in TRAINING and not versions[d]]
    rows = {
        "platform imports": "yes"
        if facts["platform_ok"]
        else f"NO: {facts['platform_error']}"
        " (carry wheels: pip install Django dj-database-url celery httpx)",
        "training (LoRA)": "yes" if facts["training"] else f"NO: missing {', '.join(missing)}",
        "training (QLoRA)": "yes"
        if facts["cuda"] and versions["bitsandbytes"]
        else "NO: needs CUDA and bitsandbytes",
        "vllm (both shapes)": "yes"
        if facts["vllm"]
        else "NO: needs CUDA and vllm "
        "(pip install 'feedback-loop[vllm]'); the adapter check runs on the transformers "
        "backend instead",
    }
    for part, verdict in rows.items():
        outcome.say(f"can run {part:20} {verdict}")
