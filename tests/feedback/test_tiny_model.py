"""The tiny offline model: deterministic for a seed, loadable by transformers, registered as the
first policy; and the oracle that judges the synthetic task."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from feedback.models import PolicyVersion
from feedback.serving import synthetic
from feedback.serving.tiny_model import TinyRecipe, build_tiny_model


def weights_sha(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    recipe = TinyRecipe(pretrain_steps=20, sft_steps=20, corpus_size=500)
    build_tiny_model(tmp_path / "a", recipe, progress=False)
    build_tiny_model(tmp_path / "b", recipe, progress=False)
    build_tiny_model(
        tmp_path / "c",
        TinyRecipe(seed=1, pretrain_steps=20, sft_steps=20, corpus_size=500),
        progress=False,
    )
    assert weights_sha(tmp_path / "a") == weights_sha(tmp_path / "b") != weights_sha(tmp_path / "c")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["recipe"]["seed"] == 0 and meta["versions"]["torch"]
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.django_db
def test_command_builds_registers_and_the_model_chats(tiny_model_path, capsys):
    call_command("build_tiny_model", "--output", tiny_model_path, "--name", "tiny-llama-v0")
    assert "already built" in capsys.readouterr().out
    policy = PolicyVersion.objects.get(name="tiny-llama-v0")
    assert policy.status == "active" and policy.base_model == tiny_model_path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(settings.ARTIFACTS_DIR) / tiny_model_path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of Japan?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt.endswith("<|assistant|>\n")
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, do_sample=False, max_new_tokens=30)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip() and len(answer) < 200


def test_command_refuses_a_path_outside_the_artifacts_root(capsys):
    call_command("build_tiny_model", "--output", "../../elsewhere")
    assert "must stay under ARTIFACTS_DIR" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("question", "answer", "scores"),
    [
        (
            "What is 12 + 7?",
            "12 + 7 = 19. Happy to help!",
            {"helpful": 7, "honest": 7, "harmless": 7},
        ),
        (
            "What is 12 + 7?",
            "It's 18, obviously. Stop wasting my time.",
            {"helpful": 2, "honest": 1, "harmless": 1},
        ),
        ("What is 3 - 9?", "Sure! 3 - 9 is -6.", {"helpful": 7, "honest": 7, "harmless": 7}),
        (
            "What is the capital of Peru?",
            "Ugh. Lima. Look it up yourself.",
            {"helpful": 7, "honest": 7, "harmless": 1},
        ),
        (
            "What is the capital of Peru?",
            "The capital of Peru is Oslo. Happy to help!",
            {"helpful": 2, "honest": 1, "harmless": 7},
        ),
        (
            "What is the capital of Peru?",
            "I like trains.",
            {"helpful": 1, "honest": 4, "harmless": 7},
        ),
    ],
)
def test_oracle_scores(question, answer, scores):
    assert synthetic.oracle_scores(question, answer) == scores


def test_oracle_agrees_with_how_the_corpus_was_made():
    rng = random.Random(3)
    for _ in range(200):
        question = synthetic.question_random(rng)
        correct, polite = rng.random() < 0.5, rng.random() < 0.5
        answer = synthetic.answer_for(question, correct=correct, polite=polite, rng=rng)
        scores = synthetic.oracle_scores(question.text, answer)
        assert (scores["honest"] == 7) == correct, (question, answer)
        assert (scores["harmless"] == 7) == polite, (question, answer)


def test_oracle_ranking_puts_right_and_polite_first_and_groups_ties():
    answers = {
        1: "It's 19, obviously. Stop wasting my time.",
        2: "12 + 7 = 19. Happy to help!",
        3: "The answer is 19. Let me know if you need more help.",
        4: "12 + 7 = 20. Happy to help!",
    }
    assert synthetic.oracle_ranking("What is 12 + 7?", answers) == [[2, 3], [1], [4]]
