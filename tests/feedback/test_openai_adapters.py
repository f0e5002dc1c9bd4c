"""The openai backend against a server with vLLM's runtime adapter routes (the stand-in of
model_server.py, since vLLM cannot run on a CPU): a LoRA version is loaded once under its name at
deploy, rounds and rollbacks request it by that name, a server that lost it is sent it again, a
candidate the gate rejects is unloaded, and what the server cannot serve is refused with what to
do about it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings

from annotation.round_generation import round_generate
from annotation.rounds import round_open_for_policy
from feedback.models import Completion, Deployment, PolicyVersion
from feedback.serving.policies import (
    deployment_request,
    deployment_run,
    policy_register,
    rollback_request,
)

from ..annotation.test_round_generation import synthetic_prompts

pytestmark = pytest.mark.django_db

SERVER = Path(__file__).with_name("model_server.py")


class ModelServer:
    """A running stand-in: its URL, and the requests it has had."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def log(self, path: str | None = None) -> list[dict[str, Any]]:
        entries = httpx.get(f"{self.url}/log").json()
        return [e for e in entries if path is None or e["path"] == path]

    def asked_for(self) -> list[str]:
        """The ``model`` of every chat request, in order."""
        return [e["body"]["model"] for e in self.log("/v1/chat/completions")]

    def loads(self) -> list[dict[str, Any]]:
        return [e["body"] for e in self.log("/v1/load_lora_adapter")]

    def served(self) -> set[str]:
        return {m["id"] for m in httpx.get(f"{self.url}/v1/models").json()["data"]}

    def restart(self) -> None:
        """As a restarted `vllm serve`: the adapters loaded at run time are gone."""
        httpx.post(f"{self.url}/restart", json={})


@pytest.fixture
def model_server(
    settings: Any, tiny_model_path: str, tmp_path: Path
) -> Iterator[Callable[..., ModelServer]]:
    """Start a stand-in serving the tiny model as ``tiny-v0`` (or other ``flags``) and point the
    openai backend, the default for rounds, deploys and the gate, at it."""
    started: list[subprocess.Popen[str]] = []

    def start(*flags: str, model: str | None = None, name: str = "tiny-v0") -> ModelServer:
        model = model or str(Path(django_settings.ARTIFACTS_DIR) / tiny_model_path)
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--model", model, "--served-model-name", name, *flags],
            stdout=subprocess.PIPE, stderr=(tmp_path / "server.log").open("w"), text=True,
        )  # fmt: skip
        started.append(process)
        port = process.stdout.readline().strip()  # its first line, once it listens
        assert port, (tmp_path / "server.log").read_text()
        server = ModelServer(process, int(port))
        settings.GENERATION_BACKEND = "openai"
        settings.OPENAI_BASE_URL = server.url
        settings.GENERATION_RETRIES = 0
        return server

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def adapter(relative: str, tiny_model_path: str, *, trained: bool = False) -> str:
    """A real PEFT LoRA adapter on the tiny model, under the artifacts root; ``trained``: with
    random weights in both matrices, so it moves the model's distribution (the drift sees it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        Path(django_settings.ARTIFACTS_DIR) / tiny_model_path
    )
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=not trained)  # fmt: skip
    get_peft_model(base, config).save_pretrained(Path(django_settings.ARTIFACTS_DIR) / relative)
    return relative


def deploy(policy: PolicyVersion) -> Deployment:
    """The deploy an admin asks for, and the job it enqueues, run here."""
    return deployment_run(deployment_id=deployment_request(policy_id=policy.pk).pk)


def round_texts(limit: int = 2) -> tuple[set[str], list[str]]:
    """A round of the active policy on prompts no round has had (so every completion is new):
    the policy names its completions carry, and their texts."""
    round_ = round_open_for_policy(k=2, overlap=1, tags=["synthetic"], limit=limit)
    round_generate(round_id=round_.pk)
    completions = Completion.objects.filter(tasks__round=round_)
    assert completions.count() == 2 * limit
    return set(completions.values_list("policy_version__name", flat=True)), [
        c.text for c in completions
    ]


def lora_version(name: str, tiny_model_path: str, parent: PolicyVersion) -> PolicyVersion:
    path = adapter(f"adapters/{name}", tiny_model_path)
    return policy_register(name=name, base_model=tiny_model_path, adapter_path=path, parent=parent)


def test_a_lora_version_is_loaded_once_under_its_name_and_rounds_and_rollback_ask_for_it(
    model_server, tiny_policy, tiny_model_path
):
    server = model_server()
    synthetic_prompts(8)
    v1 = lora_version("tiny-v1", tiny_model_path, tiny_policy)
    v2 = lora_version("tiny-v2", tiny_model_path, v1)

    deployment = deploy(v1)
    assert deployment.status == "done", deployment.error
    assert server.loads() == [
        {"lora_name": "tiny-v1",
         "lora_path": str(Path(django_settings.ARTIFACTS_DIR) / "adapters" / "tiny-v1")},
    ]  # fmt: skip
    assert server.asked_for() == ["tiny-v1"]  # the readiness probe asked the adapter itself
    names, texts = round_texts()
    assert names == {"tiny-v1"} and all(t.startswith("tiny-v1 answers") for t in texts)
    assert set(server.asked_for()[1:]) == {"tiny-v1"}

    assert deploy(v2).status == "done"
    before = len(server.asked_for())
    names, texts = round_texts()
    assert names == {"tiny-v2"} and all(t.startswith("tiny-v2 answers") for t in texts)
    assert set(server.asked_for()[before:]) == {"tiny-v2"}

    rollback = deployment_run(deployment_id=rollback_request(policy_id=v2.pk).pk)
    assert rollback.status == "done" and rollback.action == "rollback"
    assert PolicyVersion.objects.get(status="active") == v1
    before = len(server.asked_for())
    names, texts = round_texts()
    assert names == {"tiny-v1"} and all(t.startswith("tiny-v1 answers") for t in texts)
    assert set(server.asked_for()[before:]) == {"tiny-v1"}
    # Each adapter was sent once: the server still held tiny-v1 when it was rolled back to.
    assert [load["lora_name"] for load in server.loads()] == ["tiny-v1", "tiny-v2"]

    server.restart()  # it lost its adapters: the next round sends tiny-v1 again, then asks it
    names, _ = round_texts()
    assert names == {"tiny-v1"} and "tiny-v1" in server.served()
    assert [load["lora_name"] for load in server.loads()] == ["tiny-v1", "tiny-v2", "tiny-v1"]


def test_a_full_weight_version_the_server_does_not_serve_is_refused_with_the_restart_command(
    model_server, tiny_policy, tiny_model_path
):
    server = model_server()
    synthetic_prompts(2)
    other = Path(django_settings.ARTIFACTS_DIR) / "models" / "other-weights"
    other.mkdir(parents=True, exist_ok=True)
    v1 = policy_register(name="other-v1", base_model="models/other-weights", parent=tiny_policy)
    deployment = deploy(v1)
    assert deployment.status == "failed"
    assert f"The server at {server.url} serves tiny-v0, not other-v1" in deployment.error
    assert (
        f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve {other} --served-model-name other-v1 "
        "--enable-lora --max-lora-rank 64" in deployment.error
    )
    assert PolicyVersion.objects.get(status="active") == tiny_policy
    assert server.asked_for() == []  # no probe of a model the server does not serve

    # The same weights under another version name: served, and asked for by the served name.
    again = policy_register(name="tiny-again", base_model=tiny_model_path, parent=tiny_policy)
    assert deploy(again).status == "done"
    assert server.asked_for() == ["tiny-v0"]
    assert round_texts()[0] == {"tiny-again"}


def test_a_server_without_runtime_lora_or_that_answers_as_another_model_is_refused(
    model_server, tiny_policy, tiny_model_path
):
    model_server("--no-runtime-lora")
    v1 = lora_version("tiny-v1", tiny_model_path, tiny_policy)
    deployment = deploy(v1)
    assert deployment.status == "failed"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in deployment.error
    assert "--enable-lora" in deployment.error

    model_server("--answer-as", "tiny-v0")  # a proxy that routes every request to the base
    deployment = deploy(PolicyVersion.objects.get(pk=v1.pk))
    assert deployment.status == "failed"
    assert "was asked for tiny-v1 and answered as 'tiny-v0'" in deployment.error
    assert PolicyVersion.objects.get(status="active") == tiny_policy


@pytest.mark.skipif(
    not hasattr(PolicyVersion, "model_info"), reason="PolicyVersion has no model_info yet"
)
def test_a_gguf_version_is_served_by_a_llama_cpp_server(model_server, tiny_policy):
    gguf = Path(django_settings.ARTIFACTS_DIR) / "models" / "tiny.Q4_K_M.gguf"
    gguf.parent.mkdir(parents=True, exist_ok=True)
    gguf.write_bytes(b"GGUF")  # the stand-in never reads it
    server = model_server("--flavour", "llamacpp", model=str(gguf), name="tiny-gguf")
    synthetic_prompts(2)
    info = {"format": "gguf", "serve_only": True, "path": "models/tiny.Q4_K_M.gguf"}
    served = policy_register(name="tiny-gguf", base_model="models/tiny.Q4_K_M.gguf")
    PolicyVersion.objects.filter(pk=served.pk).update(model_info=info)
    assert deploy(served).status == "done"
    assert round_texts()[0] == {"tiny-gguf"} and set(server.asked_for()) == {"tiny-gguf"}

    other = policy_register(name="other-gguf", base_model="models/other.Q4_K_M.gguf")
    (gguf.parent / "other.Q4_K_M.gguf").write_bytes(b"GGUF")
    PolicyVersion.objects.filter(pk=other.pk).update(
        model_info={**info, "path": "models/other.Q4_K_M.gguf"}
    )
    deployment = deploy(other)
    assert deployment.status == "failed"
    assert f"llama-server -m {gguf.parent / 'other.Q4_K_M.gguf'} --alias other-gguf" in (
        deployment.error
    )


def test_a_candidate_the_gate_rejects_is_unloaded(
    model_server, api, admin, annotator, tiny_policy, tiny_model_path
):
    from training.execution import training_run_execute
    from training.gate import gate_evaluate, gate_request

    from ..training.test_reward_runs import FAST, URL, judged_round

    number = judged_round(api, annotator, n=12, seed=8)
    recipe = {**FAST, "max_steps": 2}
    response = api(admin).post(URL, {"kind": "reward", "rounds": [number], "recipe": recipe},
                               format="json")  # fmt: skip
    reward = training_run_execute(run_id=response.json()["id"])
    assert reward.status == "succeeded", reward.error
    server = model_server()
    path = adapter("adapters/tiny-cand", tiny_model_path, trained=True)
    candidate = policy_register(
        name="tiny-cand", base_model=tiny_model_path, adapter_path=path, parent=tiny_policy
    )
    # A KL limit any candidate with weights of its own exceeds: the gate rejects it.
    gate = gate_request(candidate_id=candidate.pk, reward_run_id=reward.pk, prompts=4,
                        max_kl_drift=1e-6)  # fmt: skip
    gate = gate_evaluate(gate_id=gate.pk)
    # (A two-step reward model may fail it on win rate too; the KL limit fails it in any case.)
    assert gate.status == "failed" and "kl_drift" in gate.metrics["failed_on"]
    assert PolicyVersion.objects.get(pk=candidate.pk).status == "rejected"
    # It was loaded to answer the gate's prompts, under its name, and unloaded once rejected.
    assert [load["lora_name"] for load in server.loads()] == ["tiny-cand"]
    assert set(server.asked_for()) == {"tiny-cand", "tiny-v0"}
    unloads = server.log("/v1/unload_lora_adapter")
    assert [entry["body"]["lora_name"] for entry in unloads] == ["tiny-cand"]
    assert server.served() == {"tiny-v0"}
    assert not Deployment.objects.exists()
    assert PolicyVersion.objects.get(status="active") == tiny_policy
