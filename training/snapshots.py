"""Dataset snapshots: immutable files cut from judgments and demonstrations, with a manifest.

The split is by prompt: a prompt's hash decides whether all its pairs go to train or to eval, so
no prompt is in both and held-out metrics measure generalisation to new prompts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from annotation.exports import (
    FILE_FORMATS,
    FORMATS,
    ExportFilters,
    annotator_pseudonym,
    export_filters_parse,
    export_prepare,
    export_write,
)
from annotation.exports.filters import UNKNOWN_TRUST
from annotation.exports.plan import ExportPlan
from annotation.exports.records import judgment_stream
from annotation.models import Round
from annotation.selectors import judgments_by_annotator
from feedback.platform.errors import DomainError

from .datasheet import datasheet_write
from .models import DatasetSnapshot

# The columns TRL's RewardTrainer and DPOTrainer read; the rest of an export row is provenance.
TRAINING_COLUMNS = ("prompt", "chosen", "rejected", "margin")
# TRL's SFTTrainer, prompt-completion format.
SFT_COLUMNS = ("prompt", "completion")
# TRL's KTOTrainer, unpaired preference format.
KTO_COLUMNS = ("prompt", "completion", "label")
# Language modelling on plain text (continued pre-training).
TEXT_COLUMNS = ("text",)


def is_eval(key: Any, eval_fraction: float) -> bool:
    """Whether ``key`` (a prompt's messages, or a document's text) falls in the eval split."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < eval_fraction


@dataclass
class _Splits:
    """What the manifest says of the rows written: counts, distinct prompts (or documents),
    rubric versions and source rounds."""

    counts: dict[str, int] = field(default_factory=lambda: {"train": 0, "eval": 0})
    keys: dict[str, set[str]] = field(default_factory=lambda: {"train": set(), "eval": set()})
    rubrics: set[str] = field(default_factory=set)
    rounds: set[int] = field(default_factory=set)


def _splits_write(
    rows: Iterable[dict[str, Any]], *, folder: Path, columns: tuple[str, ...],
    eval_fraction: float, split_on: str,
) -> _Splits:  # fmt: skip
    """Write ``columns`` of the rows to ``folder``'s train and eval files by the hash of their
    ``split_on`` column."""
    splits = _Splits()
    with (folder / "train.jsonl").open("w") as train, (folder / "eval.jsonl").open("w") as ev:
        for row in rows:
            split = "eval" if is_eval(row[split_on], eval_fraction) else "train"
            line = json.dumps({key: row[key] for key in columns}, ensure_ascii=False)
            (ev if split == "eval" else train).write(line + "\n")
            splits.counts[split] += 1
            if row.get("rubric"):
                splits.rubrics.add(row["rubric"])
            if row.get("round"):
                splits.rounds.add(row["round"])
            splits.keys[split].add(json.dumps(row[split_on], sort_keys=True))
    return splits


def _snapshot_write(
    *, kind: str, rows: Iterable[dict[str, Any]], columns: tuple[str, ...],
    filters: dict[str, Any], eval_fraction: float, empty: str, created_by: Any,
    split_on: str = "prompt", empty_field: str = "rounds", trust: dict[str, Any] | None = None,
) -> DatasetSnapshot:  # fmt: skip
    """Write rows to train/eval files by the hash of their ``split_on`` column (the prompt, so
    no prompt is in both splits), with a manifest, into a folder that is renamed into place
    only when complete; then record it. Rows carry ``round``/``rubric`` keys (or None) for the
    manifest besides ``columns``; ``trust`` is what the trust options did (``_trust_record``)."""
    root = Path(settings.ARTIFACTS_DIR)
    name = f"snapshots/{uuid.uuid4().hex}"
    staging = root / f"{name}.partial"
    staging.mkdir(parents=True)
    try:
        splits = _splits_write(
            rows, folder=staging, columns=columns, eval_fraction=eval_fraction, split_on=split_on
        )
        counts = splits.counts
        if counts["train"] == 0:
            raise DomainError(empty, fields={empty_field: [empty]})
        digest = hashlib.sha256()
        for split in ("train", "eval"):
            digest.update((staging / f"{split}.jsonl").read_bytes())
        manifest = {
            "rows": counts,
            # distinct prompts (or documents) per split
            {"prompt": "prompts", "text": "documents"}[split_on]: {
                split: len(keys) for split, keys in splits.keys.items()
            },
            "sha256": digest.hexdigest(),
            "rubric_versions": sorted(splits.rubrics),
            "source_rounds": sorted(splits.rounds),
            "split": f"by sha256 of the {split_on}; eval fraction {eval_fraction}",
            "columns": list(columns),
            "filters": filters,
        }
        if trust is not None:
            manifest["trust"] = trust
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        datasheet_write(
            folder=staging, final_folder=root / name, kind=kind,
            title=f"{DatasetSnapshot.Kind(kind).label.capitalize()}: snapshot of "
            f"{timezone.now():%Y-%m-%d %H:%M} UTC",
            data_files={s: f"{s}.jsonl" for s in ("train", "eval") if counts[s]},
            file_format="jsonl", manifest=manifest,
            filters={**filters, "eval_fraction": eval_fraction}, columns=list(columns),
        )  # fmt: skip
        staging.rename(root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DatasetSnapshot.objects.create(
        kind=kind, filters={**filters, "eval_fraction": eval_fraction}, path=name,
        manifest=manifest, sha256=manifest["sha256"], created_by=created_by,
    )  # fmt: skip


def _training_filters(
    *, rounds: list[int] | None, consensus: str = "none", axis: str | None = None,
    min_trust: float | None = None, weighting: str = "equal",
    include_none_acceptable: bool = False,
) -> ExportFilters:  # fmt: skip
    """A training snapshot's export filters, read by the export's own parser: the trust options
    have the export's names (``min_trust``, ``weighting``), and a bad value is the same field
    error here as in an export. Every round (no ``rounds``) means every collecting round: a
    promotion gate's side-by-side rounds judge policies on held-out prompts and do not train."""
    params: dict[str, Any] = {
        "rounds": list(rounds or _collecting_rounds()), "consensus": consensus,
        "weighting": weighting,
    }  # fmt: skip
    if axis:
        params["axis"] = axis
    if min_trust is not None:
        params["min_trust"] = min_trust
    if include_none_acceptable:
        params["include_none_acceptable"] = True
    return export_filters_parse(params)


def _collecting_rounds() -> list[int]:
    """Every round but the side-by-side ones, by number; [] (all rounds) when there are none."""
    side_by_side = Round.objects.filter(source=Round.Source.SIDE_BY_SIDE)
    if not side_by_side.exists():
        return []
    numbers = list(Round.objects.exclude(source=Round.Source.SIDE_BY_SIDE)
                   .order_by("number").values_list("number", flat=True))  # fmt: skip
    if not numbers:
        raise DomainError("Nothing to train on: the only rounds are gates' side-by-side rounds, "
                          "which do not train.")  # fmt: skip
    return numbers


def _trust_options(filters: ExportFilters) -> dict[str, Any]:
    return {"min_trust": filters.min_trust, "weighting": filters.weighting}


def _trust_record(filters: ExportFilters, trust: Mapping[int, float]) -> dict[str, Any] | None:
    """What the trust options did, for the manifest and the datasheet: each annotator's trust
    (by pseudonym, so a weight can be checked later) and judgments, and whom ``min_trust`` left
    out. None when neither option is set. ``trust`` is the export's own map, so the record
    holds the numbers the rows were cut with."""
    if filters.min_trust is None and filters.weighting != "trust":
        return None
    judged = judgments_by_annotator(rounds=list(filters.rounds) or None)
    annotators = []
    for user_id, judgments in judged.items():
        score = trust.get(user_id, UNKNOWN_TRUST)
        kept = filters.min_trust is None or score >= filters.min_trust
        annotators.append(
            {"annotator": annotator_pseudonym(user_id), "trust": round(score, 4),
             "judgments": judgments, "kept": kept}
        )  # fmt: skip
    annotators.sort(key=lambda a: (-a["trust"], a["annotator"]))
    left_out = [a for a in annotators if not a["kept"]]
    return {
        "min_trust": filters.min_trust,
        "weighting": filters.weighting,
        "scored_over_rounds": list(filters.rounds),  # empty: every round
        "unknown_trust": UNKNOWN_TRUST,
        "annotators_left_out": len(left_out),
        "judgments_left_out": sum(a["judgments"] for a in left_out),
        "annotators": annotators,
    }


def snapshot_create_preference(
    *, rounds: list[int] | None = None, axis: str | None = None,
    consensus: str = "bradley_terry", min_trust: float | None = None, weighting: str = "equal",
    include_none_acceptable: bool = False, eval_fraction: float = 0.1, created_by: Any = None,
) -> DatasetSnapshot:  # fmt: skip
    """The ``trl`` export's preference pairs (all C(K,2) of each ranking, ties dropped, with
    margins) of ``rounds`` (every round if None), in the columns TRL's RewardTrainer and
    DPOTrainer read; with ``axis``, pairs from that rubric axis's scores instead (for a per-axis
    reward model). A task judged several times gives one consensus (``consensus``, one of
    ``CONSENSUS_RULES``: see annotation/consensus.py for why), unless that is "none". The
    export's trust options: ``min_trust`` leaves out the judgments of annotators below that
    trust, and ``weighting="trust"`` weighs each annotator by their trust in the consensus.
    Judgments (or tasks) that found no answer acceptable give no pairs unless
    ``include_none_acceptable``, as in the export."""
    filters = _training_filters(
        rounds=rounds, consensus=consensus, axis=axis, min_trust=min_trust, weighting=weighting,
        include_none_acceptable=include_none_acceptable,
    )  # fmt: skip
    plan = export_prepare(fmt="trl", filters=filters)
    return _snapshot_write(
        kind=DatasetSnapshot.Kind.PREFERENCE, rows=plan.rows(), columns=TRAINING_COLUMNS,
        filters={"rounds": rounds or [], "axis": axis, "consensus": consensus,
                 "include_none_acceptable": include_none_acceptable,
                 **_trust_options(filters)},
        eval_fraction=eval_fraction, created_by=created_by,
        empty="No preference pairs to train on: judge some tasks first.",
        trust=_trust_record(filters, plan.context.trust),
    )  # fmt: skip


def snapshot_create_kto(
    *, rounds: list[int] | None = None, min_trust: float | None = None, weighting: str = "equal",
    eval_fraction: float = 0.1, created_by: Any = None,
) -> DatasetSnapshot:  # fmt: skip
    """Unpaired desirable / undesirable completions (the ``kto`` export) of ``rounds``: per
    task, the best-ranked completions are desirable and the worst-ranked undesirable, by the
    task's Bradley-Terry consensus when it has several judgments (the trust options as for
    preference pairs)."""
    filters = _training_filters(
        rounds=rounds, consensus="bradley_terry", min_trust=min_trust, weighting=weighting
    )
    plan = export_prepare(fmt="kto", filters=filters)
    return _snapshot_write(
        kind=DatasetSnapshot.Kind.KTO, rows=plan.rows(), columns=KTO_COLUMNS,
        filters={"rounds": rounds or [], "consensus": "bradley_terry", **_trust_options(filters)},
        eval_fraction=eval_fraction, created_by=created_by,
        empty="No ranked completions to label: judge some tasks first.",
        trust=_trust_record(filters, plan.context.trust),
    )  # fmt: skip


def _sft_rows(*, plan: ExportPlan, top_ranked: bool) -> Iterator[dict[str, Any]]:
    """The ``sft`` export's demonstrations, and with ``top_ranked`` each judgment's single best
    completion (a rank-1 group of one, so an annotator did prefer it over the rest, and found
    it acceptable), as prompt-completion rows; ``min_trust`` drops both by their author's
    trust."""
    for row in plan.rows():
        # The conversation ends in the written answer: the completion is its last turn.
        yield {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}
    if not top_ranked:
        return
    filters, trust = plan.context.filters, plan.context.trust
    for judgment in judgment_stream(filters=filters, trust=trust, times=False):
        ranking, task = judgment.ranking, judgment.task
        if not ranking or len(ranking[0]) != 1 or judgment.none_acceptable:
            continue
        best = task.completions[ranking[0][0]]
        yield {"prompt": task.messages,
               "completion": [{"role": "assistant", "content": best.text}],
               "round": task.round, "rubric": judgment.rubric.label}  # fmt: skip


def snapshot_create_sft(
    *, rounds: list[int] | None = None, top_ranked: bool = False,
    min_trust: float | None = None, eval_fraction: float = 0.1, created_by: Any = None,
) -> DatasetSnapshot:  # fmt: skip
    """SFT data in TRL's conversational prompt-completion format (the loss is on the answer).
    ``min_trust`` as in the ``sft`` export: rows of authors (and judges) below that trust are
    left out; there is no consensus to weigh."""
    filters = _training_filters(rounds=rounds, min_trust=min_trust)
    plan = export_prepare(fmt="sft", filters=filters)
    return _snapshot_write(
        kind=DatasetSnapshot.Kind.SFT, rows=_sft_rows(plan=plan, top_ranked=top_ranked),
        columns=SFT_COLUMNS,
        filters={"rounds": rounds or [], "top_ranked": top_ranked, "min_trust": min_trust},
        eval_fraction=eval_fraction, created_by=created_by,
        empty="Nothing to fine-tune on: write demonstrations (or judge tasks and ask for the "
        "top-ranked completions).",
        trust=_trust_record(filters, plan.context.trust),
    )  # fmt: skip


def corpus_documents(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """A plain-text corpus (UTF-8) as documents: runs of lines between blank lines. A line that
    is not UTF-8 or holds a NUL character is an error naming its number (the file is not
    written)."""
    document: list[str] = []
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            why = f"Line {number} is not UTF-8 (byte {exc.start + 1})."
            raise DomainError(why, fields={"file": [why]}) from None
        if "\x00" in line:
            why = f"Line {number} holds a NUL character."
            raise DomainError(why, fields={"file": [why]})
        if line.strip():
            document.append(line)
        elif document:
            yield {"text": "\n".join(document)}
            document = []
    if document:
        yield {"text": "\n".join(document)}


def snapshot_create_text(
    *, lines: Iterable[bytes], name: str = "", eval_fraction: float = 0.1, created_by: Any = None
) -> DatasetSnapshot:
    """A plain-text corpus for continued pre-training, split into documents at blank lines; a
    document's hash decides its split, so no document is in both."""
    return _snapshot_write(
        kind=DatasetSnapshot.Kind.TEXT, rows=corpus_documents(lines), columns=TEXT_COLUMNS,
        filters={"corpus": name[:200]}, eval_fraction=eval_fraction, created_by=created_by,
        empty="The corpus has no text.", split_on="text", empty_field="file",
    )  # fmt: skip


def snapshot_create_export(
    *, fmt: str, file_format: str = "jsonl", filters: dict[str, Any] | None = None,
    pseudonymous: bool = True, created_by: Any = None,
) -> DatasetSnapshot:  # fmt: skip
    """Freeze a research export (any format of ``annotation.exports.FORMATS``, JSONL or
    Parquet, with its filters) as a snapshot: one ``data`` file, the manifest and a datasheet,
    in a folder renamed into place only when complete."""
    if fmt not in FORMATS:
        raise DomainError(
            f"Unknown format {fmt!r}.", fields={"format": [f"One of: {', '.join(FORMATS)}."]}
        )
    if file_format not in FILE_FORMATS:
        raise DomainError(
            f"Unknown file format {file_format!r}.",
            fields={"file_format": [f"One of: {', '.join(FILE_FORMATS)}."]},
        )
    parsed = export_filters_parse(dict(filters or {}))
    filters = parsed.to_params()
    root = Path(settings.ARTIFACTS_DIR)
    name = f"snapshots/{uuid.uuid4().hex}"
    staging = root / f"{name}.partial"
    staging.mkdir(parents=True)
    data_name = f"data.{file_format}"
    try:
        result = export_write(
            fmt=fmt, file_format=file_format, filters=parsed, out=staging / data_name,
            pseudonymous=pseudonymous,
        )  # fmt: skip
        if result.rows == 0:
            why = "No rows match these filters."
            raise DomainError(why, fields={"filters": [why]})
        manifest = {
            "rows": {"train": result.rows},
            "sha256": result.sha256,
            "format": fmt,
            "file_format": file_format,
            "files": [data_name],
            "size_bytes": result.size_bytes,
            "pseudonymous": pseudonymous,
            "filters": filters,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        datasheet_write(
            folder=staging, final_folder=root / name, kind=DatasetSnapshot.Kind.EXPORT,
            title=f"Export ({fmt}, {file_format}): snapshot of {timezone.now():%Y-%m-%d %H:%M} UTC",
            data_files={"train": data_name}, file_format=file_format, manifest=manifest,
            filters=filters, description=FORMATS[fmt].description,
        )  # fmt: skip
        staging.rename(root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DatasetSnapshot.objects.create(
        kind=DatasetSnapshot.Kind.EXPORT, path=name, manifest=manifest, sha256=result.sha256,
        filters={"format": fmt, "file_format": file_format, "pseudonymous": pseudonymous,
                 **filters}, created_by=created_by,
    )  # fmt: skip


def snapshot_datasheet_path(snapshot: DatasetSnapshot) -> Path:
    """Where a snapshot's datasheet is (snapshots made before datasheets have none)."""
    return Path(settings.ARTIFACTS_DIR) / snapshot.path / "README.md"
