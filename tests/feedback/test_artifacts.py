"""Artifacts: weights come only from the artifacts root (or a folder the operator allows), only as
safetensors, and a model server URL only from an allowed host."""

from __future__ import annotations

import pytest

from feedback.serving.backends import (
    BackendUnavailable,
    model_server_check,
    require_safetensors,
    resolve_model_path,
)
from feedback.serving.backends.openai_backend import OpenAIBackend


def test_model_references_stay_under_the_allowed_roots(settings, tmp_path):
    root = tmp_path / "artifacts"
    (root / "models" / "mine").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "models" / "escape").symlink_to(outside)
    settings.ARTIFACTS_DIR = str(root)
    settings.MODEL_DIRS = []

    assert resolve_model_path("models/mine") == str(root / "models" / "mine")
    assert resolve_model_path(str(root / "models" / "mine")) == str(root / "models" / "mine")
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    for hostile in ["../elsewhere", "models/../../elsewhere", str(outside), "/etc", "models/escape",
                    "org/name/../../x", "~/.ssh", ""]:  # fmt: skip
        with pytest.raises(BackendUnavailable):
            resolve_model_path(hostile)

    settings.MODEL_DIRS = [str(outside)]  # the operator allows a folder of weights
    assert resolve_model_path(str(outside)) == str(outside)


def test_pickled_weights_are_refused_and_safetensors_load(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    safe = tmp_path / "safe"
    model.save_pretrained(safe)  # safetensors, the default and what our trainers write
    assert require_safetensors(str(safe)) == str(safe)
    # What loads is what was saved: the same architecture, and every weight equal (a loader that
    # found no matching tensors would hand back freshly initialised ones, and only warn).
    loaded = AutoModelForCausalLM.from_pretrained(safe, use_safetensors=True)
    assert type(loaded) is LlamaForCausalLM
    shape = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")
    assert [getattr(loaded.config, key) for key in shape] == [64, 16, 32, 1]
    saved, got = model.state_dict(), loaded.state_dict()
    assert sorted(got) == sorted(saved)
    unequal = [name for name in saved if not torch.equal(got[name], saved[name])]
    assert not unequal, f"loaded weights differ from the saved ones: {unequal}"

    # The same weights as a pickle (what torch.save and old checkpoints make).
    pickled = tmp_path / "pickled"
    config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(BackendUnavailable, match="safetensors"):
        require_safetensors(str(pickled))
    with pytest.raises(OSError):  # how every loader of ours calls from_pretrained
        AutoModelForCausalLM.from_pretrained(pickled, use_safetensors=True)


def test_model_server_urls_come_from_allowed_hosts_only(settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:8001"
    settings.MODEL_SERVER_HOSTS = ["127.0.0.1", "localhost"]
    assert model_server_check("http://localhost:9000/v1") == "http://localhost:9000/v1"
    for hostile in ["http://169.254.169.254/latest/meta-data/", "file:///etc/passwd",
                    "gopher://127.0.0.1:6379/", "http://intranet.example:80/", "http://"]:  # fmt: skip
        with pytest.raises(BackendUnavailable):
            model_server_check(hostile)
    with pytest.raises(BackendUnavailable, match="MODEL_SERVER_HOSTS"):
        OpenAIBackend(base_url="http://10.0.0.8:8000")

    settings.OPENAI_BASE_URL = "https://vllm.internal:8443"  # the configured server is allowed
    assert OpenAIBackend().base_url == "https://vllm.internal:8443"
    settings.MODEL_SERVER_HOSTS = ["10.0.0.8:8000"]
    assert OpenAIBackend(base_url="http://10.0.0.8:8000").base_url == "http://10.0.0.8:8000"
