"""The research dashboard's export section: the format and filter form, a preview of the first
rows with the number the download will hold, what a margin in those rows means, and, for admins
only, who is behind each pseudonymous annotator id. The rows come from ``annotation.exports``,
the same code the export API streams."""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, QueryDict
from django.urls import reverse

from annotation.exports import (
    CONSENSUS_RULES,
    FORMATS,
    WEIGHTINGS,
    ExportFilters,
    export_filters_parse,
    export_rows,
    export_source_count,
    preference_pair_count,
)
from annotation.models import Rubric
from annotation.pseudonyms import pseudonym_directory
from annotation.selectors import rubric_labels
from feedback.platform.errors import DomainError
from feedback.serving.policies import policy_list

PREVIEW_ROWS = 5

# The export filters the page's form offers, by the query parameter names the export API
# reads (``annotation.exports.export_filters_parse``); ``round`` is the page's own round choice.
FILTER_FIELDS = (
    "policy", "rubric", "min_agreement", "min_trust", "flag", "exclude_flag", "axis", "since",
    "until", "consensus", "weighting", "include_none_acceptable",
)  # fmt: skip
REPEATED_FILTERS = ("policy", "flag", "exclude_flag")


def _filter_params(request: HttpRequest, chosen: list[int]) -> list[tuple[str, str]]:
    """The filters that are set, as query parameters for the export API."""
    params = [("round", str(r)) for r in chosen]
    for name in FILTER_FIELDS:
        params += [(name, v.strip()) for v in request.GET.getlist(name) if v.strip()]
    return params


def _filter_form(
    params: list[tuple[str, str]],
    errors: dict[str, list[str]],
    rubrics: list[Rubric],
    axes: list[dict[str, Any]],
) -> dict[str, Any]:
    """What the filter form shows: each field's value(s) and error, and the choices."""
    fields = {}
    for name in FILTER_FIELDS:
        values = [v for key, v in params if key == name]
        if name in REPEATED_FILTERS:
            values = [part.strip() for v in values for part in v.split(",") if part.strip()]
        reasons = errors.get(name, []) + errors.get(f"{name}s", [])
        fields[name] = {
            "value": ", ".join(values) if name == "policy" else (values[-1] if values else ""),
            "values": values,
            "error": " ".join(reasons),
        }
    flags = {f["key"]: f["label"] for rubric in rubrics for f in rubric.flags}
    return {
        "fields": fields,
        "open": any(key != "round" for key, _ in params) or bool(errors),
        "rubric_labels": rubric_labels(),
        "policy_names": list(policy_list().values_list("name", flat=True)[:50]),
        "axes": axes,
        "flags": list(flags.items()),
        "consensus_rules": CONSENSUS_RULES,
        "weightings": WEIGHTINGS,
    }


def _scale_width(axis: dict[str, Any]) -> int:
    return int(axis["max"]) - int(axis["min"]) or 1


def _margin_note(
    filters: ExportFilters, rubrics: list[Rubric], axes: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the preview's ``margin`` column means under these filters (``annotation.pairs``
    and ``annotation.exports`` compute it): which pairs the rows hold, and the numbers the
    sentence needs: the strength labels' margins and the scale's width (of the axis the pairs
    come from, or else the first axis, as ``pairs.judgment_ranked_pairs`` takes it)."""
    axis = next((a for a in axes if a["key"] == filters.axis), None)
    strengths: dict[str, float] = {}
    for rubric in rubrics:
        for label in rubric.strength_labels:
            strengths.setdefault(label["label"], float(label["margin"]))
    return {
        "axis": axis["label"] if axis else "",
        "consensus": filters.consensus == "bradley_terry",
        "trust_weighted": filters.weighting == "trust",
        # As the rows print them (0.6667, not 0.67), so a reader can match the two.
        "strengths": [(label, f"{margin:g}") for label, margin in strengths.items()],
        "width": _scale_width(axis or rubrics[0].axes[0]),
    }


def export_section(
    request: HttpRequest,
    *,
    chosen: list[int],
    rubrics: list[Rubric],
    axes: list[dict[str, Any]],
    names: bool,
) -> dict[str, Any]:
    """The section's context. ``names``: the page is an admin's, who also sees which
    pseudonym is which annotator; a researcher's page shows pseudonyms only."""
    fmt = request.GET.get("format", "trl")
    if fmt not in FORMATS:
        fmt = "trl"
    params = _filter_params(request, chosen)
    spec = FORMATS[fmt]
    rows: list[dict[str, Any]] = []
    count, error, errors, margin = 0, "", {}, None
    try:
        filters = export_filters_parse(QueryDict(urlencode(params)))
        rows = list(itertools.islice(export_rows(fmt=fmt, filters=filters), PREVIEW_ROWS))
        if any("margin" in row for row in rows):
            margin = _margin_note(filters, rubrics, axes)
        if spec.unit == "pair" and filters == ExportFilters(rounds=filters.rounds):
            count, unit, note = (
                preference_pair_count(rounds=list(filters.rounds) or None),
                "preference pair",
                "(one row each)",
            )
        else:
            # Counting rows would mean running the whole export; what it reads is one query.
            count = export_source_count(fmt=fmt, filters=filters)
            unit, note = spec.reads, f"to read (one row per {spec.unit})"
    except DomainError as exc:
        error, errors = exc.detail, exc.fields
        unit, note = spec.reads, "to read"
    columns, cells = _preview_table(rows)
    return {
        "formats": [(name, f.description) for name, f in FORMATS.items()],
        "format": fmt,
        "export_form": _filter_form(params, errors, rubrics, axes),
        "export_error": error,
        "preview_columns": columns,
        "preview_rows": cells,
        "margin_note": margin,
        "row_count": count,
        "row_unit": unit,
        "row_note": note,
        "download_url": f"{reverse('api:export-preferences')}?"
        + urlencode([("format", fmt), *params]),
        "who_is_who": pseudonym_directory(rounds=chosen or None) if names else [],
    }


# The columns a preview shows, those a format has, in this order: what a person reads to judge
# the data (the full rows are in the download).
PREVIEW_COLUMNS = (
    "instruction", "prompt", "messages", "chosen", "rejected", "completion", "completions",
    "label", "margin", "axis", "round", "annotator", "author",
)  # fmt: skip


def _preview_cell(value: Any) -> str:
    """A short text for a cell: a chat shows its last turn, a string itself, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if "content" in value[-1]:
            return str(value[-1]["content"])
        if "response" in value[0]:
            return " | ".join(str(v["response"]) for v in value)
    return json.dumps(value, ensure_ascii=False)


def _preview_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    if not rows:
        return [], []
    shown = [c for c in PREVIEW_COLUMNS if any(row.get(c) not in (None, "", []) for row in rows)]
    columns = shown or list(rows[0])[:6]
    return columns, [[_preview_cell(row.get(c)) for c in columns] for row in rows]
