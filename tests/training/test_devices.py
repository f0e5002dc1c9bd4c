"""Devices and precision (feedback/serving/devices.py): what ``DEVICE`` picks on this machine,
the load arguments every model loader gets (on a CPU exactly what they were before the helper:
fp32, no device map), and why QLoRA cannot train here. The CUDA-only half (marker ``gpu``,
skipped without a CUDA device) checks the GPU choices and trains a QLoRA DPO candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from feedback.serving.devices import (
    device_placement,
    inference_load_kwargs,
    quantization_refusal,
    training_load_kwargs,
)
from training.trainers.common import load_causal_lm, trainer_arguments
from training.trainers.dpo import DPORecipe
from training.trainers.reward import RewardRecipe

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


@no_cuda
@pytest.mark.parametrize("value", ["auto", "cpu", " CPU "])
def test_without_cuda_auto_and_cpu_mean_the_cpu_in_fp32(settings, value):
    settings.DEVICE = value
    placement = device_placement()
    assert (placement.device, placement.dtype, placement.on_gpu) == ("cpu", torch.float32, False)


@no_cuda
@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:3"])
def test_asking_for_cuda_without_it_is_a_configuration_error_naming_device(settings, value):
    settings.DEVICE = value
    with pytest.raises(
        ImproperlyConfigured, match=rf"DEVICE is '{value}', but this machine has no CUDA"
    ):
        device_placement()


@pytest.mark.parametrize("value", ["tpu", "cuda:x", "gpu", "cuda:", "cuda0", "mps"])
def test_a_value_that_is_no_device_is_a_configuration_error_naming_device(settings, value):
    settings.DEVICE = value
    with pytest.raises(
        ImproperlyConfigured, match=r"DEVICE is .*; it must be auto, cpu, cuda or cuda:N"
    ):
        device_placement()


@no_cuda
def test_on_the_cpu_models_load_as_they_always_did(settings, tmp_path):
    """fp32 and no device map for serving, scoring and drift; fp32 for training; and the
    Trainer on the CPU without mixed precision or gradient checkpointing."""
    settings.DEVICE = "auto"
    assert inference_load_kwargs() == {"dtype": torch.float32}
    assert training_load_kwargs(None, True) == {"dtype": torch.float32}
    assert training_load_kwargs(None, False) == {"dtype": torch.float32}
    arguments = trainer_arguments(RewardRecipe(), tmp_path)
    assert arguments["use_cpu"] is True
    assert (arguments["bf16"], arguments["fp16"], arguments["gradient_checkpointing"]) == (
        False, False, False,
    )  # fmt: skip


@no_cuda
@pytest.mark.parametrize(
    ("device", "why"),
    [("auto", "this machine has no CUDA device (DEVICE=auto)"),
     ("cpu", "this worker trains on the CPU (DEVICE=cpu)")],
)  # fmt: skip
def test_qlora_without_cuda_is_refused_with_the_reason(settings, device, why):
    settings.DEVICE = device
    for quantization in ("4bit", "8bit"):
        assert quantization_refusal(quantization, True) == (
            f"QLoRA (quantization '{quantization}') needs a CUDA GPU and the bitsandbytes package; "
            f"{why}. Train with quantization null (LoRA in full precision) or on a GPU worker."
        )


def test_an_unknown_quantization_or_qlora_without_lora_is_refused():
    assert quantization_refusal(None, True) is None
    assert quantization_refusal(None, False) is None
    assert quantization_refusal("4-bit", True) == "quantization is '4bit', '8bit' or null."
    assert quantization_refusal("gptq", True) == "quantization is '4bit', '8bit' or null."
    assert quantization_refusal("4bit", False) == (
        "QLoRA trains adapters on a quantized base: set use_lora true."
    )


@no_cuda
def test_a_worker_without_cuda_refuses_to_load_a_qlora_base(settings, tiny_model_path):
    """The same reason at the worker, for a run created where a GPU was thought to be."""
    settings.DEVICE = "auto"
    base = str(Path(settings.ARTIFACTS_DIR) / tiny_model_path)
    with pytest.raises(ImproperlyConfigured, match=r"QLoRA \(quantization '4bit'\) needs a CUDA"):
        load_causal_lm(base, DPORecipe(quantization="4bit"))
    model = load_causal_lm(base, DPORecipe())
    assert model.dtype == torch.float32 and model.device.type == "cpu"


# The CUDA-only half.


@pytest.mark.gpu
def test_on_a_gpu_models_load_in_its_precision_and_on_it(settings, tmp_path):
    bf16 = torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16
    settings.DEVICE = "auto"
    placement = device_placement()
    assert placement.on_gpu and placement.device.startswith("cuda:") and placement.dtype == dtype
    assert inference_load_kwargs() == {"dtype": dtype, "device_map": "auto"}
    assert training_load_kwargs(None, True) == {"dtype": dtype}  # the frozen LoRA base
    assert training_load_kwargs(None, False) == {"dtype": torch.float32}  # fp32 master weights
    arguments = trainer_arguments(RewardRecipe(), tmp_path)
    assert (arguments["use_cpu"], arguments["bf16"], arguments["fp16"]) == (False, bf16, not bf16)
    settings.DEVICE = "cuda:0"
    assert inference_load_kwargs() == {"dtype": dtype, "device_map": "cuda:0"}
    settings.DEVICE = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ImproperlyConfigured, match="CUDA device"):
        device_placement()
    settings.DEVICE = "cpu"
    assert inference_load_kwargs() == {"dtype": torch.float32}
    assert trainer_arguments(RewardRecipe(), tmp_path)["use_cpu"] is True


@pytest.mark.gpu
def test_a_round_is_generated_on_the_gpu(settings, tiny_model_path):
    from feedback.serving.backends import Sampling, Target
    from feedback.serving.backends.transformers_backend import TransformersBackend

    settings.DEVICE = "cuda"
    target = Target(model=str(Path(settings.ARTIFACTS_DIR) / tiny_model_path))
    out = TransformersBackend().generate(
        target, [[{"role": "user", "content": "What is 2 + 3?"}]] * 3, n=2,
        sampling=Sampling(temperature=1.0, max_new_tokens=16, seed=1),
    )  # fmt: skip
    assert [len(samples) for samples in out] == [2, 2, 2]
    assert all(sample.completion_tokens for samples in out for sample in samples)


@pytest.mark.gpu
def test_a_qlora_dpo_run_trains_and_saves_an_adapter(api, admin, annotator, tiny_policy):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs the bitsandbytes package")
    from training.execution import training_run_execute

    from .test_reward_runs import TONE_CONSISTENT, URL, judged_round

    number = judged_round(api, annotator, n=12, answers=TONE_CONSISTENT)
    recipe = {"quantization": "4bit", "learning_rate": 5e-4, "max_steps": 4}
    response = api(admin).post(
        URL, {"kind": "dpo", "rounds": [number], "recipe": recipe}, format="json"
    )
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    assert run.progress_step == 4
    folder = Path(django_settings.ARTIFACTS_DIR) / run.artifact_path
    assert (folder / "model" / "adapter_model.safetensors").exists()
    assert json.loads((folder / "meta.json").read_text())["recipe"]["quantization"] == "4bit"
    candidate = run.produced_policy
    assert candidate.status == "candidate" and candidate.base_model == tiny_policy.base_model


@no_cuda
def test_creating_a_qlora_run_without_cuda_is_a_400_with_the_reason(
    settings, api, admin, annotator, tiny_policy
):
    from .test_reward_runs import URL, judged_round

    settings.DEVICE = "auto"
    number = judged_round(api, annotator, n=6)
    for recipe, why in [
        ({"quantization": "4bit"}, "QLoRA (quantization '4bit') needs a CUDA GPU"),
        ({"quantization": "4bit", "use_lora": False}, "set use_lora true"),
        ({"quantization": "3bit"}, "quantization is '4bit', '8bit' or null."),
    ]:
        response = api(admin).post(
            URL, {"kind": "dpo", "rounds": [number], "recipe": recipe}, format="json"
        )
        assert response.status_code == 400, response.content
        assert why in json.dumps(response.json()), response.json()
