"""The research dashboard: agreement by round, position bias, score distributions, flags,
annotator trust, disagreements, the export preview (``research_export``) and snapshots. The
numbers come from ``annotation.quality`` and ``annotation.position_bias``; this module only
shapes them for the page and its charts, and says why a section is empty when it is. A task's
page is ``research_tasks``, a snapshot's ``research_snapshots``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.exports import annotator_pseudonym
from annotation.models import Rubric
from annotation.position_bias import position_bias_by_round
from annotation.progress import round_overlap
from annotation.pseudonyms import usernames_by_id
from annotation.quality import (
    GOLD_WEIGHT,
    PRIOR_PAIRS,
    PRIOR_SCORE,
    Estimate,
    agreement_by_round,
    annotator_quality,
    disagreements,
)
from annotation.selectors import (
    flags_by_day,
    round_numbers,
    rubrics_of_rounds,
    score_distribution,
    task_prompts,
)
from feedback.platform.roles import Role, user_roles
from training.selectors import snapshot_list

from .charts import bar_chart, interval_line_chart, stacked_bar_chart
from .research_export import export_section
from .views import role_required

AGREEMENT_BOOTSTRAP = 200
DISAGREEMENT_ROWS = 20
SNAPSHOT_ROWS = 20
FLAG_DAYS = 60
ALPHA = "\N{GREEK SMALL LETTER ALPHA}"


def _chosen_rounds(request: HttpRequest) -> tuple[list[int], list[int]]:
    all_rounds = round_numbers()
    chosen = [
        int(r)
        for r in request.GET.getlist("round")
        if r.isascii() and r.isdigit() and int(r) in all_rounds
    ]
    return all_rounds, chosen


def _axes(rubrics: list[Rubric]) -> list[dict[str, Any]]:
    """Every axis of the rubrics, once, in rubric order."""
    axes: dict[str, dict[str, Any]] = {}
    for rubric in rubrics:
        for axis in rubric.axes:
            axes.setdefault(axis["key"], axis)
    return list(axes.values())


def _estimate(estimate: Estimate | None) -> dict[str, Any]:
    """An estimate as the page prints it: the value, its 95% interval, what it rests on."""
    if estimate is None or estimate.value is None:
        return {"text": "—", "interval": "", "n": estimate.n if estimate else 0}
    interval = ""
    if estimate.low is not None and estimate.high is not None:
        interval = f"{estimate.low:.2f} to {estimate.high:.2f}"
    return {"text": f"{estimate.value:.2f}", "interval": interval, "n": estimate.n}


def _agreement_section(*, rounds: list[int], axes: list[dict[str, Any]]) -> dict[str, Any]:
    by_round = [
        row
        for row in agreement_by_round(bootstrap=AGREEMENT_BOOTSTRAP)
        if not rounds or row.round in rounds
    ]
    keys = [a["key"] for a in axes]
    keys += sorted({k for row in by_round for k in row.axis_alpha} - set(keys))
    labels = {a["key"]: a["label"] for a in axes}

    def interval(e: Estimate | None) -> tuple[float | None, float | None, float | None]:
        return (e.value, e.low, e.high) if e is not None else (None, None, None)

    series = [("ranking", f"Ranking {ALPHA}", [interval(r.ranking_alpha) for r in by_round])]
    series += [
        (
            f"axis-{k}",
            f"{labels.get(k, k)} {ALPHA}",
            [interval(r.axis_alpha.get(k)) for r in by_round],
        )
        for k in keys
    ]
    series.append(("pairwise", "Pairwise agreement", [interval(r.pairwise) for r in by_round]))
    measured = any(v is not None for _, _, values in series for v, _, _ in values)
    return {
        "agreement_chart": interval_line_chart(
            x_labels=[f"R{r.round}" for r in by_round], series=series, width=900, height=220
        )
        if measured
        else None,
        "agreement_axes": [labels.get(k, k) for k in keys],
        "agreement_rows": [
            {
                "round": r.round,
                "tasks": r.tasks,
                "judgments": r.judgments,
                "annotators": r.annotators,
                "ranking": _estimate(r.ranking_alpha),
                "axes": [_estimate(r.axis_alpha.get(k)) for k in keys],
                "pairwise": _estimate(r.pairwise),
            }
            for r in by_round
        ],
    }


def _share_text(share: Estimate) -> str:
    """A share as a percentage with its 95% interval, e.g. "31% [27–35]" (an en dash)."""  # noqa: RUF002
    if share.value is None or share.low is None or share.high is None:
        return "—"
    low, high = f"{100 * share.low:.0f}", f"{100 * share.high:.0f}"
    return f"{100 * share.value:.0f}% [{low}\N{EN DASH}{high}]"


def _position_bias_section(*, rounds: list[int] | None) -> dict[str, Any]:
    """Per round, each displayed position's share of first places with Wilson's 95% interval
    (``_share_text``), beside the share expected without bias; a position whose interval leaves
    the expected share out is marked."""
    by_round = position_bias_by_round(rounds=rounds)
    width = max((r.k for r in by_round), default=0)
    rows = []
    for r in by_round:
        cells: list[dict[str, Any] | None] = [
            {
                "text": _share_text(p.share),
                "firsts": p.firsts,
                "biased": p.biased,
            }
            for p in r.positions
        ]
        rows.append(
            {
                "round": r.round,
                "judgments": r.judgments,
                "tied_first": r.tied_first,
                "unrecorded": r.unrecorded,
                "cells": cells + [None] * (width - len(cells)),
                "expected": f"{100 / r.k:.0f}%",
            }
        )
    return {"bias_positions": list(range(1, width + 1)), "bias_rows": rows}


def _distribution_section(*, rounds: list[int] | None, rubrics: list[Rubric]) -> dict[str, Any]:
    """A histogram per axis of each rubric version in view (an axis keeps its version's scale;
    the version is named when there are several), and the table's columns: every score any of
    them has."""
    counts = score_distribution(rounds=rounds)
    out = []
    for rubric in rubrics:
        for axis in rubric.axes:
            scale = list(range(int(axis["min"]), int(axis["max"]) + 1))
            values = [counts[rubric.pk, axis["key"]][s] for s in scale]
            total = sum(values)
            mean = sum(s * v for s, v in zip(scale, values, strict=True)) / total if total else None
            label = axis["label"] + (f" ({rubric.label})" if len(rubrics) > 1 else "")
            out.append(
                {
                    "key": axis["key"],
                    "label": label,
                    "scale": scale,
                    "values": values,
                    "total": total,
                    "mean": mean,
                    "chart": bar_chart(labels=[str(s) for s in scale], values=values),
                }
            )
    columns = sorted({score for d in out for score in d["scale"]})
    for d in out:
        by_score = dict(zip(d["scale"], d["values"], strict=True))
        d["cells"] = [by_score.get(score, "") for score in columns]
    return {"distributions": out, "score_columns": columns}


def _flags_section(*, rounds: list[int] | None, rubrics: list[Rubric]) -> dict[str, Any]:
    by_day = flags_by_day(rounds=rounds)
    if not by_day:
        return {"flags_chart": None, "flag_rows": [], "flag_labels": []}
    last = max(by_day)
    first = max(min(by_day), last - timedelta(days=FLAG_DAYS - 1))
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    labels = {f["key"]: f["label"] for rubric in rubrics for f in rubric.flags}
    raised = sorted(
        {k for counts in by_day.values() for k in counts}, key=lambda k: labels.get(k, k)
    )
    stacks = [(labels.get(k, k), [by_day[d][k] for d in days]) for k in raised]
    return {
        "flags_chart": stacked_bar_chart(labels=[d.strftime("%m-%d") for d in days], stacks=stacks),
        "flag_labels": [labels.get(k, k) for k in raised],
        "flag_rows": [(d, [by_day[d][k] for k in raised]) for d in days if d in by_day],
    }


def _trust_rows(*, rounds: list[int] | None, names: bool) -> list[dict[str, Any]]:
    """One row per annotator, those flagged for review first, then by trust, lowest first.
    Every row has the annotator's pseudonym (the id the exports carry); with ``names`` (an
    admin's page) also their username. A researcher's rows never carry a username."""
    quality = annotator_quality(rounds=rounds)
    usernames = usernames_by_id(user_ids=quality) if names else {}
    rows = [
        {
            "pseudonym": annotator_pseudonym(q.annotator_id),
            "username": usernames.get(q.annotator_id, ""),
            "judgments": q.judgments,
            "gold_judgments": q.gold_judgments,
            "gold": _estimate(q.gold_accuracy),
            "agreement": _estimate(q.agreement),
            "trust": q.trust,
            "flagged": q.flagged,
        }
        for q in quality.values()
    ]
    return sorted(
        rows,
        key=lambda row: (not row["flagged"], row["trust"], row["username"] or row["pseudonym"]),
    )


def _overlap_reasons(*, rounds: list[int] | None) -> dict[str, Any]:
    """Why agreement, disagreements and the agreement part of trust may be empty: they rest on
    ordinary tasks judged by two annotators or more. Per round with none yet, whether that is
    because it asks for one judgment per task (overlap 1, set when the round is opened) or
    because its judgments have not reached a second annotator yet."""
    coverage = round_overlap(rounds=rounds)
    unmeasured = [r for r in coverage if r.judged_twice == 0]
    return {
        "judged_twice": sum(r.judged_twice for r in coverage),
        "single": [r for r in unmeasured if r.overlap < 2],
        "waiting": [r for r in unmeasured if r.overlap >= 2],
        "unmeasured": bool(unmeasured),
    }


def _disagreement_rows(*, rounds: list[int] | None) -> list[dict[str, Any]]:
    # Tasks on which everyone agreed are not disagreements, however low they sort.
    found = [d for d in disagreements(rounds=rounds, limit=DISAGREEMENT_ROWS) if d.agreement < 1]
    prompts = task_prompts(task_ids=[d.task_id for d in found])
    return [
        {
            "task_id": d.task_id,
            "round": d.round,
            "judgments": d.judgments,
            "agreement": d.agreement,
            "prompt": _last_user_turn(prompts.get(d.task_id) or []),
        }
        for d in found
    ]


def _last_user_turn(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


@role_required(Role.RESEARCHER, Role.ADMIN)
def research(request: HttpRequest) -> HttpResponse:
    all_rounds, chosen = _chosen_rounds(request)
    rounds = chosen or None
    rubrics = rubrics_of_rounds(rounds=rounds)
    axes = _axes(rubrics)
    is_admin = Role.ADMIN in user_roles(request.user)
    return render(
        request,
        "frontend/research.html",
        {
            "all_rounds": all_rounds,
            "chosen": chosen,
            "is_admin": is_admin,
            **_agreement_section(rounds=chosen, axes=axes),
            **_position_bias_section(rounds=rounds),
            "overlap": _overlap_reasons(rounds=rounds),
            **_distribution_section(rounds=rounds, rubrics=rubrics),
            **_flags_section(rounds=rounds, rubrics=rubrics),
            "annotators": _trust_rows(rounds=rounds, names=is_admin),
            "review_below": settings.TRUST_REVIEW_BELOW,
            # The trust formula's constants, for the sentence that explains it beside the table.
            "trust_terms": {
                "gold_weight": f"{GOLD_WEIGHT:g}",
                "prior_pairs": PRIOR_PAIRS,
                "prior_score": f"{PRIOR_SCORE:g}",
            },
            "disagreements": _disagreement_rows(rounds=rounds),
            **export_section(request, chosen=chosen, rubrics=rubrics, axes=axes, names=is_admin),
            "snapshots": snapshot_list()[:SNAPSHOT_ROWS],
        },
    )
