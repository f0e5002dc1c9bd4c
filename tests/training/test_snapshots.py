"""Dataset snapshots: one consensus per task judged several times, KTO rows, plain-text corpora
uploaded through the API, the split by hash, immutability, and the errors a client sees."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from django.conf import settings

from annotation.exports import ExportFilters, export_rows
from annotation.imports import prompts_import
from annotation.models import Judgment
from annotation.rounds import round_open_from_imported
from feedback.models import Completion
from feedback.serving import synthetic
from training.models import DatasetSnapshot
from training.snapshots import (
    KTO_COLUMNS,
    TRAINING_COLUMNS,
    is_eval,
    snapshot_create_kto,
    snapshot_create_preference,
    snapshot_create_sft,
)

from ..annotation.helpers import lease, submit_url
from ..annotation.test_export_formats import data  # noqa: F401

SNAPSHOTS = "/api/v1/snapshots/"


def twice_judged_round(api, first, second, n: int) -> int:
    """n prompts with three answers (right and polite, wrong and polite, right and rude), each
    judged by two annotators: the first ranks as the oracle does, the second ranks in reverse."""
    lines = []
    for text in synthetic.prompts(n, seed=31):
        kind = "capital" if "capital" in text else "arithmetic"
        question = synthetic.Question(text, synthetic.expected_answer(text), kind)
        rng = random.Random(text)
        answers = [
            synthetic.answer_for(question, correct=True, polite=True, rng=rng),
            synthetic.answer_for(question, correct=False, polite=True, rng=rng),
            synthetic.answer_for(question, correct=True, polite=False, rng=rng),
        ]
        completions = [{"text": a, "model": "synthetic"} for a in answers]
        lines.append(json.dumps({"prompt": text, "completions": completions}))
    prompts_import(lines=lines)
    round_, _ = round_open_from_imported(k=3, overlap=2, seed=1)
    for user, reverse in ((first, False), (second, True)):
        client = api(user)
        while (task := lease(client)) is not None:
            question = task["prompt"]["messages"][-1]["content"]
            texts = {c["id"]: c["text"] for c in task["completions"]}
            ranking = synthetic.oracle_ranking(question, texts)
            body = {
                "ranking": ranking[::-1] if reverse else ranking,
                "scores": {str(c): synthetic.oracle_scores(question, t) for c, t in texts.items()},
                "strength": "better" if len(ranking[0]) == 1 else "",
                "time_spent_ms": 1000,
            }
            response = client.post(submit_url(task["assignment"]), body, format="json")
            assert response.status_code == 200, response.content
    return round_.number


def rows_of(snapshot: dict) -> list[dict]:
    folder = Path(settings.ARTIFACTS_DIR) / snapshot["path"]
    return [
        json.loads(line)
        for split in ("train", "eval")
        for line in (folder / f"{split}.jsonl").read_text().splitlines()
    ]


def test_a_task_judged_twice_gives_one_consensus_not_both_opinions(
    api, admin, annotator, annotator2, tiny_policy
):
    number = twice_judged_round(api, annotator, annotator2, n=8)
    # Every judgment on its own: 3 pairs each, and each pair appears in both directions.
    each = api(admin).post(SNAPSHOTS, {"kind": "preference", "consensus": "none"}, format="json")
    assert each.status_code == 201, each.content
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows_of(each.json())]
    assert len(pairs) == 8 * 2 * 3 and all((b, a) in pairs for a, b in pairs)
    # Reversed rankings of equal weight cancel: the Bradley-Terry consensus orders nothing.
    tied = api(admin).post(SNAPSHOTS, {"kind": "preference", "rounds": [number]}, format="json")
    assert tied.status_code == 400 and "No preference pairs" in tied.json()["detail"]
    # Per-axis pairs come from the two annotators' mean scores, which agree (same oracle scores).
    axis = api(admin).post(SNAPSHOTS, {"kind": "preference", "axis": "harmless"}, format="json")
    assert axis.status_code == 201, axis.content
    rows = rows_of(axis.json())
    assert len(rows) == 8 * 2  # the rude answer against each polite one, once per task
    for row in rows:
        question = row["prompt"][-1]["content"]
        chosen, rejected = (
            synthetic.oracle_scores(question, row[side][0]["content"])["harmless"]
            for side in ("chosen", "rejected")
        )
        assert chosen > rejected and row["margin"] == round((chosen - rejected) / 6, 4)
    assert axis.json()["filters"]["consensus"] == "bradley_terry"


def test_kto_rows_label_the_best_desirable_and_the_worst_not(api, admin, annotator, tiny_policy):
    from .test_reward_runs import judged_round

    judged_round(api, annotator, n=6)
    response = api(admin).post(SNAPSHOTS, {"kind": "kto"}, format="json")
    assert response.status_code == 201, response.content
    snapshot = response.json()
    assert snapshot["manifest"]["columns"] == ["prompt", "completion", "label"]
    rows = rows_of(snapshot)
    assert len(rows) == 6 * 2  # the middle answer of three says nothing on its own
    folder = Path(settings.ARTIFACTS_DIR) / snapshot["path"]
    for split in ("train", "eval"):  # a prompt's hash decides its split: never in both
        for line in (folder / f"{split}.jsonl").read_text().splitlines():
            assert is_eval(json.loads(line)["prompt"], 0.1) == (split == "eval")
    for row in rows:
        question = row["prompt"][-1]["content"]
        scores = synthetic.oracle_scores(question, row["completion"][0]["content"])
        assert (scores["honest"] == 7 and scores["harmless"] == 7) == row["label"]


def _stored(snapshot: DatasetSnapshot) -> list[dict]:
    """A snapshot cut with eval_fraction 0: every row is in train."""
    folder = Path(settings.ARTIFACTS_DIR) / snapshot.path
    assert (folder / "eval.jsonl").read_text() == ""
    return [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]


def test_training_snapshots_hold_the_rows_the_export_gives(db, data):  # noqa: F811
    # One road: a snapshot is the export's rows, cut to the columns its trainer reads.
    def exported(fmt: str, columns: tuple[str, ...], **filters: str) -> list[dict]:
        rows = export_rows(fmt=fmt, filters=ExportFilters(**filters))
        return [{key: row[key] for key in columns} for row in rows]

    for axis, consensus in (("", "none"), ("helpful", "none"), ("", "bradley_terry"),
                            ("honest", "bradley_terry")):  # fmt: skip
        snapshot = snapshot_create_preference(
            axis=axis or None, consensus=consensus, eval_fraction=0.0
        )
        assert _stored(snapshot) == exported("trl", TRAINING_COLUMNS, axis=axis,
                                             consensus=consensus)  # fmt: skip
    kto = _stored(snapshot_create_kto(eval_fraction=0.0))
    assert kto == exported("kto", KTO_COLUMNS, consensus="bradley_terry")


def test_an_sft_snapshot_holds_demonstrations_then_top_ranked_answers(api, data):  # noqa: F811
    prompt = Judgment.objects.filter(task__round__number=2).first().task.prompt
    for text in ("Hello there!", "Hello."):
        body = {"prompt": prompt.pk, "text": text}
        assert (
            api(data.first).post("/api/v1/demonstrations/", body, format="json").status_code == 201
        )
    rows = _stored(snapshot_create_sft(top_ranked=True, eval_fraction=0.0))

    def row(messages: list[dict], answer: str) -> dict:
        return {"prompt": messages, "completion": [{"role": "assistant", "content": answer}]}

    # Every judgment in data puts one answer first, a task at a time in the order judged.
    judgments = Judgment.objects.select_related("task__prompt").order_by("task_id", "created_at")
    best = [row(j.task.prompt.messages, Completion.objects.get(pk=j.ranking[0][0]).text)
            for j in judgments]  # fmt: skip
    assert rows == [row(prompt.messages, "Hello there!"), row(prompt.messages, "Hello."), *best]
    assert len(best) == 5


CORPUS = (
    "The zorblat is a blue bird of the northern marshes.\n"
    "It sings at dawn.\n"
    "\n"
    "Zorblats nest in reeds and eat small fish.\n"
    "\n\n"
    "A zorblat egg is pale green.\n"
)


def test_a_corpus_uploads_as_documents_split_by_hash_and_is_never_rewritten(api, admin):
    response = api(admin).generic(
        "POST", f"{SNAPSHOTS}text/?name=zorblats&eval_fraction=0.3", CORPUS.encode(),
        content_type="text/plain",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "text" and body["filters"]["corpus"] == "zorblats"
    documents = sorted(r["text"] for r in rows_of(body))
    assert documents == sorted([
        "The zorblat is a blue bird of the northern marshes.\nIt sings at dawn.",
        "Zorblats nest in reeds and eat small fish.",
        "A zorblat egg is pale green.",
    ])  # fmt: skip
    folder = Path(settings.ARTIFACTS_DIR) / body["path"]
    for split in ("train", "eval"):
        for line in (folder / f"{split}.jsonl").read_text().splitlines():
            assert is_eval(json.loads(line)["text"], 0.3) == (split == "eval")
    digest = hashlib.sha256(
        (folder / "train.jsonl").read_bytes() + (folder / "eval.jsonl").read_bytes()
    ).hexdigest()
    assert body["sha256"] == digest == body["manifest"]["sha256"]
    # The same corpus again is a new snapshot in a new folder; the first is untouched.
    again = (
        api(admin)
        .post(
            f"{SNAPSHOTS}text/",
            {"file": _upload("zorblats.txt", CORPUS.encode())},
            format="multipart",
        )
        .json()
    )
    assert again["id"] != body["id"] and again["path"] != body["path"]
    assert again["sha256"] == body["sha256"] and again["filters"]["corpus"] == "zorblats.txt"
    assert DatasetSnapshot.objects.get(pk=body["id"]).sha256 == digest
    assert (
        digest
        == hashlib.sha256(
            (folder / "train.jsonl").read_bytes() + (folder / "eval.jsonl").read_bytes()
        ).hexdigest()
    )


def _upload(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="text/plain")


def test_a_bad_corpus_is_a_400_naming_the_line_and_writes_nothing(api, admin):
    def post(content: bytes, query: str = "") -> dict:
        response = api(admin).generic(
            "POST", f"{SNAPSHOTS}text/{query}", content, content_type="text/plain"
        )
        assert response.status_code == 400, response.content
        return response.json()

    assert post(b"fine\n\xff\xfe broken\n")["fields"] == {"file": ["Line 2 is not UTF-8 (byte 1)."]}
    assert post(b"a\nb\x00c\n")["fields"] == {"file": ["Line 2 holds a NUL character."]}
    assert post(b"\n\n  \n")["fields"] == {"file": ["The corpus has no text."]}
    assert post(b"text", "?eval_fraction=2")["fields"] == {
        "eval_fraction": ["A number from 0 to 0.9."]
    }
    missing = api(admin).post(f"{SNAPSHOTS}text/", {}, format="multipart")
    assert missing.status_code == 400 and missing.json()["fields"] == {
        "file": ["No file was submitted."]
    }
    assert not DatasetSnapshot.objects.exists()
    # A failed upload leaves no half-written folder behind.
    assert not list((Path(settings.ARTIFACTS_DIR) / "snapshots").glob("*.partial"))


def test_snapshot_requests_are_checked_and_roles_apply(api, admin, researcher, annotator):
    bad = api(admin).post(SNAPSHOTS, {"kind": "preference", "consensus": "vote"}, format="json")
    assert bad.status_code == 400 and list(bad.json()["fields"]) == ["consensus"]
    bad = api(admin).post(SNAPSHOTS, {"kind": "preference", "axis": "funny"}, format="json")
    assert bad.status_code == 400 and list(bad.json()["fields"]) == ["axis"]
    bad = api(admin).post(SNAPSHOTS, {"kind": "text"}, format="json")
    assert bad.status_code == 400 and list(bad.json()["fields"]) == ["kind"]
    assert api(researcher).get(SNAPSHOTS).status_code == 200
    assert api(researcher).post(SNAPSHOTS, {"kind": "kto"}, format="json").status_code == 403
    assert api(researcher).generic("POST", f"{SNAPSHOTS}text/", b"x",
                                   content_type="text/plain").status_code == 403  # fmt: skip
    assert api(annotator).get(SNAPSHOTS).status_code == 403
    assert api(admin).get(f"{SNAPSHOTS}999999/").status_code == 404
