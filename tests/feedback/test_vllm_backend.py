"""The in-process vLLM backend, with vLLM replaced at its import boundary (it needs a GPU) by a
few classes that record what the platform asks of it: each adapter has its own stable LoRA id,
a new full-weight version replaces the engine only after the old one is shut down and freed, an
adapter above VLLM_MAX_LORA_RANK is refused, and a daemonic worker is told how to run."""

from __future__ import annotations

import json
import multiprocessing
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from annotation.round_generation import round_generate
from annotation.rounds import round_open_for_policy
from feedback.models import Completion, PolicyVersion
from feedback.serving.backends import Target, target_for
from feedback.serving.backends.vllm_backend import (
    HASHED_IDS_FROM,
    WORKER_COMMAND,
    VLLMBackend,
    engine_release,
    lora_int_id,
)
from feedback.serving.policies import (
    deployment_request,
    deployment_run,
    policy_register,
    rollback_request,
)

from ..annotation.test_round_generation import synthetic_prompts

pytestmark = pytest.mark.django_db


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


class SamplingParams:
    def __init__(self, **params: Any) -> None:
        self.n = params["n"]


@dataclass
class Sample:
    text: str
    finish_reason: str
    token_ids: list[int]


@dataclass
class Output:
    prompt_token_ids: list[int]
    outputs: list[Sample]


def fake_vllm(events: list[tuple[Any, ...]]) -> dict[str, types.ModuleType]:
    """The modules the backend imports, recording into ``events``: ("start", model, options),
    ("chat", (lora name, id, path) or None), ("shutdown", model), ("freed", model), ("cleanup",)."""

    class EngineCore:
        def __init__(self, model: str) -> None:
            self.model = model

        def shutdown(self) -> None:
            events.append(("shutdown", self.model))

    class LLMEngine:
        def __init__(self, model: str) -> None:
            self.engine_core = EngineCore(model)

        def remove_lora(self, lora_id: int) -> bool:
            events.append(("remove_lora", lora_id))
            return True

    class LLM:
        def __init__(self, **options: Any) -> None:
            self.model = options["model"]
            events.append(("start", self.model, options))
            self.llm_engine = LLMEngine(self.model)

        def chat(self, prompts: list[Any], params: SamplingParams, *, lora_request: Any = None,
                 use_tqdm: bool = True) -> list[Output]:  # fmt: skip
            lora = lora_request
            events.append(("chat", lora and (lora.lora_name, lora.lora_int_id, lora.lora_path)))
            who = lora.lora_name if lora else Path(self.model).name
            return [
                Output([1, 2, 3], [Sample(f"{who} answer {i}: {p[-1]['content']}", "stop", [7, 8])
                                   for i in range(params.n)])
                for p in prompts
            ]  # fmt: skip

        def __del__(self) -> None:
            events.append(("freed", self.model))

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    parallel_state = types.ModuleType("vllm.distributed.parallel_state")
    parallel_state.cleanup_dist_env_and_memory = lambda: events.append(("cleanup",))
    return {
        "vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request,
        "vllm.distributed": types.ModuleType("vllm.distributed"),
        "vllm.distributed.parallel_state": parallel_state,
    }  # fmt: skip


@pytest.fixture
def engine_events(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Any:
    """What the fake vLLM was asked, in order; rounds and deploys go through the vllm backend."""
    events: list[tuple[Any, ...]] = []
    for name, module in fake_vllm(events).items():
        monkeypatch.setitem(sys.modules, name, module)
    settings.GENERATION_BACKEND = "vllm"
    yield events
    engine_release()  # no engine left over for the next test


def weights(relative: str) -> str:
    folder = Path(django_settings.ARTIFACTS_DIR) / relative
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"")  # the fake engine never reads it
    return relative


def lora(name: str, base: str, parent: PolicyVersion, *, rank: int = 8) -> PolicyVersion:
    folder = Path(django_settings.ARTIFACTS_DIR) / "adapters" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return policy_register(name=name, base_model=base, adapter_path=f"adapters/{name}",
                           parent=parent)  # fmt: skip


def deploy(policy: PolicyVersion) -> Any:
    return deployment_run(deployment_id=deployment_request(policy_id=policy.pk).pk)


def chats(events: list[tuple[Any, ...]]) -> list[Any]:
    return [event[1] for event in events if event[0] == "chat"]


def test_each_adapter_has_its_own_stable_lora_id_and_the_round_comes_from_it(engine_events):
    base = weights("models/base")
    v0 = policy_register(name="base-v0", base_model=base, activate_if_none=True)
    v1, v2 = lora("tiny-v1", base, v0), lora("tiny-v2", base, v0)
    root = Path(django_settings.ARTIFACTS_DIR) / "adapters"
    assert deploy(v1).status == "done" and deploy(v2).status == "done"
    rollback = deployment_run(deployment_id=rollback_request(policy_id=v2.pk).pk)
    assert rollback.status == "done"
    first, second = (("tiny-v1", v1.pk, str(root / "tiny-v1")),
                     ("tiny-v2", v2.pk, str(root / "tiny-v2")))  # fmt: skip
    assert chats(engine_events) == [first, second, first]  # two ids, and v1 kept its own
    assert v1.pk != v2.pk
    # One engine for the base: adapters on it do not restart it.
    assert [event[1] for event in engine_events if event[0] == "start"] == [
        str(Path(django_settings.ARTIFACTS_DIR) / base)
    ]

    synthetic_prompts(2)
    round_ = round_generate(round_id=round_open_for_policy(k=2, overlap=1, tags=["synthetic"]).pk)
    texts = Completion.objects.filter(tasks__round=round_).values_list("text", flat=True)
    assert len(texts) == 4 and all(text.startswith("tiny-v1 answer") for text in texts)
    assert chats(engine_events)[-1] == first
    VLLMBackend().unload(target_for(v2))  # as the gate does with a candidate it rejects
    assert engine_events[-1] == ("remove_lora", v2.pk)

    # Outside the platform (a script's Target with no version): a stable id from the path,
    # in a range of its own, different for another adapter.
    loose = Target(model="m", adapter=str(root / "tiny-v1"))
    assert lora_int_id(loose) == lora_int_id(Target(model="m", adapter=str(root / "tiny-v1")))
    assert lora_int_id(loose) >= HASHED_IDS_FROM
    assert lora_int_id(loose) != lora_int_id(Target(model="m", adapter=str(root / "tiny-v2")))


def test_a_full_weight_swap_frees_the_old_engine_before_the_new_one_starts(engine_events, settings):
    settings.VLLM_GPU_MEMORY_UTILIZATION = 0.5
    settings.VLLM_MAX_MODEL_LEN = 2048
    old, new = weights("models/old"), weights("models/new")
    v0 = policy_register(name="old-v0", base_model=old, activate_if_none=True)
    v1 = policy_register(name="new-v1", base_model=new, parent=v0)
    synthetic_prompts(2)
    round_generate(round_id=round_open_for_policy(k=2, overlap=1, tags=["synthetic"]).pk)
    assert deploy(v1).status == "done"
    old_path, new_path = (str(Path(django_settings.ARTIFACTS_DIR) / m) for m in (old, new))
    order = [event[:2] for event in engine_events if event[0] != "chat"]
    assert order == [
        ("start", old_path), ("shutdown", old_path), ("freed", old_path), ("cleanup",),
        ("start", new_path),
    ]  # fmt: skip
    options = [event for event in engine_events if event[0] == "start"][-1][2]
    assert options["gpu_memory_utilization"] == 0.5 and options["max_model_len"] == 2048
    assert options["enable_lora"] and options["max_lora_rank"] == 64 and options["max_loras"] == 4
    assert options["quantization"] is None and options["tensor_parallel_size"] == 1


def test_an_adapter_above_the_rank_limit_is_refused_naming_the_setting(engine_events):
    base = weights("models/base")
    v0 = policy_register(name="base-v0", base_model=base, activate_if_none=True)
    wide = lora("tiny-wide", base, v0, rank=128)
    deployment = deploy(wide)
    assert deployment.status == "failed"
    assert "rank-128" in deployment.error and "VLLM_MAX_LORA_RANK=64" in deployment.error
    assert chats(engine_events) == []  # the engine never saw it
    assert PolicyVersion.objects.get(status="active") == v0


def _load_in(target: Target, answers: Any) -> None:
    try:
        VLLMBackend().load(target)
        answers.put("loaded")
    except Exception as exc:
        answers.put(str(exc))


def test_a_daemonic_worker_process_is_told_the_worker_command(engine_events):
    """A Celery prefork child is daemonic, and vLLM's engine process would be its child."""
    target = Target(model=str(Path(django_settings.ARTIFACTS_DIR) / weights("models/base")))
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_load_in, args=(target, answers), daemon=True)
    child.start()
    message = answers.get(timeout=120)
    child.join(timeout=60)
    assert WORKER_COMMAND in message and "daemonic" in message
