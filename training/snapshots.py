"""Dataset snapshots: immutable files cut from judgments, with a manifest.

The split is by prompt: a prompt's hash decides whether all its pairs go to train or to eval, so
no prompt is in both and held-out metrics measure generalisation to new prompts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings

from annotation.exports import judgments_for_export, preference_rows
from feedback.errors import DomainError

from .models import DatasetSnapshot

# The columns TRL's RewardTrainer and DPOTrainer read; the rest of an export row is provenance.
TRAINING_COLUMNS = ("prompt", "chosen", "rejected", "margin")


def is_eval(prompt: list[dict[str, str]], eval_fraction: float) -> bool:
    digest = hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < eval_fraction


def snapshot_create_preference(
    *, rounds: list[int] | None = None, eval_fraction: float = 0.1, created_by: Any = None
) -> DatasetSnapshot:
    root = Path(settings.ARTIFACTS_DIR)
    name = f"snapshots/{uuid.uuid4().hex}"
    staging = root / f"{name}.partial"
    staging.mkdir(parents=True)
    counts = {"train": 0, "eval": 0}
    rubrics: set[str] = set()
    source_rounds: set[int] = set()
    prompts: dict[str, set[str]] = {"train": set(), "eval": set()}
    try:
        with (staging / "train.jsonl").open("w") as train, (staging / "eval.jsonl").open("w") as ev:
            for row in preference_rows(judgments_for_export(rounds=rounds)):
                split = "eval" if is_eval(row["prompt"], eval_fraction) else "train"
                line = json.dumps({key: row[key] for key in TRAINING_COLUMNS}, ensure_ascii=False)
                (ev if split == "eval" else train).write(line + "\n")
                counts[split] += 1
                rubrics.add(row["rubric"])
                source_rounds.add(row["round"])
                prompts[split].add(json.dumps(row["prompt"], sort_keys=True))
        if counts["train"] == 0:
            raise DomainError(
                "No preference pairs to train on: judge some tasks first.",
                fields={"rounds": ["No judged pairs in these rounds."]},
            )
        digest = hashlib.sha256()
        for split in ("train", "eval"):
            digest.update((staging / f"{split}.jsonl").read_bytes())
        manifest = {
            "rows": counts,
            "prompts": {split: len(p) for split, p in prompts.items()},
            "sha256": digest.hexdigest(),
            "rubric_versions": sorted(rubrics),
            "source_rounds": sorted(source_rounds),
            "split": f"by sha256 of the prompt; eval fraction {eval_fraction}",
            "columns": list(TRAINING_COLUMNS),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        staging.rename(root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DatasetSnapshot.objects.create(
        kind=DatasetSnapshot.Kind.PREFERENCE,
        filters={"rounds": rounds or [], "eval_fraction": eval_fraction},
        path=name,
        manifest=manifest,
        sha256=manifest["sha256"],
        created_by=created_by,
    )
