"""The model registry's reading of model names, and memory estimates to serve and to fine-tune.

Hub names follow loose conventions (``Qwen1.5-14B-Chat-GPTQ-Int4``, ``Meta-Llama-3-8B-Instruct``,
``Mistral-7B-v0.3-AWQ``, ``gemma-2-9b-it``, ``…-GGUF``): family and version first, a size such as
``7B``, ``0.5B``, ``135M`` or ``8x7B``, markers for a chat tune, and markers for a quantization.
No library parses them (the hub's metadata is not reachable offline), so this module does, by
rules a reader can check against the table-driven tests.

Memory, in bytes, follows the usual arithmetic:

* serving = parameters * bytes per parameter (FP32 4, FP16/BF16 2, FP8/Int8 1, Int4 ½)
  + KV cache = 2 (K and V) * layers * KV heads * head size * bytes per value * context * batch;
* full fine-tuning with Adam in mixed precision = 16 bytes per parameter (BF16 weights and
  gradients, FP32 master weights, two FP32 Adam moments), activations not counted;
* LoRA = the frozen weights at their own precision + the adapter (about 0.5% of the parameters
  by default) at 16 bytes per trainable parameter;
* QLoRA = the same with the frozen weights in 4 bits.

When the architecture is unknown, layers and width are estimated from the parameter count with
the dense-transformer rule N ≈ 12·L·d² and a width of 128 per layer (d ≈ 128·L), which is within
about 10% for Llama-family models; the KV heads are then taken equal to the attention heads, so
models with grouped-query attention use less than estimated.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

GIB = 1024**3
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
CHAT_MARKERS = {"chat", "instruct", "it", "sft", "rlhf", "dpo", "assistant"}
ORG_PREFIXES = {"meta"}
NOT_VERSIONS = {"hf", "base"}


@dataclass(frozen=True)
class ModelName:
    name: str
    family: str
    version: str | None
    size: str | None  # as written: "7B", "135M", "8x7B"
    parameters: float | None  # in units, not billions
    chat: bool
    quantization: str | None  # "gptq-int4", "awq", "gguf-q4_k_m", "fp8", "bnb-4bit", …
    weight_dtype: str | None  # the precision of the stored weights when the name says it

    @property
    def variant(self) -> str:
        return "chat" if self.chat else "base"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "variant": self.variant}


_SIZE = re.compile(r"^(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])$", re.IGNORECASE)
_FAMILY_VERSION = re.compile(r"^([a-z]+?)-?(\d+(?:\.\d+)*)?$", re.IGNORECASE)
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)$", re.IGNORECASE)


def _quantization(tokens: list[str]) -> tuple[str | None, str | None, set[int]]:
    """The quantization the name declares, the weight precision it implies, and tokens used."""
    lower = [t.lower() for t in tokens]
    used: set[int] = set()

    def find(*names: str) -> int | None:
        for i, token in enumerate(lower):
            if token in names:
                return i
        return None

    # "GQPT" is a misspelling that circulates in a widely read primer; it means GPTQ.
    if (i := find("gptq", "gqpt")) is not None:
        used.add(i)
        bits = "int4"
        if i + 1 < len(lower) and lower[i + 1] in ("int4", "int8", "int3", "int2"):
            used.add(i + 1)
            bits = "int8" if lower[i + 1] == "int8" else "int4"
        return f"gptq-{bits}", bits, used
    if (i := find("awq")) is not None:
        return "awq", "int4", {i}
    if (i := find("gguf")) is not None:
        used.add(i)
        level = next((t for t in lower if re.fullmatch(r"q\d(_[a-z0-9]+)*|f16|bf16", t)), None)
        if level:
            used.add(lower.index(level))
        bits = {"q8": "int8", "f16": "fp16", "bf16": "bf16"}.get((level or "q4")[:2], "int4")
        return f"gguf-{level}" if level else "gguf", bits, used
    if (i := find("bnb")) is not None:
        nxt = lower[i + 1] if i + 1 < len(lower) else "4bit"
        return f"bnb-{nxt}", "int8" if nxt.startswith("8") else "int4", {i, i + 1}
    for i, token in enumerate(lower):
        if token in ("fp8", "int8", "int4", "w8a8", "w4a16", "4bit", "8bit", "exl2", "mlx"):
            bits = {"fp8": "fp8", "int8": "int8", "w8a8": "int8", "8bit": "int8"}.get(token, "int4")
            return token, bits, {i}
    return None, None, used


def parse_model_name(name: str) -> ModelName:
    """Read family, version, size, chat or base, and quantization from a model's name or path."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    # "-", "_" and spaces separate words, except inside a GGUF level such as Q4_K_M.
    tokens = [
        part
        for word in re.split(r"[- ]+", base)
        for part in ([word] if re.fullmatch(r"q\d(_[a-z0-9]+)+", word, re.I) else word.split("_"))
        if part
    ]
    quantization, weight_dtype, used = _quantization(tokens)
    rest = [t for i, t in enumerate(tokens) if i not in used]

    size = parameters = None
    for token in rest:
        if match := _SIZE.match(token):
            experts, value, unit = match.groups()
            size = token
            parameters = float(value) * (1e9 if unit.lower() == "b" else 1e6) * int(experts or 1)
            break

    chat = any(t.lower() in CHAT_MARKERS for t in rest) or rest[0].lower().startswith("chat")
    words = [t for t in rest if t.lower() not in ORG_PREFIXES] or rest
    family, version = words[0], None
    if match := _FAMILY_VERSION.match(words[0]):
        family, version = match.group(1), match.group(2)
    second = words[1] if len(words) > 1 else ""
    if (
        version is None
        and (match := _VERSION.match(second))
        and not _SIZE.match(second)
        and second.lower() not in NOT_VERSIONS
    ):
        version = match.group(1)
    if version is None:
        for token in words[1:]:
            if token.lower().startswith("v") and (match := _VERSION.match(token)):
                version = match.group(1)
                break
    return ModelName(
        name=name,
        family=family.lower(),
        version=version,
        size=size,
        parameters=parameters,
        chat=chat,
        quantization=quantization,
        weight_dtype=weight_dtype,
    )


@dataclass(frozen=True)
class Architecture:
    layers: int
    kv_heads: int
    head_dim: int
    estimated: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Architecture:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            layers=int(config["num_hidden_layers"]),
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
        )

    @classmethod
    def estimate(cls, parameters: float) -> Architecture:
        # N ≈ 12·L·d² with d ≈ 128·L gives d = (128·N/12)^(1/3); heads of 128.
        width = (128 * parameters / 12) ** (1 / 3)
        layers = max(1, round(width / 128))
        return cls(layers=layers, kv_heads=max(1, round(width / 128)), head_dim=128, estimated=True)


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: float
    kv_cache_bytes: float
    serve_bytes: float
    full_finetune_bytes: float
    lora_finetune_bytes: float
    qlora_finetune_bytes: float
    dtype: str
    architecture_estimated: bool
    warnings: list[str] = field(default_factory=list)

    def serve_gib(self) -> float:
        return self.serve_bytes / GIB

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in list(data):
            if key.endswith("_bytes"):
                data[key.replace("_bytes", "_gib")] = round(data[key] / GIB, 2)
        return data


def kv_cache_bytes(
    arch: Architecture, *, context: int, batch: int, bytes_per_value: float
) -> float:
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * bytes_per_value * context * batch


def estimate_memory(
    *,
    parameters: float,
    dtype: str = "bf16",
    context: int = 4096,
    batch: int = 1,
    architecture: Architecture | None = None,
    lora_fraction: float = 0.005,
) -> MemoryEstimate:
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"dtype must be one of {', '.join(BYTES_PER_PARAM)}")
    arch = architecture or Architecture.estimate(parameters)
    weights = parameters * BYTES_PER_PARAM[dtype]
    # The KV cache is kept in 16-bit even for quantized weights (vLLM's default).
    kv = kv_cache_bytes(arch, context=context, batch=batch, bytes_per_value=2.0)
    return MemoryEstimate(
        weights_bytes=weights,
        kv_cache_bytes=kv,
        serve_bytes=weights + kv,
        full_finetune_bytes=parameters * 16,
        lora_finetune_bytes=weights + parameters * lora_fraction * 16,
        # QLoRA: the frozen base in 4 bits (NF4, about 0.5 bytes a parameter with its scales).
        qlora_finetune_bytes=parameters * BYTES_PER_PARAM["int4"] + parameters * lora_fraction * 16,
        dtype=dtype,
        architecture_estimated=arch.estimated,
    )
