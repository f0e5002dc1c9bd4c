"""vLLM's engine in this process: batch generation on a GPU worker, LoRA adapters per request.

An optional extra (``pip install 'feedback-loop[vllm]'`` on a CUDA machine). Tensor parallelism
and a quantization (fp8, awq, gptq) pass through from the target's options or settings.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from feedback.serving.backends import BackendUnavailable, Generated, Messages, Sampling, Target

_ENGINES: dict[str, Any] = {}


def _engine(target: Target) -> Any:
    try:
        from vllm import LLM
    except ImportError as exc:
        raise BackendUnavailable(
            "vLLM is not installed. On a CUDA machine: pip install 'feedback-loop[vllm]'; "
            "or use GENERATION_BACKEND=openai against a running `vllm serve`."
        ) from exc
    if target.model not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[target.model] = LLM(
            model=target.model,
            tensor_parallel_size=int(
                target.options.get("tensor_parallel_size", settings.VLLM_TENSOR_PARALLEL)
            ),
            quantization=target.options.get("quantization", settings.VLLM_QUANTIZATION) or None,
            enable_lora=True,
        )
    return _ENGINES[target.model]


class VLLMBackend:
    name = "vllm"

    def generate(
        self, target: Target, prompts: list[Messages], *, n: int, sampling: Sampling
    ) -> list[list[Generated]]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        engine = _engine(target)
        params = SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
        )
        lora = LoRARequest(target.name or "adapter", 1, target.adapter) if target.adapter else None
        began = time.perf_counter()
        outputs = engine.chat(prompts, params, lora_request=lora, use_tqdm=False)
        latency = int((time.perf_counter() - began) * 1000) // max(1, len(prompts))
        return [
            [
                Generated(
                    text=sample.text.strip(),
                    finish_reason=sample.finish_reason or "",
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(sample.token_ids),
                    latency_ms=latency,
                )
                for sample in output.outputs
            ]
            for output in outputs
        ]

    def ready(self, target: Target) -> None:
        self.generate(
            target,
            [[{"role": "user", "content": "Hi"}]],
            n=1,
            sampling=Sampling(temperature=0, max_new_tokens=1),
        )
