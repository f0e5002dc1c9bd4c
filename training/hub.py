"""A snapshot as a ``datasets`` object and a dataset card, for the Hugging Face Hub.

``snapshot_to_dataset`` reads the snapshot's own files (its splits as written, nothing
recomputed), and ``snapshot_card`` is its datasheet: the prose unchanged, the YAML header
dropped, since that header names the folder's files and the Hub's copy is the Parquet shards
``push_to_hub`` writes (and describes in the header it writes itself). The same two objects are
pushed (``snapshot_push_to_hub``) and, in the tests, saved to disk and loaded back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from feedback.platform.errors import DomainError
from feedback.platform.hub import hub_push_dataset, hub_push_ready

from .models import DatasetSnapshot
from .snapshots import snapshot_datasheet_path


def _data_files(snapshot: DatasetSnapshot) -> dict[str, tuple[Path, str]]:
    """split → (file, builder) as the snapshot service wrote them."""
    folder = Path(settings.ARTIFACTS_DIR) / snapshot.path
    manifest = snapshot.manifest
    if snapshot.kind == DatasetSnapshot.Kind.EXPORT:
        builder = "parquet" if manifest.get("file_format") == "parquet" else "json"
        return {"train": (folder / manifest["files"][0], builder)}
    rows = manifest.get("rows", {})
    return {
        split: (folder / f"{split}.jsonl", "json") for split in ("train", "eval") if rows.get(split)
    }


def snapshot_to_dataset(snapshot: DatasetSnapshot) -> Any:
    """The snapshot's splits as a ``datasets.DatasetDict``, rows in file order."""
    from datasets import Dataset, DatasetDict

    splits = {}
    for split, (path, builder) in _data_files(snapshot).items():
        if not path.is_file():
            why = f"The snapshot's {split} file is missing ({path.name})."
            raise DomainError(why, code="missing", status=409, fields={"snapshot": [why]})
        reader = Dataset.from_parquet if builder == "parquet" else Dataset.from_json
        splits[split] = reader(str(path), keep_in_memory=True)
    return DatasetDict(splits)


def _without_front_matter(text: str) -> str:
    lines = text.splitlines(keepends=True)
    if lines and lines[0].strip() == "---":
        for i, line in enumerate(lines[1:], start=1):
            if line.strip() == "---":
                return "".join(lines[i + 1 :]).lstrip("\n")
    return text


def snapshot_card(snapshot: DatasetSnapshot, *, repo_id: str | None = None) -> Any:
    """The dataset card: the datasheet's prose, with how to load the pushed copy first."""
    from huggingface_hub import DatasetCard, DatasetCardData

    path = snapshot_datasheet_path(snapshot)
    body = _without_front_matter(path.read_text(encoding="utf-8")) if path.is_file() else ""
    intro = f'Loaded with `datasets.load_dataset("{repo_id}")`.\n\n' if repo_id else ""
    kind = DatasetSnapshot.Kind(snapshot.kind).value  # a plain str: the YAML is safe-loaded
    data = DatasetCardData(
        pretty_name=f"Feedback Loop snapshot {snapshot.pk} ({kind})",
        tags=["feedback-loop", "rlhf", kind],
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{intro}{body}")


def snapshot_push_to_hub(
    *, snapshot_id: int, repo_id: str, private: bool = True, token: str | None = None
) -> str:
    """Push the snapshot and its datasheet to the dataset repo ``repo_id``; the repo's URL.
    Offline it fails at once (feedback.platform.hub)."""
    hub_push_ready(repo_id)
    snapshot = DatasetSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is None:
        raise DomainError("No such snapshot.", code="not_found", status=404)
    card = snapshot_card(snapshot, repo_id=repo_id)
    return hub_push_dataset(
        dataset=snapshot_to_dataset(snapshot), repo_id=repo_id, card_text=card.text,
        private=private, token=token,
    )  # fmt: skip
