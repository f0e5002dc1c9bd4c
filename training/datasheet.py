"""Datasheets: the README.md written into every snapshot folder.

A researcher who finds a snapshot folder months later should learn from it alone what the data
is, how it was made and how far to trust it, in the spirit of "Datasheets for Datasets" (Gebru et
al., 2021): the rubric annotators followed, counts, agreement, annotator trust, known limits, the
exact filters, and a ``load_dataset`` snippet. The file is also a Hugging Face dataset card: its
YAML header names the split files (``configs``), so ``datasets.load_dataset(folder)`` loads the
snapshot with its splits and no script.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.db.models import Count, Max, Min

from annotation.models import Judgment, Rubric

KIND_TEXT = {
    "preference": "Preference pairs (chosen over rejected, with a margin) in the columns TRL's "
    "RewardTrainer and DPOTrainer read.",
    "kto": "Unpaired examples for KTO: a completion and whether it is desirable.",
    "sft": "Prompt-completion examples for supervised fine-tuning (TRL's SFTTrainer).",
    "text": "A plain-text corpus for continued pre-training, one document per row.",
    "export": "A frozen research export.",
}


def _yaml_configs(data_files: Mapping[str, str]) -> str:
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, name in data_files.items():
        lines += [f"  - split: {split}", f"    path: {name}"]
    return "\n".join([*lines, "---", ""])


def _judgment_facts(rounds: list[int]) -> dict[str, Any]:
    judgments = Judgment.objects.all()
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    facts = judgments.aggregate(
        judgments=Count("pk"),
        annotators=Count("annotator", distinct=True),
        tasks=Count("task", distinct=True),
        first=Min("created_at"),
        last=Max("created_at"),
    )
    facts["rubrics"] = list(
        Rubric.objects.filter(pk__in=judgments.values("rubric")).order_by("name", "version")
    )
    facts["round_numbers"] = sorted(set(judgments.values_list("task__round__number", flat=True)))
    return facts


def _estimate(estimate: Any) -> str:
    if estimate is None or estimate.value is None:
        return "n/a"
    if estimate.low is None:
        return f"{estimate.value:.3f}"
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _rubric_section(rubric: Rubric) -> list[str]:
    lines = [f"### {rubric.label}", ""]
    if rubric.guidelines:
        lines += [rubric.guidelines.strip(), ""]
    for axis in rubric.axes:
        label = axis.get("label", axis["key"])
        scale = f"{axis['min']} to {axis['max']}"
        lines.append(f"- **{label}** (`{axis['key']}`, {scale}): {axis.get('question', '')}")
    if rubric.flags:
        lines.append("- Flags: " + ", ".join(f"`{f['key']}` ({f['label']})" for f in rubric.flags))
    if rubric.strength_labels:
        lines.append(
            "- Strength of the top preference: "
            + ", ".join(f"`{s['key']}` (margin {s['margin']})" for s in rubric.strength_labels)
        )
    return [*lines, ""]


def _quality_section(rounds: list[int]) -> list[str]:
    from annotation.quality import annotator_quality, round_agreement

    lines = [
        "## Agreement",
        "",
        "Krippendorff's alpha (ordinal) on rank positions and on each axis's scores, and the share "
        "of agreeing pair directions, over tasks judged at least twice; 95% intervals in brackets "
        "(bootstrap over tasks for alpha, Wilson for the share).",
        "",
        "| round | tasks judged twice or more | alpha (ranking) | alpha per axis | pairwise |",
        "|---|---|---|---|---|",
    ]
    for number in rounds:
        agreement = round_agreement(round_number=number, bootstrap=200)
        axes = ", ".join(f"{key} {_estimate(e)}" for key, e in agreement.axis_alpha.items())
        lines.append(
            f"| {number} | {agreement.tasks} | {_estimate(agreement.ranking_alpha)} | "
            f"{axes or 'n/a'} | {_estimate(agreement.pairwise)} |"
        )
    quality = annotator_quality(rounds=rounds or None)
    lines += ["", "## Annotators", ""]
    if quality:
        trusts = [q.trust for q in quality.values()]
        flagged = sum(q.flagged for q in quality.values())
        gold = sum(q.gold_judgments for q in quality.values())
        lines += [
            f"{len(quality)} annotators; trust (gold accuracy and agreement with the consensus, "
            f"0 to 1) from {min(trusts):.2f} to {max(trusts):.2f}, median "
            f"{statistics.median(trusts):.2f}; {flagged} flagged for review; {gold} judgments "
            "on gold tasks. Annotators appear as keyed hashes, stable across exports.",
        ]
    else:
        lines.append("No judgments.")
    return [*lines, ""]


def _limits(kind: str, filters: Mapping[str, Any], facts: dict[str, Any] | None) -> list[str]:
    limits = []
    if facts is not None:
        if facts["annotators"] and facts["annotators"] < 3:
            limits.append(
                f"Only {facts['annotators']} annotator(s): their preferences are this data's."
            )
        limits.append(
            "Scores are ordinal ratings on the rubric's scale; a gap of 2 is not twice a gap of 1."
        )
        if filters.get("consensus", "none") == "none" and kind in ("preference", "export"):
            limits.append(
                "Tasks judged by several annotators contribute every judgment's pairs, so "
                "disagreements appear as opposite pairs."
            )
        limits.append(
            "Judgments on gold tasks (reference answers used to measure annotators) are included."
        )
        if filters.get("min_trust") is not None or filters.get("weighting") == "trust":
            limits.append(
                "Trust rewards agreeing with gold answers and with the other annotators, so the "
                "trust options also quieten a minority who may be right."
            )
        limits.append(
            "Completions come from the policies named in the provenance columns; the data says "
            "how annotators ranked those policies' answers, not answers in general."
        )
    else:
        limits.append("The corpus is uploaded text: its origin is whatever its uploader says.")
    return [*(f"- {limit}" for limit in limits), ""]


def datasheet_write(
    *, folder: Path, final_folder: Path, title: str, kind: str, data_files: Mapping[str, str],
    file_format: str, manifest: Mapping[str, Any], filters: Mapping[str, Any],
    columns: list[str] | None = None, description: str | None = None,
) -> str:  # fmt: skip
    """Write ``README.md`` (the datasheet) into ``folder``; the snippet names ``final_folder``,
    where the folder will be once renamed into place. Returns the text."""
    rounds = [int(r) for r in filters.get("rounds") or []]
    facts = None if kind == "text" else _judgment_facts(rounds)
    lines = [
        _yaml_configs(data_files),
        f"# {title}",
        "",
        "## What this is",
        "",
        description or KIND_TEXT.get(kind, kind),
        "",
        *_origin(facts),
        *_load_section(final_folder, data_files, file_format),
        *_counts_section(manifest, columns),
    ]
    if facts is not None:
        lines += ["## Rubric", ""]
        for rubric in facts["rubrics"]:
            lines += _rubric_section(rubric)
        lines += _quality_section(facts["round_numbers"])
    lines += _trust_section(filters, manifest)
    lines += ["## Known limits", "", *_limits(kind, filters, facts)]
    lines += [
        "## Exact filters",
        "",
        "```json",
        json.dumps(dict(filters), indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## Provenance",
        "",
        f"sha256 of the data files, in order: `{manifest.get('sha256', '')}`. The folder is never "
        "rewritten; `manifest.json` holds the same facts for programs.",
        "",
    ]
    text = "\n".join(lines)
    (folder / "README.md").write_text(text, encoding="utf-8")
    return text


def _trust_section(filters: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    """What the trust options (the export's ``min_trust`` and ``weighting``) did, with each
    annotator's trust when the manifest records it; nothing when neither was set."""
    min_trust, weighting = filters.get("min_trust"), filters.get("weighting", "equal")
    if min_trust is None and weighting != "trust":
        return []
    record = manifest.get("trust") or {}
    over = ", ".join(map(str, record.get("scored_over_rounds") or [])) or "every round"
    lines = [
        "## Trust",
        "",
        "An annotator's trust (0 to 1) blends their gold accuracy and their agreement with the "
        "other annotators' consensus (`annotation/quality.py`); one with no score counts as "
        f"{record.get('unknown_trust', 0.5)}. Scored over rounds: {over}.",
        "",
    ]
    if min_trust is not None:
        left = (
            f": {record['annotators_left_out']} of {len(record['annotators'])} annotators, "
            f"{record['judgments_left_out']} judgments"
            if record
            else ""
        )
        lines += [f"Judgments of annotators with trust below {min_trust} were left out{left}.", ""]
    if weighting == "trust":
        lines += ["Each task's consensus weighed every annotator by their trust.", ""]
    if record.get("annotators"):
        lines += ["| annotator | trust | judgments | kept |", "|---|---|---|---|"]
        lines += [
            f"| `{a['annotator']}` | {a['trust']:.3f} | {a['judgments']} | "
            f"{'yes' if a['kept'] else 'no'} |"
            for a in record["annotators"]
        ]
        lines.append("")
    return lines


def _origin(facts: dict[str, Any] | None) -> list[str]:
    """Where the rows came from: judgments, tasks, annotators, the period and the rounds."""
    if facts is None:
        return []
    period = (
        f" between {facts['first']:%Y-%m-%d} and {facts['last']:%Y-%m-%d}" if facts["first"] else ""
    )
    return [
        f"Cut from {facts['judgments']} judgments of {facts['tasks']} tasks by "
        f"{facts['annotators']} annotators{period}, in rounds "
        f"{', '.join(map(str, facts['round_numbers'])) or 'none'}.",
        "",
    ]


def _load_section(final_folder: Path, data_files: Mapping[str, str], file_format: str) -> list[str]:
    loader = "parquet" if file_format == "parquet" else "json"
    # The folder as the project's processes see it: relative to the working directory (the
    # repository) when it lies inside it, as it does by default.
    try:
        shown = final_folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = final_folder
    files = {split: str(shown / name) for split, name in data_files.items()}
    return [
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f"dataset = load_dataset({str(shown)!r})  # the splits named in this card",
        f"# or: load_dataset({loader!r}, data_files={json.dumps(files)})",
        "```",
        "",
    ]


def _counts_section(manifest: Mapping[str, Any], columns: list[str] | None) -> list[str]:
    lines = [
        "## Counts",
        "",
        "| split | rows |",
        "|---|---|",
        *(f"| {split} | {n} |" for split, n in manifest.get("rows", {}).items()),
        "",
    ]
    for key in ("prompts", "documents"):
        if key in manifest:
            per_split = ", ".join(f"{split} {n}" for split, n in manifest[key].items())
            lines += [f"Distinct {key}: {per_split}.", ""]
    if "split" in manifest:
        lines += [f"Split: {manifest['split']}.", ""]
    if columns:
        lines += ["Columns: " + ", ".join(f"`{c}`" for c in columns) + ".", ""]
    return lines
