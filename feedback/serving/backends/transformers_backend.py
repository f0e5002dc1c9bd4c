"""The in-process backend: a transformers model, batched ``generate``, on the CPU or the GPU(s)
that ``DEVICE`` picks (feedback/serving/devices.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from feedback.serving.backends import (
    BackendUnavailable,
    Generated,
    Messages,
    Sampling,
    Target,
    require_safetensors,
)
from feedback.serving.devices import inference_load_kwargs

_CACHE: dict[tuple[str, str | None], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def _load(target: Target) -> tuple[Any, Any]:
    """Load (and keep) the model, where and in the precision ``DEVICE`` picks (fp32 on a CPU,
    bf16 or fp16 on a GPU); a new target (a deploy) loads the new weights."""
    key = (target.model, target.adapter)
    with _LOCK:
        if key not in _CACHE:
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as exc:  # pragma: no cover - torch is a dependency
                raise BackendUnavailable(f"transformers is not installed: {exc}") from exc
            _release()  # one policy at a time in a worker: free the old one before loading
            try:
                placement = inference_load_kwargs()
                revision = target.options.get("revision")
                tokenizer = AutoTokenizer.from_pretrained(target.model, revision=revision)
                model = AutoModelForCausalLM.from_pretrained(
                    target.model, revision=revision, use_safetensors=True, **placement
                )
                if target.adapter:
                    from peft import PeftModel

                    model = PeftModel.from_pretrained(model, require_safetensors(target.adapter))
            except (OSError, ValueError, ImproperlyConfigured) as exc:
                raise BackendUnavailable(f"Cannot load {target.model}: {exc}") from exc
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.eval()
            _CACHE[key] = (tokenizer, model)
        return _CACHE[key]


def _release() -> None:
    """Drop the loaded policy and, on a GPU, hand its memory back to the driver, so a new
    policy never needs room for two."""
    if not _CACHE:
        return
    _CACHE.clear()
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TransformersBackend:
    name = "transformers"

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size

    def generate(
        self, target: Target, prompts: list[Messages], *, n: int, sampling: Sampling
    ) -> list[list[Generated]]:
        import torch

        tokenizer, model = _load(target)
        results: list[list[Generated]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            texts = [
                tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                for m in chunk
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(model.device)  # where the first layer is, under any device map
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed + start)
            began = time.perf_counter()
            with torch.inference_mode():
                output = model.generate(
                    **batch,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature if sampling.temperature > 0 else None,
                    top_p=sampling.top_p,
                    max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=n,
                    pad_token_id=tokenizer.pad_token_id,
                )
            elapsed_ms = int((time.perf_counter() - began) * 1000)
            new = output[:, batch["input_ids"].shape[1] :]
            eos = tokenizer.eos_token_id
            for i in range(len(chunk)):
                prompt_tokens = int(batch["attention_mask"][i].sum())
                samples = []
                for j in range(n):
                    ids = new[i * n + j].tolist()
                    stopped = eos in ids
                    ids = ids[: ids.index(eos)] if stopped else ids
                    ids = [t for t in ids if t != tokenizer.pad_token_id]
                    samples.append(
                        Generated(
                            text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                            finish_reason="stop" if stopped else "length",
                            prompt_tokens=prompt_tokens,
                            completion_tokens=len(ids),
                            latency_ms=elapsed_ms // max(1, len(chunk)),
                        )
                    )
                results.append(samples)
        return results

    def ready(self, target: Target) -> None:
        probe = Sampling(temperature=0, max_new_tokens=1)
        out = self.generate(target, [[{"role": "user", "content": "Hi"}]], n=1, sampling=probe)
        if out[0][0].completion_tokens is None:
            raise BackendUnavailable("The model produced no token.")
