"""Where models run and in what precision: one choice, from the ``DEVICE`` setting, for generation
(the transformers backend), training, reward scoring, the gate and the drift check.

- **Device.** ``auto`` (the default): the GPU when CUDA has one, else the CPU. ``cpu``: always the
  CPU. ``cuda``: a GPU or a configuration error (never a silent fall back to a CPU that would take
  days). ``cuda:N``: that GPU.
- **Precision.** bf16 on a GPU that has it (Ampere and newer), fp16 on an older one, fp32 on a CPU
  (bf16 arithmetic on a CPU is slow and loses precision for nothing; so the CPU path is exactly
  what it was before this helper).
- **Loading for inference.** On a GPU under ``DEVICE=auto``, ``device_map="auto"``: accelerate
  puts a model that fits on the GPU, and spreads a bigger one over the visible GPUs (offloading
  the rest to the CPU); a named GPU pins the model there. Inside a process of a multi-GPU training
  run (``LOCAL_RANK`` set by ``accelerate launch``) the model stays on that process's GPU.
- **Loading for training.** The Trainer moves the model itself (and DeepSpeed shards it), so there
  is no device map. A base that trains LoRA on top is frozen, so it loads in the GPU's precision
  (PEFT keeps the adapter in fp32); full fine-tuning loads fp32 weights, since mixed precision
  keeps fp32 master weights. With ``quantization`` (QLoRA) the base loads through bitsandbytes on
  this process's GPU, where the Trainer expects it (it does not move a quantized model).
  For training ``DEVICE`` decides GPU or CPU; which GPUs is the launcher's choice
  (``CUDA_VISIBLE_DEVICES``, ``num_processes``), since the Trainer computes on ``cuda:0`` in one
  process and on ``cuda:LOCAL_RANK`` in each of several.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

QUANTIZATIONS = ("4bit", "8bit")
_DEVICE = re.compile(r"auto|cpu|cuda(?::(\d+))?")


@dataclass(frozen=True)
class Placement:
    """The outcome of ``DEVICE`` on this machine."""

    setting: str
    """DEVICE as set (auto, cpu, cuda, cuda:N)."""
    device: str
    """"cpu" or "cuda:N"."""
    dtype: Any
    """The torch dtype models compute in here."""

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"


def _device_setting() -> str:
    """DEVICE from Django's settings, or the environment in a script that has none."""
    from django.conf import settings

    value = settings.DEVICE if settings.configured else os.environ.get("DEVICE", "auto")
    return str(value or "auto").strip().lower()


def device_placement() -> Placement:
    """The device and dtype ``DEVICE`` picks on this machine; a value that cannot be honoured
    here is a configuration error naming DEVICE."""
    setting = _device_setting()
    match = _DEVICE.fullmatch(setting)
    if match is None:
        raise ImproperlyConfigured(
            f"DEVICE is {setting!r}; it must be auto, cpu, cuda or cuda:N (N a GPU index)."
        )
    import torch

    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return Placement(setting=setting, device="cpu", dtype=torch.float32)
    if not torch.cuda.is_available():
        raise ImproperlyConfigured(
            f"DEVICE is {setting!r}, but this machine has no CUDA device (torch "
            f"{torch.__version__} sees none); set DEVICE to auto or cpu."
        )
    count = torch.cuda.device_count()
    index = int(match.group(1)) if match.group(1) else torch.cuda.current_device()
    if index >= count:
        raise ImproperlyConfigured(
            f"DEVICE is {setting!r}, but this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}."
        )
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Placement(setting=setting, device=f"cuda:{index}", dtype=dtype)


def _local_rank() -> int | None:
    """This process's index on its machine in a multi-process run (``accelerate launch`` and
    torchrun set LOCAL_RANK; the Trainer puts that process on ``cuda:LOCAL_RANK``)."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def inference_load_kwargs() -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a model that only runs forward: fp32 on the CPU
    (no device map, as before), else the GPU dtype and a device map (see the module)."""
    placement = device_placement()
    if not placement.on_gpu:
        return {"dtype": placement.dtype}
    rank = _local_rank()
    if rank is not None:
        device_map: Any = f"cuda:{rank}"
    elif placement.setting == "auto":
        device_map = "auto"
    else:
        device_map = placement.device
    return {"dtype": placement.dtype, "device_map": device_map}


def quantization_refusal(
    quantization: str | None, use_lora: bool, *, trust_workers: bool = False
) -> str | None:
    """Why a recipe's ``quantization`` cannot train here, or None when it can (or is unset).
    Run creation calls it so a QLoRA run on a machine without CUDA is refused with the reason,
    not failed hours later in a worker; with ``trust_workers`` (TRAINING_WORKERS_HAVE_CUDA, a
    CPU web tier in front of GPU workers) only the recipe itself is checked."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        return "quantization is '4bit', '8bit' or null."
    if not use_lora:
        return "QLoRA trains adapters on a quantized base: set use_lora true."
    if trust_workers:
        return None
    needs = f"QLoRA (quantization {quantization!r}) needs a CUDA GPU and the bitsandbytes package"
    instead = "Train with quantization null (LoRA in full precision) or on a GPU worker."
    try:
        placement = device_placement()
    except ImproperlyConfigured as exc:
        return f"{needs}; {exc} {instead}"
    if not placement.on_gpu:
        why = "this machine has no CUDA device"
        if placement.setting == "cpu":
            why = "this worker trains on the CPU"
        return f"{needs}; {why} (DEVICE={placement.setting}). {instead}"
    if importlib.util.find_spec("bitsandbytes") is None:
        return f"{needs}; bitsandbytes is not installed (pip install bitsandbytes). {instead}"
    return None


def training_load_kwargs(quantization: str | None, use_lora: bool) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a model a Trainer will train (see the module);
    a quantization that cannot train here raises with the reason."""
    if why := quantization_refusal(quantization, use_lora):
        raise ImproperlyConfigured(why)
    placement = device_placement()
    if not placement.on_gpu:
        return {"dtype": placement.dtype}
    if quantization is None:
        import torch

        return {"dtype": placement.dtype if use_lora else torch.float32}
    # The Trainer computes on cuda:LOCAL_RANK (cuda:0 in one process) and leaves a quantized
    # model where it was loaded, so that is where the base goes.
    return {
        "dtype": placement.dtype,
        "quantization_config": bitsandbytes_config(quantization, placement.dtype),
        "device_map": {"": f"cuda:{_local_rank() or 0}"},
    }


def bitsandbytes_config(quantization: str, compute_dtype: Any) -> Any:
    """QLoRA's quantization (Dettmers et al., 2023): 4-bit NormalFloat weights, their scales
    quantized too (double quantization), matrix products in ``compute_dtype``; or LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
