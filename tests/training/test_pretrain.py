"""Continued pre-training: a plain-text corpus uploaded through the API becomes a text snapshot;
TRL's SFTTrainer does language modelling on it; the candidate has learnt the corpus (its
held-out perplexity falls); a run kind and a snapshot kind that do not fit are a 400."""

from __future__ import annotations

import math
import random

from training.execution import training_run_execute
from training.models import TrainingRun

from .test_reward_runs import URL, judged_round

COLOURS = ["blue", "green", "red", "grey", "gold", "white"]
PLACES = ["marshes", "hills", "coast", "forest", "lakes", "dunes"]


def corpus(documents: int = 120) -> bytes:
    """Documents about an invented animal, in a few fixed sentence shapes: text the tiny model
    has never seen but can learn."""
    rng = random.Random(0)
    out = []
    for _ in range(documents):
        colour, place, count = rng.choice(COLOURS), rng.choice(PLACES), rng.randint(2, 9)
        out.append(f"The zorblat of the {place} is {colour}.\nIt lays {count} eggs.")
    return "\n\n".join(out).encode()


def test_pretraining_on_an_uploaded_corpus_lowers_its_perplexity(api, admin, tiny_policy):
    upload = api(admin).generic(
        "POST", "/api/v1/snapshots/text/?name=zorblats", corpus(), content_type="text/plain"
    )
    assert upload.status_code == 201, upload.content
    snapshot = upload.json()
    assert snapshot["manifest"]["rows"]["eval"] > 0

    recipe = {"use_lora": False, "learning_rate": 0.002, "num_train_epochs": 2.0,
              "per_device_train_batch_size": 8, "max_length": 64,
              "eval_every": 10_000}  # fmt: skip
    response = api(admin).post(
        URL, {"kind": "pretrain", "snapshot": snapshot["id"], "recipe": recipe}, format="json"
    )
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    first_loss = run.metrics_history[0]["loss"]
    assert run.metrics["eval_loss"] < first_loss / 2  # it learnt text it had never seen
    assert run.metrics["eval_perplexity"] == math.exp(run.metrics["eval_loss"])
    candidate = run.produced_policy
    assert candidate.name == f"tiny-v0-pretrain-run{run.pk}" and candidate.status == "candidate"
    assert candidate.parent == tiny_policy and candidate.adapter_path == ""
    assert run.provenance["dataset_sha256"] == snapshot["sha256"]


def test_a_run_needs_a_snapshot_of_its_kind(api, admin, annotator, tiny_policy):
    no_corpus = api(admin).post(URL, {"kind": "pretrain"}, format="json")
    assert no_corpus.status_code == 400
    assert no_corpus.json()["fields"] == {
        "snapshot": [
            "Continued pre-training needs a corpus: upload one to /api/v1/snapshots/text/."
        ]
    }
    text = (
        api(admin)
        .generic("POST", "/api/v1/snapshots/text/", corpus(4), content_type="text/plain")
        .json()
    )
    judged_round(api, annotator, n=3)
    pairs = api(admin).post("/api/v1/snapshots/", {"kind": "preference"}, format="json").json()
    for kind, snapshot, wanted in (("dpo", text, "preference"), ("pretrain", pairs, "text")):
        response = api(admin).post(URL, {"kind": kind, "snapshot": snapshot["id"]}, format="json")
        assert response.status_code == 400
        assert response.json()["fields"] == {
            "snapshot": [
                f"A {kind} run trains on a {wanted} snapshot; snapshot {snapshot['id']} is "
                f"{snapshot['kind']}."
            ]
        }
    missing = api(admin).post(URL, {"kind": "reward", "snapshot": 999999}, format="json")
    assert missing.json()["fields"] == {"snapshot": ["No such snapshot."]}
    assert not TrainingRun.objects.exists()
