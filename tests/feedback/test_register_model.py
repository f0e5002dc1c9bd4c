"""Registering a model one brings: through the command and the API, the files are read (size from
the safetensors headers, dtype, chat template, quantization, context length), not the name; a
registered model generates a round; pickles, a missing hub id and a GGUF file are handled as an
ML engineer expects. Small real models are built offline, the way a user's folder looks."""

from __future__ import annotations

import json
import shutil
import struct
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from annotation.models import ComparisonTask, TaskCompletion
from annotation.round_generation import round_generate
from annotation.rounds import round_open_for_policy
from feedback.models import AuditEvent, Deployment, PolicyVersion
from feedback.serving.model_files import parameters_text
from feedback.serving.policies import deployment_run

from ..annotation.test_round_generation import synthetic_prompts

pytestmark = pytest.mark.django_db

FOLDER = "models/register-test"
CONTEXT = 2048


def build_model(
    tiny_model_path: str, name: str, *, arch: str, chat: bool, shard: str | None = None
) -> tuple[Path, int]:
    """A randomly initialised ``arch`` model of tiny sizes in bfloat16, saved with the tiny
    model's tokenizer (which has a chat template) under ARTIFACTS_DIR/FOLDER/name; with ``chat``
    False the template is removed. Returns the folder and the parameters its files hold."""
    import torch
    from safetensors.torch import load_file
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    folder = Path(settings.ARTIFACTS_DIR) / FOLDER / name
    shutil.rmtree(folder, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(Path(settings.ARTIFACTS_DIR) / tiny_model_path)
    config_class, model_class = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[arch]
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = model_class(config).to(torch.bfloat16)
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    tokenizer.save_pretrained(folder)
    if not chat:
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_config.pop("chat_template", None)
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    parameters = sum(
        tensor.numel()
        for file in folder.glob("*.safetensors")
        for tensor in load_file(file).values()
    )
    return folder, parameters


def pickle_only_folder() -> Path:
    """What an old checkpoint looks like: config.json and a pickled state dict."""
    import torch

    folder = Path(settings.ARTIFACTS_DIR) / FOLDER / "old-checkpoint"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    torch.save({"lm_head.weight": torch.zeros(4, 4)}, folder / "pytorch_model.bin")
    return folder


def gguf_file(name: str = "tiny-Q4_K_M.gguf") -> Path:
    """A valid GGUF file (version 3, no tensors, the architecture as its one key), as the
    format's specification lays it out, so the gguf package reads it too when installed."""
    path = Path(settings.ARTIFACTS_DIR) / FOLDER / name
    path.parent.mkdir(parents=True, exist_ok=True)
    key, value = b"general.architecture", b"llama"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    path.write_bytes(header + kv)
    return path


def register(*args: str) -> str:
    out = StringIO()
    call_command("register_model", *args, stdout=out)
    return out.getvalue()


def said(output: str, label: str) -> str:
    """The value the command printed for ``label`` ("parameters", "chat template", …)."""
    line = next(line for line in output.splitlines() if line.startswith(f"{label}:"))
    return line.split(":", 1)[1].strip()


@pytest.fixture
def qwen(tiny_model_path: str) -> tuple[Path, int]:
    # The name says 7B and chat; the files hold about 0.1M parameters: the files win.
    return build_model(tiny_model_path, "Qwen2-7B-Instruct", arch="qwen2", chat=True)


@pytest.fixture
def llama(tiny_model_path: str) -> tuple[Path, int]:
    # Sharded, as big checkpoints are: the count covers every shard of the index.
    return build_model(tiny_model_path, "Llama-3-8B", arch="llama", chat=False, shard="100KB")


def test_the_command_reads_a_chat_model_from_its_files_not_its_name(qwen):
    folder, parameters = qwen
    output = register(str(folder))

    assert said(output, "registered").startswith("Qwen2-7B-Instruct")
    assert said(output, "family").startswith("qwen")
    assert said(output, "parameters") == parameters_text(parameters) != "7B"
    assert said(output, "dtype") == "bfloat16"
    assert said(output, "quantization") == "none"
    assert said(output, "chat template") == "yes"
    assert said(output, "context length") == str(CONTEXT)
    assert said(output, "serve-only") == "no"
    policy = PolicyVersion.objects.get(name="Qwen2-7B-Instruct")
    assert policy.status == "candidate"
    assert policy.base_model == f"{FOLDER}/Qwen2-7B-Instruct"  # under ARTIFACTS_DIR: relative
    info = policy.model_info
    assert info["parameters"] == parameters < 1e6
    assert info["architectures"] == ["Qwen2ForCausalLM"] and info["model_type"] == "qwen2"
    assert (info["layers"], info["kv_heads"], info["head_dim"]) == (2, 2, 16)
    assert info["format"] == "safetensors" and info["quantization_config"] is None
    # Outside a request, the service writes the audit log's record itself.
    event = AuditEvent.objects.get(action="command:register_model")
    assert event.target["name"] == "Qwen2-7B-Instruct" and event.method == "CLI"


def test_the_api_registers_a_sharded_base_model_and_refuses_a_second_of_the_name(api, admin, llama):
    folder, parameters = llama
    assert (folder / "model.safetensors.index.json").exists()
    response = api(admin).post("/api/v1/policies/", {"source": str(folder)}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "Llama-3-8B" and body["status"] == "candidate"
    assert body["deployment"] is None
    info = body["model_info"]
    assert info["parameters"] == parameters
    assert info["chat_template"] is False
    assert (info["torch_dtype"], info["quantization"]) == ("bfloat16", None)
    assert info["context_length"] == CONTEXT
    assert body["registry"]["parsed"]["family"] == "llama"
    # The request is in the audit log once, as every admin request is.
    assert list(AuditEvent.objects.values_list("action", "method", "status_code")) == [
        ("api:policy-list", "POST", 201)
    ]
    # The list shows the same facts.
    listed = {row["name"]: row for row in api(admin).get("/api/v1/policies/").json()}
    assert listed["Llama-3-8B"]["model_info"] == info

    again = api(admin).post("/api/v1/policies/", {"source": str(folder)}, format="json")
    assert again.status_code == 409
    assert "Llama-3-8B" in again.json()["fields"]["name"][0]


def test_a_registered_model_with_activate_is_deployed_and_generates_a_round(
    api, admin, tiny_policy, qwen
):
    response = api(admin).post(
        "/api/v1/policies/",
        {"source": f"{FOLDER}/Qwen2-7B-Instruct", "name": "qwen-small", "activate": True},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "candidate"  # until the deployment job says it answers
    deployment = deployment_run(deployment_id=response.json()["deployment"])
    assert deployment.status == "done", deployment.error
    qwen_policy = PolicyVersion.objects.get(name="qwen-small")
    assert qwen_policy.status == "active"

    synthetic_prompts(4)
    round_ = round_generate(round_id=round_open_for_policy(k=3, overlap=1, tags=["synthetic"]).pk)
    assert round_.policy_version == qwen_policy
    tasks = ComparisonTask.objects.filter(round=round_)
    assert tasks.exists()
    for task in tasks:
        slots = TaskCompletion.objects.filter(task=task).select_related("completion")
        assert slots.count() == 3
        assert {s.completion.policy_version.name for s in slots} == {"qwen-small"}


def test_activate_deploys_through_the_backend_even_when_nothing_serves(qwen):
    """A model nobody ran here yet serves only once the backend answered with it."""
    folder, _ = qwen
    output = register(str(folder), "--activate", "--name", "first")
    deployment = Deployment.objects.get()
    assert said(output, "registered").startswith(
        f"first (id {deployment.policy_version_id}): candidate; deployment {deployment.pk} requested"
    )
    assert deployment_run(deployment_id=deployment.pk).status == "done"
    assert PolicyVersion.objects.get(status="active").name == "first"


def test_pickled_weights_are_refused_by_the_command_and_the_api(api, admin):
    folder = pickle_only_folder()
    with pytest.raises(CommandError, match=r"only pickled weights \(pytorch_model\.bin\)"):
        register(str(folder))
    response = api(admin).post("/api/v1/policies/", {"source": str(folder)}, format="json")
    assert response.status_code == 400
    reason = response.json()["fields"]["source"][0]
    assert "pytorch_model.bin" in reason and "unpickling runs code" in reason
    assert "safe_serialization=True" in reason
    assert not PolicyVersion.objects.exists()


def test_a_hub_id_missing_from_the_cache_is_refused_naming_it(api, admin, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CommandError) as refused:
        register("Qwen/Qwen2.5-7B-Instruct")
    message = str(refused.value)
    assert "Qwen/Qwen2.5-7B-Instruct is not in the local Hugging Face cache" in message
    assert str(tmp_path / "hf" / "hub") in message
    assert "hf download Qwen/Qwen2.5-7B-Instruct" in message
    response = api(admin).post(
        "/api/v1/policies/", {"source": "Qwen/Qwen2.5-7B-Instruct"}, format="json"
    )
    assert response.status_code == 400
    assert "not in the local Hugging Face cache" in response.json()["fields"]["source"][0]


def test_a_hub_id_in_the_local_cache_is_registered_at_its_commit(
    api, admin, llama, monkeypatch, tmp_path
):
    """The cache laid out as huggingface_hub lays it out: models--org--name/snapshots/<sha>/
    with refs/main naming the commit."""
    folder, parameters = llama
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--Llama-3-8B"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    output = register("acme/Llama-3-8B", "--revision", "main")
    assert said(output, "registered").startswith("acme/Llama-3-8B")
    assert said(output, "chat template") == "no"
    policy = PolicyVersion.objects.get(name="acme/Llama-3-8B")
    assert (policy.base_model, policy.revision) == ("acme/Llama-3-8B", commit)
    assert policy.model_info["parameters"] == parameters
    assert policy.model_info["source"] == "acme/Llama-3-8B"
    response = api(admin).post(
        "/api/v1/policies/", {"source": "acme/Llama-3-8B", "name": "pinned"}, format="json"
    )
    assert response.status_code == 201 and response.json()["revision"] == commit


def test_a_gguf_file_is_registered_serve_only(api, admin):
    path = gguf_file()
    response = api(admin).post(
        "/api/v1/policies/",
        {"source": str(path.relative_to(settings.ARTIFACTS_DIR))},
        format="json",
    )
    assert response.status_code == 201, response.content
    info = response.json()["model_info"]
    assert info["format"] == "gguf" and info["serve_only"] is True
    assert info["quantization"] == "gguf-q4_k_m"
    output = register(str(path), "--name", "tiny-gguf-cli")
    assert said(output, "serve-only").startswith("yes")


def test_an_adapter_is_recorded_with_its_base_and_a_pickled_one_refused(api, admin, qwen):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder, _ = qwen
    adapter = folder.parent / "qwen-lora"
    model = AutoModelForCausalLM.from_pretrained(folder)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(adapter)
    response = api(admin).post(
        "/api/v1/policies/", {"source": str(folder), "adapter": str(adapter)}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "qwen-lora"
    assert body["adapter_path"] == f"{FOLDER}/qwen-lora"
    assert body["model_info"]["adapter"]["r"] == 4
    assert body["model_info"]["adapter"]["base_model"] == str(folder)

    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    refused = api(admin).post(
        "/api/v1/policies/",
        {"source": str(folder), "adapter": str(adapter), "name": "again"},
        format="json",
    )
    assert refused.status_code == 400
    assert "adapter_model.bin" in refused.json()["fields"]["adapter"][0]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"source": "x", "revison": "main"}, "revison", "Unknown field"),
        ({"name": "no-source"}, "source", "required"),
        ({"source": "/etc"}, "source", "MODEL_DIRS"),
        ({"source": "../../etc"}, "source", "MODEL_DIRS"),
        ({"source": "models/missing-model"}, "source", "not in the local Hugging Face"),
    ],
)
def test_bad_bodies_and_sources_are_400s_naming_the_field(
    api, admin, body, field, reason, monkeypatch, tmp_path
):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    response = api(admin).post("/api/v1/policies/", body, format="json")
    assert response.status_code == 400, response.content
    assert reason in " ".join(response.json()["fields"][field])


def test_only_admins_register(api, researcher, annotator, qwen):
    folder, _ = qwen
    for user in (researcher, annotator):
        response = api(user).post("/api/v1/policies/", {"source": str(folder)}, format="json")
        assert response.status_code == 403
    assert not PolicyVersion.objects.exists()


def test_a_folder_outside_the_allowed_roots_names_the_setting(
    tmp_path, settings, qwen, monkeypatch
):
    folder, _ = qwen
    outside = tmp_path / "Qwen2-7B-Instruct"
    shutil.copytree(folder, outside)
    with pytest.raises(CommandError, match="add the model's folder to MODEL_DIRS"):
        register(str(outside))
    settings.MODEL_DIRS = [str(tmp_path)]
    # At a shell, a relative path is the current directory's.
    monkeypatch.chdir(tmp_path)
    output = register("Qwen2-7B-Instruct")
    assert said(output, "chat template") == "yes"
    assert said(output, "weights") == str(outside)  # in MODEL_DIRS: kept absolute


def test_a_gptq_checkpoint_counts_its_packed_weights_not_its_int32_words(api, admin, qwen):
    """GPTQ packs eight 4-bit weights into each int32 of ``qweight``; scales, zero points and
    group indices are bookkeeping. The size the page shows is the model's, not the words'."""
    import torch
    from safetensors.torch import save_file

    folder = Path(settings.ARTIFACTS_DIR) / FOLDER / "Qwen1.5-14B-Chat-GPTQ-Int4"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(qwen[0], folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 64}
    (folder / "config.json").write_text(json.dumps(config))
    layer = "model.layers.0.self_attn.q_proj"
    save_file(
        {
            "model.embed_tokens.weight": torch.zeros(100, 64, dtype=torch.float16),
            f"{layer}.qweight": torch.zeros(64 // 8, 64, dtype=torch.int32),
            f"{layer}.scales": torch.zeros(1, 64, dtype=torch.float16),
            f"{layer}.qzeros": torch.zeros(1, 64 // 8, dtype=torch.int32),
            f"{layer}.g_idx": torch.zeros(64, dtype=torch.int32),
        },
        folder / "model.safetensors",
    )
    response = api(admin).post("/api/v1/policies/", {"source": str(folder)}, format="json")
    assert response.status_code == 201, response.content
    info = response.json()["model_info"]
    assert info["quantization"] == "gptq-int4"
    assert info["quantization_config"]["group_size"] == 64
    assert info["parameters"] == 100 * 64 + 64 * 64


@pytest.mark.parametrize(
    ("config", "name"),
    [
        (None, None),
        ({"quant_method": "gptq", "bits": 8}, "gptq-int8"),
        ({"quant_method": "awq", "bits": 4, "version": "gemm"}, "awq"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bnb-4bit"),
        ({"quant_method": "bitsandbytes", "_load_in_8bit": True}, "bnb-8bit"),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8"),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}},
            },
            "fp8",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}},
            },
            "w4a16",
        ),
        ({"quant_method": "hqq"}, "hqq"),
    ],
)
def test_quantization_configs_read_in_the_registry_words(config, name):
    from feedback.serving.model_files import quantization_name

    assert quantization_name(config) == name
