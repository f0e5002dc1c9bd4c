"""What a model's files say: the facts registration stores on a PolicyVersion (``model_info``).

A model's name is a hint (``parse_model_name`` in registry.py reads it); the files are the truth.
``model_inspect`` finds the files (a folder or a ``.gguf`` file inside the artifacts root or a
folder of ``MODEL_DIRS``, or a hub id already in the local Hugging Face cache: registration never
downloads) and reads, without loading a single tensor:

* the parameter count, summed over the tensor shapes in the safetensors headers (every shard of
  ``model.safetensors.index.json``); packed quantized tensors count the weights they hold and
  their scales and zero points count nothing, so a GPTQ model of 7B parameters reads as 7B;
* ``torch_dtype`` (``dtype`` in transformers 5) and ``quantization_config`` from config.json;
* whether a chat template exists, the context length and the shape of the attention (layers,
  KV heads, head size) that the KV cache estimate needs.

Weights that are only pickles (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are refused: unpickling
runs whatever code the file carries. A GGUF file is accepted as serve-only (a llama.cpp server
serves it; nothing here trains it).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from django.conf import settings

from feedback.platform.errors import DomainError
from feedback.serving.backends import BackendUnavailable, model_roots, resolve_model_path

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}
GGUF_MAGIC = b"GGUF"
# Tensors that describe a quantization (scales, zero points, group indices, bitsandbytes
# state) rather than hold weights: they add no parameters.
AUX_TENSOR = re.compile(
    r"(\.(qzeros|scales|g_idx|absmax|quant_map|SCB|weight_shape|weight_zero_point|weight_g_idx)$)"
    r"|(_scale(_inv)?$)|(\.quant_state\.)|(nested_(absmax|quant_map)$)"
)
# A GGUF quantization level as llama.cpp names its files: Q4_K_M, Q8_0, IQ2_XS, F16, BF16.
GGUF_LEVEL = re.compile(r"(?:^|[-_.])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=[-_.]|$)", re.I)
SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


class ModelSourceError(DomainError):
    """The source cannot be registered: the message says why and what to do instead."""

    def __init__(self, detail: str, *, field: str = "source") -> None:
        super().__init__(detail, code="invalid_model", fields={field: [detail]})


@dataclass(frozen=True)
class AdapterFacts:
    path: str
    base_model: str | None
    r: int | None


@dataclass(frozen=True)
class ModelFacts:
    """What the files say; ``as_dict`` is the ``model_info`` schema the registry reads."""

    source: str
    revision: str | None
    path: str
    format: str  # "safetensors" or "gguf"
    serve_only: bool
    parameters: int | None
    torch_dtype: str | None
    quantization: str | None
    quantization_config: dict[str, Any] | None
    chat_template: bool
    context_length: int | None
    architectures: tuple[str, ...]
    model_type: str | None
    layers: int | None
    kv_heads: int | None
    head_dim: int | None
    adapter: AdapterFacts | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["architectures"] = list(self.architectures)
        return data


def model_inspect(
    source: str, *, revision: str | None = None, adapter: str | None = None
) -> ModelFacts:
    """The facts of ``source`` (and of ``adapter``, a PEFT adapter folder, when given), or
    ModelSourceError naming the problem."""
    text = source.strip()
    if not text:
        raise ModelSourceError("Name a hub id (org/name) or a local folder of weights.")
    folder, revision = _locate(text, revision or None)
    facts = _gguf_facts(folder, text) if folder.is_file() else _folder_facts(folder, text)
    adapter_facts = _adapter_facts(adapter.strip()) if adapter and adapter.strip() else None
    return replace(facts, revision=revision, adapter=adapter_facts)


def parameters_text(parameters: int | float | None) -> str:
    """494M, 7.6B, 0.14M: the size as model names write it."""
    if not parameters:
        return "unknown"
    if parameters >= 1e9:
        value = parameters / 1e9
        return f"{value:.1f}B" if value < 10 else f"{value:.0f}B"
    value = parameters / 1e6
    return f"{value:.2g}M" if value < 10 else f"{value:.0f}M"


def model_info_summary(info: dict[str, Any]) -> dict[str, Any] | None:
    """What the files say, worded for a page or a terminal; None for a version registered
    before the files were read (its ``model_info`` is empty)."""
    if not info:
        return None
    return {
        "parameters": parameters_text(info.get("parameters")),
        "dtype": info.get("torch_dtype") or "unknown",
        "quantization": info.get("quantization") or "none",
        "chat_template": "yes" if info.get("chat_template") else "no",
        "context_length": info.get("context_length"),
        "serve_only": bool(info.get("serve_only")),
        "format": info.get("format"),
        "architecture": ", ".join(info.get("architectures") or []) or info.get("model_type"),
        "adapter": info.get("adapter"),
    }


# Finding the files -------------------------------------------------------------------------


def _roots_hint() -> str:
    dirs = ", ".join(str(folder) for folder in model_roots()[1:]) or "none set"
    return (
        f"Weights are read only from ARTIFACTS_DIR ({model_roots()[0]}) and the folders of "
        f"MODEL_DIRS ({dirs}): add the model's folder to MODEL_DIRS, or pass a hub id."
    )


def _local_path(text: str, *, field: str = "source") -> Path | None:
    """The file or folder ``text`` names under the allowed roots, None when it is a hub id;
    the same rules a worker applies when it loads the weights (``resolve_model_path``)."""
    try:
        resolved = resolve_model_path(text)
    except BackendUnavailable as exc:
        raise ModelSourceError(f"{exc} {_roots_hint()}", field=field) from None
    path = Path(resolved)
    if not path.is_absolute():
        return None
    if not path.exists():
        raise ModelSourceError(f"{text} does not exist.", field=field)
    return path


def hub_cache_dir() -> Path:
    """The Hugging Face cache, read from the environment now: huggingface_hub reads it once at
    import, and a long-lived process (or a test) may have changed it since."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or Path(xdg) / "huggingface") / "hub"


def _locate(text: str, revision: str | None) -> tuple[Path, str | None]:
    """The weights' file or folder, and the hub commit they were read at (None for a path)."""
    path = _local_path(text)
    if path is not None:
        if revision:
            raise ModelSourceError(
                f"A revision applies to a hub id only; {text} is a local path.", field="revision"
            )
        return path, None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    cache = hub_cache_dir()
    # local_files_only: registration never downloads, so HF_HUB_OFFLINE (or no network at
    # all) changes nothing here; the files are in the cache or the answer says how to get them.
    try:
        folder = snapshot_download(text, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        at = f" at revision {revision}" if revision else ""
        command = f"hf download {text}" + (f" --revision {revision}" if revision else "")
        raise ModelSourceError(
            f"{text}{at} is not in the local Hugging Face cache ({cache}); download it first "
            f"with `{command}` or pass a local directory."
        ) from None
    except HFValidationError as exc:
        raise ModelSourceError(f"{text} is not a valid hub id: {exc}") from None
    return Path(str(folder)), Path(str(folder)).name


# Reading a folder of safetensors ------------------------------------------------------------


def _read_json(path: Path, source: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{source}: {path.name} is not valid JSON ({exc}).") from None
    return data if isinstance(data, dict) else None


def _weight_files(folder: Path, source: str) -> list[Path]:
    """The safetensors files of the model: the shards the index names, or every file."""
    index = _read_json(folder / "model.safetensors.index.json", source)
    if index is not None:
        names = sorted(set((index.get("weight_map") or {}).values()))
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise ModelSourceError(
                f"{source}: model.safetensors.index.json names shards that are not there "
                f"({', '.join(missing[:3])}); the download is incomplete."
            )
        return [folder / name for name in names]
    files = sorted(
        p for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_model")
    )
    # Mistral's repositories ship the same weights twice: transformers' files and its own
    # consolidated.safetensors; count one copy.
    hf_files = [p for p in files if not p.name.startswith("consolidated")]
    return hf_files or files


def _folder_facts(folder: Path, source: str) -> ModelFacts:
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise ModelSourceError(
            f"{source} is a PEFT adapter, not a model: pass its base model as the source and "
            "this folder as the adapter."
        )
    files = _weight_files(folder, source)
    if not files:
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) == 1:
            return _gguf_facts(ggufs[0], source)
        if ggufs:
            raise ModelSourceError(
                f"{source} holds several GGUF files ({', '.join(p.name for p in ggufs[:4])}); "
                "pass the one to serve."
            )
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelSourceError(
                f"{source} has only pickled weights ({', '.join(pickles[:3])}); they are not "
                "loaded because unpickling runs code. Convert with "
                "save_pretrained(..., safe_serialization=True)."
            )
        raise ModelSourceError(f"{source} holds no weights (no .safetensors or .gguf files).")
    config = _read_json(folder / "config.json", source)
    if config is None:
        raise ModelSourceError(
            f"{source} has no config.json; transformers and vLLM need it to build the model."
        )
    quantization_config = config.get("quantization_config") or None
    parameters, dtypes = _tensor_census(files, quantization_config, source)
    dtype = config.get("torch_dtype") or config.get("dtype") or _main_dtype(dtypes)
    heads = _config_value(config, "num_attention_heads", "n_head")
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model")
    head_dim = _config_value(config, "head_dim") or (hidden // heads if hidden and heads else None)
    return ModelFacts(
        source=source,
        revision=None,
        path=str(folder),
        format="safetensors",
        serve_only=False,
        parameters=parameters,
        torch_dtype=str(dtype) if dtype else None,
        quantization=quantization_name(quantization_config),
        quantization_config=quantization_config,
        chat_template=_has_chat_template(folder, source),
        context_length=_config_value(
            config, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"
        ),
        architectures=tuple(config.get("architectures") or ()),
        model_type=config.get("model_type"),
        layers=_config_value(config, "num_hidden_layers", "n_layer", "num_layers"),
        kv_heads=_config_value(config, "num_key_value_heads") or heads,
        head_dim=int(head_dim) if head_dim else None,
    )


def _config_value(config: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` set in config.json, or in its language model's part (multimodal
    configs keep it under ``text_config``)."""
    for scope in (config, config.get("text_config") or {}):
        for key in keys:
            if isinstance(scope, dict) and scope.get(key) is not None:
                return scope[key]
    return None


def _tensor_census(
    files: list[Path], quantization_config: dict[str, Any] | None, source: str
) -> tuple[int, Counter[str]]:
    """Parameters, and elements per stored dtype, from the headers alone: safetensors'
    ``safe_open`` maps the file lazily and ``get_slice(...).get_shape()`` reads no data."""
    from safetensors import SafetensorError, safe_open

    bits = _quantization_bits(quantization_config)
    four_bit_bnb = quantization_name(quantization_config) == "bnb-4bit"
    total = 0
    dtypes: Counter[str] = Counter()
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                    piece = handle.get_slice(name)
                    numel, dtype = math.prod(piece.get_shape()), piece.get_dtype()
                    dtypes[dtype] += numel
                    if AUX_TENSOR.search(name):
                        continue
                    if dtype == "I32" and name.endswith((".qweight", ".weight_packed")):
                        numel *= 32 // bits  # int4 values packed eight to an int32
                    elif dtype == "U8" and four_bit_bnb:
                        numel *= 2  # bitsandbytes 4-bit: two values per byte
                    total += numel
        except (SafetensorError, OSError) as exc:
            raise ModelSourceError(f"{source}: {file.name} is not readable ({exc}).") from None
    return total, dtypes


def _main_dtype(dtypes: Counter[str]) -> str | None:
    floats = [(n, d) for d, n in dtypes.items() if d in SAFETENSORS_DTYPES]
    return SAFETENSORS_DTYPES[max(floats)[1]] if floats else None


def _has_chat_template(folder: Path, source: str) -> bool:
    """transformers keeps the template in chat_template.jinja (v5, and 4.x since 4.43 as an
    option), chat_template.json (processors) or tokenizer_config.json's "chat_template"."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    extra = folder / "additional_chat_templates"
    if extra.is_dir() and any(extra.glob("*.jinja")):
        return True
    tokenizer_config = _read_json(folder / "tokenizer_config.json", source) or {}
    return bool(tokenizer_config.get("chat_template"))


def _quantization_bits(config: dict[str, Any] | None) -> int:
    if not config:
        return 16
    group = next(iter((config.get("config_groups") or {}).values()), {})
    weights = group.get("weights") or {}
    bits = config.get("bits") or config.get("w_bit") or weights.get("num_bits") or 4
    return int(bits)


def quantization_name(config: dict[str, Any] | None) -> str | None:
    """``quantization_config`` in the registry's words: gptq-int4, awq, bnb-4bit, bnb-8bit,
    fp8, w4a16/w8a8 (compressed-tensors), else the library's own method name."""
    if not config:
        return None
    method = str(config.get("quant_method") or "").lower()
    if method == "gptq":
        return f"gptq-int{_quantization_bits(config)}"
    if method == "awq":
        return "awq"
    if method == "bitsandbytes":
        if config.get("load_in_4bit") or config.get("_load_in_4bit"):
            return "bnb-4bit"
        if config.get("load_in_8bit") or config.get("_load_in_8bit"):
            return "bnb-8bit"
        return "bnb"
    if method == "fp8":
        return "fp8"
    if method == "compressed-tensors":
        group = next(iter((config.get("config_groups") or {}).values()), {})
        weights, activations = group.get("weights") or {}, group.get("input_activations") or {}
        if weights.get("type") == "float" and weights.get("num_bits") == 8:
            return "fp8"
        if weights.get("num_bits"):
            return f"w{weights['num_bits']}a{activations.get('num_bits') or 16}"
        return "compressed-tensors"
    return method or "unknown"


# GGUF and adapters ------------------------------------------------------------------------


def _gguf_facts(file: Path, source: str) -> ModelFacts:
    """A GGUF file, serve-only. The quantization level comes from the file name (llama.cpp's
    convention); the ``gguf`` package, when installed, adds what the header says."""
    with file.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelSourceError(f"{source}: {file.name} is not a GGUF file.")
    level = GGUF_LEVEL.search(file.stem)
    header = _gguf_header(file, source)
    return ModelFacts(
        source=source,
        revision=None,
        path=str(file),
        format="gguf",
        serve_only=True,
        parameters=header.get("parameters"),
        torch_dtype=None,
        quantization=f"gguf-{level.group(1).lower()}" if level else "gguf",
        quantization_config=None,
        chat_template=header["chat_template"] if header else _gguf_mentions_template(file),
        context_length=header.get("context_length"),
        architectures=(),
        model_type=header.get("model_type"),
        layers=header.get("layers"),
        kv_heads=header.get("kv_heads"),
        head_dim=header.get("head_dim"),
    )


def _gguf_header(file: Path, source: str) -> dict[str, Any]:
    try:
        from gguf import GGUFReader
    except ImportError:
        return {}
    try:
        reader = GGUFReader(str(file))
    except Exception as exc:  # the reader raises ValueError, KeyError, struct errors…
        raise ModelSourceError(f"{source}: {file.name} is not a valid GGUF file ({exc}).") from None

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    def number(key: str) -> int | None:  # numpy scalars become plain ints for the JSON
        found = value(key)
        return int(found) if found is not None else None

    arch = value("general.architecture")
    heads, width = number(f"{arch}.attention.head_count"), number(f"{arch}.embedding_length")
    return {
        "parameters": sum(int(t.n_elements) for t in reader.tensors) or None,
        "chat_template": value("tokenizer.chat_template") is not None,
        "context_length": number(f"{arch}.context_length"),
        "model_type": str(arch) if arch else None,
        "layers": number(f"{arch}.block_count"),
        "kv_heads": number(f"{arch}.attention.head_count_kv") or heads,
        "head_dim": number(f"{arch}.attention.key_length")
        or (width // heads if width and heads else None),
    }


def _gguf_mentions_template(file: Path, limit: int = 64 * 1024**2) -> bool:
    """Without the gguf package: does the metadata hold a ``tokenizer.chat_template`` key? The
    keys are stored as plain strings at the head of the file, before any tensor data."""
    key, overlap, tail = b"tokenizer.chat_template", 32, b""
    with file.open("rb") as handle:
        while handle.tell() < limit and (chunk := handle.read(1024**2)):
            if key in tail + chunk:
                return True
            tail = chunk[-overlap:]
    return False


def _adapter_facts(adapter: str) -> AdapterFacts:
    path = _local_path(adapter, field="adapter")
    if path is None or not path.is_dir():
        raise ModelSourceError(
            f"The adapter {adapter} must be a local folder (adapter_config.json and "
            f"adapter_model.safetensors). {_roots_hint()}",
            field="adapter",
        )
    config = _read_json(path / "adapter_config.json", adapter)
    if config is None:
        raise ModelSourceError(
            f"{adapter} has no adapter_config.json: it is not a PEFT adapter.", field="adapter"
        )
    if not (path / "adapter_model.safetensors").is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        reason = (
            f"has only pickled weights ({', '.join(pickles[:3])}); they are not loaded because "
            "unpickling runs code. Convert with save_pretrained(..., safe_serialization=True)."
            if pickles
            else "has no adapter_model.safetensors."
        )
        raise ModelSourceError(f"The adapter {adapter} {reason}", field="adapter")
    rank = config.get("r")
    return AdapterFacts(
        path=str(path),
        base_model=config.get("base_model_name_or_path"),
        r=int(rank) if isinstance(rank, int) else None,
    )


def stored_path(path: str) -> str:
    """A path as a PolicyVersion keeps it: relative to the artifacts root when inside it (the
    root may be mounted elsewhere on a worker), else absolute (a folder of MODEL_DIRS)."""
    root = Path(settings.ARTIFACTS_DIR).resolve()
    resolved = Path(path)
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)
