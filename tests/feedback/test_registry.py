"""The registry reads real model names, and its memory estimates match the hand arithmetic."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from feedback.serving.guidance import (
    model_reading,
    policy_registry_info,
    reading_memory,
    training_guidance,
)
from feedback.serving.registry import GIB, Architecture, estimate_memory, parse_model_name

# name, family, version, size, parameters, chat, quantization
NAMES = [
    ("Qwen1.5-14B-Chat-GPTQ-Int4", "qwen", "1.5", "14B", 14e9, True, "gptq-int4"),
    # The misspelling that circulates in a widely read primer still reads as GPTQ.
    ("Qwen1.5-14B-Chat-GQPT-Int4", "qwen", "1.5", "14B", 14e9, True, "gptq-int4"),
    ("Qwen/Qwen1.5-7B-Chat-GPTQ-Int8", "qwen", "1.5", "7B", 7e9, True, "gptq-int8"),
    ("Llama-3-8B-Instruct", "llama", "3", "8B", 8e9, True, None),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama", "3", "8B", 8e9, True, None),
    ("meta-llama/Llama-3.1-70B", "llama", "3.1", "70B", 70e9, False, None),
    ("Llama-2-7b-hf", "llama", "2", "7b", 7e9, False, None),
    ("Llama-2-70b-chat-hf", "llama", "2", "70b", 70e9, True, None),
    ("Qwen2-7B", "qwen", "2", "7B", 7e9, False, None),
    ("Qwen2.5-0.5B-Instruct", "qwen", "2.5", "0.5B", 0.5e9, True, None),
    ("Qwen2.5-72B-Instruct-AWQ", "qwen", "2.5", "72B", 72e9, True, "awq"),
    ("Qwen3-0.6B", "qwen", "3", "0.6B", 0.6e9, False, None),
    ("Mistral-7B-v0.3-AWQ", "mistral", "0.3", "7B", 7e9, False, "awq"),
    ("Mistral-7B-Instruct-v0.2", "mistral", "0.2", "7B", 7e9, True, None),
    ("Mixtral-8x7B-Instruct-v0.1", "mixtral", "0.1", "8x7B", 56e9, True, None),
    ("gemma-2-9b-it", "gemma", "2", "9b", 9e9, True, None),
    ("gemma-2b", "gemma", None, "2b", 2e9, False, None),
    ("google/gemma-7b-it", "gemma", None, "7b", 7e9, True, None),
    ("TinyLlama-1.1B-Chat-v1.0", "tinyllama", "1.0", "1.1B", 1.1e9, True, None),
    ("Llama-3-8B-Instruct-GGUF", "llama", "3", "8B", 8e9, True, "gguf"),
    ("Qwen2.5-7B-Instruct-Q4_K_M-GGUF", "qwen", "2.5", "7B", 7e9, True, "gguf-q4_k_m"),
    ("Meta-Llama-3.1-8B-Instruct-FP8", "llama", "3.1", "8B", 8e9, True, "fp8"),
    ("Llama-3.3-70B-Instruct-bnb-4bit", "llama", "3.3", "70B", 70e9, True, "bnb-4bit"),
    ("SmolLM2-135M-Instruct", "smollm", "2", "135M", 135e6, True, None),
    ("SmolLM2-1.7B", "smollm", "2", "1.7B", 1.7e9, False, None),
    ("falcon-7b-instruct", "falcon", None, "7b", 7e9, True, None),
    ("Yi-34B-Chat", "yi", None, "34B", 34e9, True, None),
    ("deepseek-llm-7b-chat", "deepseek", None, "7b", 7e9, True, None),
    ("internlm2-chat-7b", "internlm", "2", "7b", 7e9, True, None),
    ("Baichuan2-13B-Chat", "baichuan", "2", "13B", 13e9, True, None),
    ("chatglm3-6b", "chatglm", "3", "6b", 6e9, True, None),
    ("vicuna-13b-v1.5", "vicuna", "1.5", "13b", 13e9, False, None),
    ("CodeLlama-34b-Instruct-hf", "codellama", None, "34b", 34e9, True, None),
    ("OLMo-2-1124-7B-Instruct", "olmo", "2", "7B", 7e9, True, None),
    ("Phi-3.5-mini-instruct", "phi", "3.5", None, None, True, None),
    ("Mistral-Small-24B-Instruct-2501", "mistral", None, "24B", 24e9, True, None),
]


@pytest.mark.parametrize(
    ("name", "family", "version", "size", "parameters", "chat", "quant"), NAMES
)
def test_parses_real_model_names(name, family, version, size, parameters, chat, quant):
    parsed = parse_model_name(name)
    assert (parsed.family, parsed.version, parsed.size, parsed.chat, parsed.quantization) == (
        family,
        version,
        size,
        chat,
        quant,
    )
    assert (
        parsed.parameters == pytest.approx(parameters) if parameters else parsed.parameters is None
    )
    assert parsed.variant == ("chat" if chat else "base")


def test_weights_memory_by_precision_matches_hand_arithmetic():
    for dtype, per_param in (("fp32", 4), ("fp16", 2), ("bf16", 2), ("fp8", 1), ("int4", 0.5)):
        assert estimate_memory(parameters=7e9, dtype=dtype).weights_bytes == 7e9 * per_param


def test_kv_cache_for_a_known_architecture():
    # Llama-3-8B: 32 layers, 8 KV heads of 128; 2 (K,V) x 32 x 8 x 128 x 2 bytes = 128 KiB a token.
    arch = Architecture.from_config(
        {
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "hidden_size": 4096,
        }
    )
    estimate = estimate_memory(
        parameters=8e9, dtype="bf16", context=8192, batch=4, architecture=arch
    )
    assert estimate.kv_cache_bytes == 131072 * 8192 * 4  # 4 GiB
    assert estimate.kv_cache_bytes / GIB == 4.0
    assert estimate.serve_bytes == 16e9 + 4 * GIB
    assert estimate.full_finetune_bytes == 8e9 * 16
    assert estimate.lora_finetune_bytes == 16e9 + 8e9 * 0.005 * 16
    assert not estimate.architecture_estimated


def test_estimated_architecture_is_close_for_llama_2_7b():
    arch = Architecture.estimate(6.7e9)  # real: 32 layers, 32 heads of 128
    assert 30 <= arch.layers <= 34 and arch.head_dim == 128


# name, run kind, how its weights train, what must refuse it, what must warn (None: nothing).
GUIDANCE = [
    ("Qwen1.5-14B-Chat-GPTQ-Int4", "pretrain", "lora", None, ["gptq-int4", "chat model"]),
    ("Qwen1.5-14B-Chat-GQPT-Int4", "dpo", "full", "quantized (gptq-int4)", None),
    ("Qwen1.5-14B-Chat-GQPT-Int4", "pretrain", "lora", None, ["gptq-int4", "chat model"]),
    ("Qwen2.5-72B-Instruct-AWQ", "sft", "full", "quantized (awq)", None),
    ("Mistral-7B-v0.3-AWQ", "dpo", "lora", None, ["quantized (awq)"]),
    ("Meta-Llama-3.1-8B-Instruct-FP8", "reward", "full", "quantized (fp8)", None),
    ("Llama-3.3-70B-Instruct-bnb-4bit", "dpo", "qlora", None, ["bnb-4bit"]),
    ("Qwen2.5-7B-Instruct-Q4_K_M-GGUF", "dpo", "lora", "GGUF", None),
    ("Llama-3-8B-Instruct-GGUF", "pretrain", "lora", "GGUF", ["chat model"]),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "pretrain", "full", None, ["chat model"]),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "dpo", "full", None, None),
    ("gemma-2-9b-it", "pretrain", "lora", None, ["continued pre-training"]),
    ("meta-llama/Llama-3.1-70B", "pretrain", "full", None, None),
    ("Qwen2-7B", "sft", "full", None, None),
]


@pytest.mark.parametrize(("name", "kind", "mode", "refused", "warned"), GUIDANCE)
def test_chat_and_quantized_bases_are_warned_or_refused(name, kind, mode, refused, warned):
    said = training_guidance(model_reading(name), kind=kind, mode=mode)
    if refused:
        assert len(said.refusals) == 1 and refused in said.refusals[0]
    else:
        assert said.refusals == []
    if warned:
        assert len(said.warnings) == len(warned)
        for expected, line in zip(warned, said.warnings, strict=True):
            assert expected in line and name in line
    else:
        assert said.warnings == []


def test_the_files_win_over_the_name_and_the_reading_says_so():
    facts = {
        "format": "safetensors", "parameters": 120_000, "torch_dtype": "bfloat16",
        "quantization": None, "chat_template": False, "context_length": 2048,
        "layers": 2, "kv_heads": 2, "head_dim": 16,
    }  # fmt: skip
    reading = model_reading("Qwen2-7B-Instruct-AWQ", facts)
    assert (reading.parameters, reading.chat, reading.quantization) == (120_000, False, None)
    assert reading.weight_dtype == "bf16" and reading.context == 2048
    said = " ".join(reading.disagreements)
    assert "The name says 7B; the files hold 0.12M parameters." in said
    assert "no chat template" in said and "the files are not quantized (bf16)" in said
    # Sizes round in names: Qwen2.5-7B holds 7.6B and the 0.5B one 494M; neither disagrees.
    for name, parameters in (("Qwen2.5-7B", 7.62e9), ("Qwen2.5-0.5B", 494e6)):
        facts = {"format": "safetensors", "parameters": parameters, "chat_template": False}
        assert model_reading(name, facts).disagreements == []


def test_a_gguf_file_is_serve_only_whatever_its_name():
    reading = model_reading("my-model", {"format": "gguf", "quantization": "gguf-q4_k_m"})
    assert reading.serve_only and reading.weight_dtype == "int4"
    assert "GGUF" in training_guidance(reading, kind="sft", mode="lora").refusals[0]


def test_memory_says_what_fits_the_device(settings):
    settings.DEVICE_MEMORY_GIB = 24
    policy = SimpleNamespace(name="Qwen2.5-7B-Instruct", base_model="", model_info={})
    info = policy_registry_info(policy)
    assert info["fits"] == {"serve": True, "lora": True, "qlora": True, "full": False}
    memory = reading_memory(model_reading("Qwen2.5-7B-Instruct"))
    assert memory.qlora_finetune_bytes == 7e9 * 0.5 + 7e9 * 0.005 * 16
    said = training_guidance(
        model_reading("Qwen2.5-7B-Instruct"), kind="dpo", mode="full", memory=memory,
        device_memory_bytes=24 * GIB,
    )  # fmt: skip
    assert said.warnings == [
        "Qwen2.5-7B-Instruct needs about 104.3 GiB to train with full fine-tuning, more than "
        "the 24 GiB of DEVICE_MEMORY_GIB."
    ]
    settings.DEVICE_MEMORY_GIB = 8
    assert "needs about" in policy_registry_info(policy)["warnings"][0]


def test_the_policies_page_and_api_carry_the_training_warnings():
    policy = SimpleNamespace(name="Qwen1.5-14B-Chat-GQPT-Int4", base_model="", model_info={})
    warnings = policy_registry_info(policy)["warnings"]
    assert [w.split(":")[0] for w in warnings] == [
        "As a base of full fine-tuning",
        "As a base of continued pre-training",
    ]
    assert "quantized (gptq-int4)" in warnings[0] and "chat model" in warnings[1]
