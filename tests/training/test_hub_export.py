"""Datasets to the Hub: a snapshot becomes the ``datasets`` object and the card (its datasheet)
that ``push_to_hub`` would send. Offline, as here, a push fails at once with a message saying so;
the object and the card are checked by a ``save_to_disk`` / ``load_from_disk`` round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client
from huggingface_hub import DatasetCard

from feedback.platform.errors import DomainError
from training.hub import snapshot_card, snapshot_push_to_hub, snapshot_to_dataset
from training.snapshots import TRAINING_COLUMNS, snapshot_create_export, snapshot_create_preference

from .test_reward_runs import judged_round

pytestmark = pytest.mark.django_db


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_snapshot_round_trips_as_a_dataset_with_its_datasheet_as_card(api, annotator, tmp_path):
    number = judged_round(api, annotator, n=8)
    snapshot = snapshot_create_preference(rounds=[number], eval_fraction=0.3)
    folder = Path(settings.ARTIFACTS_DIR) / snapshot.path

    dataset = snapshot_to_dataset(snapshot)
    card = snapshot_card(snapshot, repo_id="lab/prefs")
    dataset.save_to_disk(tmp_path / "hub")
    card.save(tmp_path / "hub" / "README.md")

    loaded = load_from_disk(tmp_path / "hub")
    assert set(loaded) == {"train", "eval"}
    for split in ("train", "eval"):
        assert loaded[split].column_names == list(TRAINING_COLUMNS)
        assert loaded[split].to_list() == jsonl(folder / f"{split}.jsonl")
        assert loaded[split].num_rows == snapshot.manifest["rows"][split]
    read = DatasetCard.load(tmp_path / "hub" / "README.md")
    datasheet = (folder / "README.md").read_text()
    # The datasheet's prose, whole, after how to load the Hub's copy; its header named the
    # folder's files, which the Hub's copy does not have.
    assert read.text.lstrip().startswith('Loaded with `datasets.load_dataset("lab/prefs")`.')
    assert datasheet.split("---\n", 2)[2].strip() in read.text
    assert "## Rubric" in read.text and "## Exact filters" in read.text
    assert read.data.pretty_name == f"Feedback Loop snapshot {snapshot.pk} (preference)"
    assert "configs" not in read.data.to_dict()


def test_a_parquet_export_snapshot_round_trips_too(api, annotator, researcher, tmp_path):
    judged_round(api, annotator, n=4)
    snapshot = snapshot_create_export(fmt="trl", file_format="parquet", created_by=researcher)
    dataset = snapshot_to_dataset(snapshot)
    dataset.save_to_disk(tmp_path / "hub")
    loaded = load_from_disk(tmp_path / "hub")
    assert loaded["train"].num_rows == snapshot.manifest["rows"]["train"] > 0
    assert {"prompt", "chosen", "rejected"} <= set(loaded["train"].column_names)


def test_offline_a_push_fails_at_once_and_says_why(api, annotator, researcher):
    number = judged_round(api, annotator, n=2)
    snapshot = snapshot_create_preference(rounds=[number])

    with pytest.raises(DomainError) as refused:
        snapshot_push_to_hub(snapshot_id=snapshot.pk, repo_id="lab/prefs")
    assert refused.value.code == "hub_offline"
    assert "HF_HUB_OFFLINE" in refused.value.fields["repo_id"][0]
    with pytest.raises(DomainError) as bad:
        snapshot_push_to_hub(snapshot_id=snapshot.pk, repo_id="not a repo")
    assert "repo_id" in bad.value.fields

    # The snapshot page's button says the same.
    page = Client()
    page.force_login(researcher)
    push = f"/research/snapshots/{snapshot.pk}/push/"
    shown = page.post(push, {"repo_id": "lab/prefs"}, follow=True).content.decode()
    assert "HF_HUB_OFFLINE is set" in shown and "Push to the Hugging Face Hub" in shown

    with pytest.raises(CommandError, match="offline"):
        call_command("export_preferences", "--push-to-hub", "lab/prefs")
