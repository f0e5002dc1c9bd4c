"""What a model is and what it may be used for: the files' facts over the name's reading, and the
usual rules of LLM practice made into behaviour.

A registered model's files are the truth (``feedback/serving/model_files.py`` reads them into
``PolicyVersion.model_info``); the name is a hint, and where the two disagree the files win and
the reading says so (``model_reading``). ``training_guidance`` turns the usual practice into
behaviour: a chat model is what one serves, not the start of continued pre-training; a
quantized model is trained only as LoRA adapters on top (QLoRA-style); a GGUF file only serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedback.serving.registry import (
    GIB,
    Architecture,
    MemoryEstimate,
    ModelName,
    estimate_memory,
    parse_model_name,
)

# The dtypes config.json names, in this module's words.
_CONFIG_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float8_e4m3fn": "fp8"}
TRAINING_MODES = ("full", "lora", "qlora")


def _human(parameters: float) -> str:
    """7.6B, 494M, 0.1M: how model sizes are written."""
    if parameters >= 1e9:
        return f"{parameters / 1e9:.3g}B"
    return f"{parameters / 1e6:.3g}M"


def _bits_of(quantization: str) -> str:
    """The weight precision a quantization label implies (for memory)."""
    label = quantization.lower()
    if "fp8" in label:
        return "fp8"
    if "int8" in label or "8bit" in label or label.startswith("gguf-q8") or label == "w8a8":
        return "int8"
    if label in ("gguf-f16", "gguf-bf16"):
        return "bf16"
    return "int4"


@dataclass(frozen=True)
class ModelReading:
    """What the platform believes about a model: the files' facts where it has read them (a
    registered model), the name's reading otherwise (a version made before registration read
    files, or an external model), and where the two disagree."""

    name: str
    parsed: ModelName
    from_files: bool
    parameters: float | None
    chat: bool
    quantization: str | None
    weight_dtype: str
    serve_only: bool
    architecture: Architecture | None
    context: int | None
    disagreements: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_files": self.from_files,
            "parameters": self.parameters,
            "size": _human(self.parameters) if self.parameters else None,
            "variant": "chat" if self.chat else "base",
            "quantization": self.quantization,
            "dtype": self.weight_dtype,
            "serve_only": self.serve_only,
            "context_length": self.context,
            "disagreements": self.disagreements,
        }


def _disagreements(parsed: ModelName, reading: dict[str, Any]) -> list[str]:
    said = []
    size, files_size = parsed.parameters, reading["parameters"]
    # Names round (7B for 7.6B, 0.5B for 494M): only a gap beyond a quarter is a disagreement.
    if size and files_size and not 0.75 <= files_size / size <= 1.33:
        said.append(f"The name says {parsed.size}; the files hold {_human(files_size)} parameters.")
    if parsed.chat and not reading["chat"]:
        said.append("The name says chat, but the files have no chat template: it is a base model.")
    elif not parsed.chat and reading["chat"]:
        said.append(
            "The name does not say chat, but the tokenizer has a chat template: it is taken as a "
            "chat model (some families ship a template with their base models too)."
        )
    if parsed.quantization and not reading["quantization"]:
        said.append(
            f"The name says {parsed.quantization}; the files are not quantized "
            f"({reading['dtype']})."
        )
    elif reading["quantization"] and not parsed.quantization:
        said.append(f"The files are quantized ({reading['quantization']}); the name does not say.")
    return [f"{line} The files win." for line in said]


def model_reading(name: str, facts: dict[str, Any] | None = None) -> ModelReading:
    """The name's reading of ``name``, overruled by ``facts`` (a PolicyVersion's model_info)."""
    parsed = parse_model_name(name)
    if not facts:
        return ModelReading(
            name=name, parsed=parsed, from_files=False, parameters=parsed.parameters,
            chat=parsed.chat, quantization=parsed.quantization,
            weight_dtype=parsed.weight_dtype or "bf16",
            serve_only=(parsed.quantization or "").startswith("gguf"),
            architecture=None, context=None,
        )  # fmt: skip
    quantization = facts.get("quantization")
    if facts.get("format") == "gguf" and not quantization:
        quantization = "gguf"
    dtype = _CONFIG_DTYPES.get(str(facts.get("torch_dtype") or ""), "bf16")
    architecture = None
    if facts.get("layers") and facts.get("kv_heads") and facts.get("head_dim"):
        architecture = Architecture(
            layers=int(facts["layers"]), kv_heads=int(facts["kv_heads"]),
            head_dim=int(facts["head_dim"]),
        )  # fmt: skip
    values = {
        "parameters": float(facts["parameters"]) if facts.get("parameters") else None,
        "chat": bool(facts.get("chat_template")),
        "quantization": quantization,
        "dtype": dtype,
    }
    return ModelReading(
        name=name,
        parsed=parsed,
        from_files=True,
        parameters=values["parameters"] or parsed.parameters,
        chat=values["chat"],
        quantization=quantization,
        weight_dtype=_bits_of(quantization) if quantization else dtype,
        serve_only=bool(facts.get("serve_only")) or facts.get("format") == "gguf",
        architecture=architecture,
        context=facts.get("context_length"),
        disagreements=_disagreements(parsed, values),
    )


def reading_memory(reading: ModelReading) -> MemoryEstimate | None:
    """Memory to serve and to train, from the reading (the KV cache for one sequence of the
    model's context, capped at 32k tokens, which is what vLLM reserves at the least)."""
    if not reading.parameters:
        return None
    return estimate_memory(
        parameters=reading.parameters,
        dtype=reading.weight_dtype,
        context=min(reading.context or 4096, 32768),
        architecture=reading.architecture,
    )


@dataclass(frozen=True)
class TrainingGuidance:
    """What choosing a model as a training base means: reasons it cannot be (``refusals``) and
    what the admin should hear before going on (``warnings``)."""

    refusals: list[str]
    warnings: list[str]


def training_mode(*, use_lora: bool, quantization: str | None) -> str:
    """full, lora or qlora: how the base's weights are trained."""
    if quantization:
        return "qlora"
    return "lora" if use_lora else "full"


def _chat_base_warning(reading: ModelReading, *, kind: str) -> str | None:
    if kind != "pretrain" or not reading.chat:
        return None
    return (
        f"{reading.name} is a chat model; continued pre-training on raw text wears its chat "
        "tuning away. Start from the base model, and tune it for chat afterwards."
    )


def training_guidance(
    reading: ModelReading,
    *,
    kind: str,
    mode: str,
    memory: MemoryEstimate | None = None,
    device_memory_bytes: float | None = None,
) -> TrainingGuidance:
    """The usual rules of LLM practice for ``reading`` as the base of a ``kind`` run trained in
    ``mode`` (full, lora, qlora)."""
    name, refusals, warnings = reading.name, [], []
    if reading.serve_only:
        refusals.append(
            f"{name} is a GGUF file: it serves through a llama.cpp server and cannot be a "
            "training base. Register the safetensors model it was converted from."
        )
    elif reading.quantization and mode == "full":
        refusals.append(
            f"{name} is quantized ({reading.quantization}): its weights cannot be fully "
            "fine-tuned. Train LoRA adapters on top of it (QLoRA-style: use_lora true), or "
            "start from the unquantized model."
        )
    elif reading.quantization:
        warnings.append(
            f"{name} is quantized ({reading.quantization}): only the adapters train, and "
            "merging them back into quantized weights loses precision; the adapter serves on "
            "top of the quantized base."
        )
    if chat := _chat_base_warning(reading, kind=kind):
        warnings.append(chat)
    if memory is not None and device_memory_bytes and not refusals:
        need = {
            "full": memory.full_finetune_bytes,
            "lora": memory.lora_finetune_bytes,
            "qlora": memory.qlora_finetune_bytes,
        }[mode]
        if need > device_memory_bytes:
            warnings.append(
                f"{name} needs about {need / GIB:.1f} GiB to train with "
                f"{'full fine-tuning' if mode == 'full' else mode.upper()}, more than the "
                f"{device_memory_bytes / GIB:.0f} GiB of DEVICE_MEMORY_GIB."
            )
    return TrainingGuidance(refusals=refusals, warnings=warnings)


def device_memory_bytes() -> float | None:
    """DEVICE_MEMORY_GIB in bytes, or None when it is not set."""
    from django.conf import settings

    return settings.DEVICE_MEMORY_GIB * GIB if settings.DEVICE_MEMORY_GIB else None


def policy_reading(policy: Any) -> ModelReading:
    """The reading of a PolicyVersion: its registered files' facts over its name."""
    return model_reading(policy.base_model or policy.name, getattr(policy, "model_info", None))


def policy_registry_info(policy: Any) -> dict[str, Any]:
    """The registry's view of a policy version (API and pages): the name's reading, what the files
    say, memory to serve and to train and whether each fits the device, and warnings: serving
    first, then what it means as a base of continued pre-training or of full fine-tuning."""
    reading = policy_reading(policy)
    memory = reading_memory(reading)
    device = device_memory_bytes()
    info: dict[str, Any] = {
        "parsed": reading.parsed.as_dict(),
        "reading": reading.as_dict(),
        "memory": memory.as_dict() if memory else None,
        "fits": None,
        "warnings": [],
    }
    if memory is not None and device:
        info["fits"] = {
            "serve": memory.serve_bytes <= device,
            "lora": memory.lora_finetune_bytes <= device,
            "qlora": memory.qlora_finetune_bytes <= device,
            "full": memory.full_finetune_bytes <= device,
        }
        if memory.serve_bytes > device:
            info["warnings"].append(
                f"{reading.name} needs about {memory.serve_gib():.1f} GiB to serve, more than the "
                f"{device / GIB:.0f} GiB of DEVICE_MEMORY_GIB."
            )
    full = training_guidance(reading, kind="dpo", mode="full")
    info["warnings"] += [f"As a base of full fine-tuning: {line}" for line in full.refusals]
    if chat := _chat_base_warning(reading, kind="pretrain"):
        info["warnings"].append(f"As a base of continued pre-training: {chat}")
    return info
