"""What may be the base of a training run, checked when the run is created: weights on this
machine, in safetensors, inside the artifacts root, a MODEL_DIRS folder or the Hugging Face
cache (an imported model's name is not weights); not a GGUF file; not a quantized model under
full fine-tuning; QLoRA only with CUDA. A chat base for continued pre-training and a quantized
base under LoRA are accepted with the registry's warnings, which the run keeps and shows."""

from __future__ import annotations

import json
import os
from html import escape as html_escape
from pathlib import Path

import pytest
from django.conf import settings

from annotation.imports import prompts_import
from feedback.models import PolicyVersion
from feedback.platform.errors import DomainError
from feedback.serving.policies import policy_register_model
from training.models import DatasetSnapshot, TrainingRun
from training.runs import training_run_create

from ..feedback.test_register_model import build_model, gguf_file, pickle_only_folder
from ..racing import race
from .test_pretrain import corpus
from .test_reward_runs import URL, judged_round

pytestmark = pytest.mark.django_db


def text_snapshot(api, admin) -> int:
    upload = api(admin).generic(
        "POST", "/api/v1/snapshots/text/?name=zorblats", corpus(20), content_type="text/plain"
    )
    assert upload.status_code == 201, upload.content
    return upload.json()["id"]


def quantized_model(tiny_model_path: str) -> PolicyVersion:
    """A model whose config says GPTQ 4-bit, as a GPTQ export's does (its tensors are the tiny
    model's: the registry reads the config, and nothing here loads it)."""
    folder, _ = build_model(tiny_model_path, "Qwen2-0.5B-GPTQ-Int4", arch="qwen2", chat=True)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (folder / "config.json").write_text(json.dumps(config))
    return policy_register_model(source=str(folder), name="qwen2-gptq")


def create(api, admin, policy: PolicyVersion, kind: str, recipe: dict, **more):
    body = {"kind": kind, "base_policy": policy.pk, "recipe": recipe, **more}
    return api(admin).post(URL, body, format="json")


def test_a_chat_base_for_continued_pretraining_is_accepted_with_the_warning(
    api, admin, tiny_model_path, client
):
    folder, _ = build_model(tiny_model_path, "Qwen2-0.5B-Instruct", arch="qwen2", chat=True)
    chat = policy_register_model(source=str(folder), name="qwen2-chat")
    response = create(
        api, admin, chat, "pretrain", {"use_lora": True}, snapshot=text_snapshot(api, admin)
    )
    assert response.status_code == 202, response.content
    warnings = response.json()["warnings"]
    assert len(warnings) == 1
    assert (
        "is a chat model; continued pre-training on raw text wears its chat tuning" in warnings[0]
    )
    assert TrainingRun.objects.get(pk=response.json()["id"]).warnings == warnings

    client.force_login(admin)
    page = client.get(f"/manage/training/{response.json()['id']}/").content.decode()
    assert "the registry said of its base" in page and "is a chat model" in page

    # A base model (no chat template) for the same run: nothing to say.
    folder, _ = build_model(tiny_model_path, "Llama-tiny", arch="llama", chat=False)
    base = policy_register_model(source=str(folder), name="llama-base")
    response = create(
        api, admin, base, "pretrain", {"use_lora": True}, snapshot=text_snapshot(api, admin)
    )
    assert response.status_code == 202 and response.json()["warnings"] == []


def test_a_quantized_base_trains_only_adapters(api, admin, tiny_model_path):
    quantized = quantized_model(tiny_model_path)
    snapshots = DatasetSnapshot.objects.count()
    full = create(api, admin, quantized, "dpo", {"use_lora": False})
    assert full.status_code == 400
    why = full.json()["fields"]["base_policy"][0]
    assert "quantized (gptq-int4): its weights cannot be fully fine-tuned" in why
    assert DatasetSnapshot.objects.count() == snapshots  # refused before any snapshot was cut

    lora = create(
        api, admin, quantized, "pretrain", {"use_lora": True}, snapshot=text_snapshot(api, admin)
    )
    assert lora.status_code == 202, lora.content
    assert any("only the adapters train" in w for w in lora.json()["warnings"])


def test_a_gguf_file_is_never_a_training_base(api, admin):
    served = policy_register_model(source=str(gguf_file()), name="llama-gguf")
    response = create(api, admin, served, "sft", {"use_lora": True})
    assert response.status_code == 400
    assert (
        "GGUF file: it serves through a llama.cpp server"
        in response.json()["fields"]["base_policy"][0]
    )


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("../../etc/passwd", "is neither a folder under the artifacts root nor a hub id"),
        ("/etc/passwd", "outside the artifacts root"),
        ("models/link-to-etc", "leads out of the artifacts root"),
        ("models/register-test/old-checkpoint", "only pickled weights"),
        ("gpt-4o", "not in the local Hugging Face cache"),
    ],
)
def test_an_imported_models_name_is_not_a_training_base(
    api, admin, tiny_policy, monkeypatch, tmp_path, model, reason
):
    """The attack of issue 18: completions imported under a hostile model name register an
    external version; naming it as a run's base was a 202 and a snapshot."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    pickle_only_folder()
    link = Path(settings.ARTIFACTS_DIR) / "models" / "link-to-etc"
    if not link.is_symlink():
        os.symlink("/etc", link)
    line = {"prompt": "What is 2+2?", "completions": [{"text": "4", "model": model}]}
    prompts_import(lines=[json.dumps(line)])
    external = PolicyVersion.objects.get(name=model)
    snapshots = DatasetSnapshot.objects.count()

    response = create(api, admin, external, "reward", {})
    assert response.status_code == 400, response.content
    why = response.json()["fields"]["base_policy"][0]
    assert why.startswith(f"{model} cannot be a training base:") and reason in why
    assert DatasetSnapshot.objects.count() == snapshots and not TrainingRun.objects.exists()


def test_qlora_is_refused_without_cuda_unless_the_workers_have_it(
    api, admin, tiny_policy, settings
):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA is allowed here")
    response = create(api, admin, tiny_policy, "dpo", {"quantization": "4bit"})
    assert response.status_code == 400
    assert "needs a CUDA GPU" in response.json()["fields"]["recipe.quantization"][0]
    # A web tier on a CPU in front of GPU workers: the recipe is checked, the machine trusted.
    settings.TRAINING_WORKERS_HAVE_CUDA = True
    full = create(api, admin, tiny_policy, "dpo", {"quantization": "4bit", "use_lora": False})
    assert full.json()["fields"]["recipe.quantization"] == [
        "QLoRA trains adapters on a quantized base: set use_lora true."
    ]
    queued = create(
        api,
        admin,
        tiny_policy,
        "pretrain",
        {"quantization": "4bit"},
        snapshot=text_snapshot(api, admin),
    )
    assert queued.status_code == 202, queued.content


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_of_two_runs_asked_at_once_on_one_base_the_loser_cuts_no_snapshot(
    api, admin, annotator, tiny_policy
):
    """The second request waits on the base's row, then gets its 409 without cutting a snapshot
    that no run would own (issue 18: it used to leave one behind)."""
    number = judged_round(api, annotator, n=6, seed=3)
    snapshots = DatasetSnapshot.objects.count()
    folders = Path(settings.ARTIFACTS_DIR) / "snapshots"
    on_disk = set(folders.iterdir()) if folders.is_dir() else set()

    def ask() -> object:
        try:
            run = training_run_create(
                kind="reward", rounds=[number], base_policy_id=tiny_policy.pk, enqueue=False
            )
        except DomainError as exc:
            return exc.status
        return run.status

    assert race(2, ask) == {"queued": 1, 409: 1}
    assert DatasetSnapshot.objects.count() == snapshots + 1
    snapshot = TrainingRun.objects.get().snapshot
    assert snapshot == DatasetSnapshot.objects.latest("id")
    assert set(folders.iterdir()) - on_disk == {folders / Path(snapshot.path).name}


@pytest.mark.parametrize(
    ("name", "said"),
    [
        (
            "Qwen1.5-14B-Chat-GPTQ-Int4",
            [
                "full fine-tuning: Qwen1.5-14B-Chat-GPTQ-Int4 is quantized",
                "continued pre-training: Qwen1.5-14B-Chat-GPTQ-Int4 is a chat model",
            ],
        ),
        (
            "Qwen1.5-14B-Chat-GQPT-Int4",
            [
                "full fine-tuning: Qwen1.5-14B-Chat-GQPT-Int4 is quantized (gptq-int4)",
                "continued pre-training: Qwen1.5-14B-Chat-GQPT-Int4 is a chat model",
            ],
        ),
        ("Mistral-7B-v0.3-AWQ", ["full fine-tuning: Mistral-7B-v0.3-AWQ is quantized (awq)"]),
        (
            "Meta-Llama-3-8B-Instruct",
            ["continued pre-training: Meta-Llama-3-8B-Instruct is a chat model"],
        ),
        ("Meta-Llama-3-8B", []),
    ],
)
def test_the_warnings_reach_the_policies_page_and_the_api(api, admin, client, name, said):
    PolicyVersion.objects.create(name=name, status=PolicyVersion.Status.EXTERNAL)
    listed = {p["name"]: p for p in api(admin).get("/api/v1/policies/").json()}
    warnings = listed[name]["registry"]["warnings"]
    assert len(warnings) == len(said)
    for expected, line in zip(said, warnings, strict=True):
        assert expected in line
    client.force_login(admin)
    page = client.get("/manage/policies/").content.decode()
    for line in warnings:
        assert html_escape(line) in page
