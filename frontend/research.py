"""The researcher's pages: the dashboard (agreement by round, score distributions, flags,
annotator trust, disagreements, exports, snapshots), a task's judgments, a snapshot's datasheet."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from annotation.consensus import task_consensus
from annotation.exports import (
    CONSENSUS_RULES,
    FORMATS,
    WEIGHTINGS,
    ExportFilters,
    annotator_pseudonym,
    export_filters_parse,
    export_rows,
    export_source_count,
    preference_pair_count,
)
from annotation.gold import task_mark_gold, task_unmark_gold
from annotation.models import ComparisonTask, Judgment, Round, Rubric, TaskCompletion
from annotation.quality import (
    Estimate,
    agreement_by_round,
    annotator_quality,
    disagreements,
    gold_pair_score,
    task_agreement,
)
from feedback.errors import DomainError
from feedback.models import PolicyVersion
from feedback.rendering import render_untrusted
from feedback.roles import Role, user_roles
from training.models import DatasetSnapshot
from training.snapshots import snapshot_datasheet_path

from .charts import bar_chart, interval_line_chart, stacked_bar_chart
from .views import role_required

# The researcher's dashboard: agreement by round, score distributions, flags, annotator trust,
# disagreements, exports and snapshots. The numbers come from annotation.quality; this part only
# shapes them for the page and its charts.

PREVIEW_ROWS = 5
AGREEMENT_BOOTSTRAP = 200
DISAGREEMENT_ROWS = 20
SNAPSHOT_ROWS = 20
FLAG_DAYS = 60
LETTERS = "ABCDEFGHIJKLMNOP"  # a round has at most 16 completions per task
ALPHA = "\N{GREEK SMALL LETTER ALPHA}"


def _chosen_rounds(request: HttpRequest) -> tuple[list[int], list[int]]:
    all_rounds = list(Round.objects.order_by("number").values_list("number", flat=True))
    chosen = [
        int(r)
        for r in request.GET.getlist("round")
        if r.isascii() and r.isdigit() and int(r) in all_rounds
    ]
    return all_rounds, chosen


def _rubrics(rounds: list[int] | None) -> list[Rubric]:
    """The rubrics the rounds were judged under (the newest one when there are no rounds)."""
    used = Round.objects.filter(number__in=rounds) if rounds else Round.objects.all()
    rubrics = list(Rubric.objects.filter(rounds__in=used).distinct().order_by("id"))
    return rubrics or list(Rubric.objects.order_by("-id")[:1])


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


def _score_distribution(*, rounds: list[int] | None) -> dict[str, Counter[int]]:
    """How often each score was given on each axis: {axis: {score: count}} over every
    completion of every judgment in the rounds. One pass over the scores column, so it works
    on SQLite as on PostgreSQL."""
    judgments = Judgment.objects.all()
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for scores in judgments.values_list("scores", flat=True).iterator(chunk_size=2000):
        for per_axis in scores.values():
            for axis, score in per_axis.items():
                counts[axis][score] += 1
    return counts


def _distribution_section(
    *, rounds: list[int] | None, axes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    counts = _score_distribution(rounds=rounds)
    out = []
    for axis in axes:
        scale = list(range(int(axis["min"]), int(axis["max"]) + 1))
        values = [counts[axis["key"]][s] for s in scale]
        total = sum(values)
        mean = sum(s * v for s, v in zip(scale, values, strict=True)) / total if total else None
        out.append(
            {
                "key": axis["key"],
                "label": axis["label"],
                "scale": scale,
                "values": values,
                "total": total,
                "mean": mean,
                "chart": bar_chart(labels=[str(s) for s in scale], values=values),
            }
        )
    return out


def _flags_by_day(*, rounds: list[int] | None) -> dict[date, Counter[str]]:
    """Per day (UTC), how many judgments raised each flag."""
    judgments = Judgment.objects.exclude(flags=[])
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    days: dict[date, Counter[str]] = defaultdict(Counter)
    rows = judgments.values_list("created_at", "flags").iterator(chunk_size=2000)
    for created_at, flags in rows:
        days[timezone.localtime(created_at).date()].update(set(flags))
    return days


def _flags_section(*, rounds: list[int] | None, rubrics: list[Rubric]) -> dict[str, Any]:
    by_day = _flags_by_day(rounds=rounds)
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
    Researchers see pseudonyms (the ids the exports carry); admins see usernames."""
    quality = annotator_quality(rounds=rounds)
    usernames = (
        dict(get_user_model().objects.filter(pk__in=quality).values_list("pk", "username"))
        if names
        else {}
    )
    rows = [
        {
            "name": usernames.get(q.annotator_id) or annotator_pseudonym(q.annotator_id),
            "judgments": q.judgments,
            "gold_judgments": q.gold_judgments,
            "gold": _estimate(q.gold_accuracy),
            "agreement": _estimate(q.agreement),
            "trust": q.trust,
            "flagged": q.flagged,
        }
        for q in quality.values()
    ]
    return sorted(rows, key=lambda row: (not row["flagged"], row["trust"], row["name"]))


def _disagreement_rows(*, rounds: list[int] | None) -> list[dict[str, Any]]:
    # Tasks on which everyone agreed are not disagreements, however low they sort.
    found = [d for d in disagreements(rounds=rounds, limit=DISAGREEMENT_ROWS) if d.agreement < 1]
    prompts = dict(
        ComparisonTask.objects.filter(pk__in=[d.task_id for d in found]).values_list(
            "pk", "prompt__messages"
        )
    )
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
    rubrics = _rubrics(rounds)
    axes = _axes(rubrics)
    return render(
        request,
        "frontend/research.html",
        {
            "all_rounds": all_rounds,
            "chosen": chosen,
            **_agreement_section(rounds=chosen, axes=axes),
            "distributions": _distribution_section(rounds=rounds, axes=axes),
            **_flags_section(rounds=rounds, rubrics=rubrics),
            "annotators": _trust_rows(rounds=rounds, names=Role.ADMIN in user_roles(request.user)),
            "review_below": settings.TRUST_REVIEW_BELOW,
            "disagreements": _disagreement_rows(rounds=rounds),
            **_export_section(request, chosen=chosen, rubrics=rubrics),
            "snapshots": DatasetSnapshot.objects.order_by("-id")[:SNAPSHOT_ROWS],
        },
    )


# The export filters the page's form offers, by the query parameter names the export API
# reads (``annotation.exports.export_filters_parse``); ``round`` is the page's own round choice.
FILTER_FIELDS = (
    "policy", "rubric", "min_agreement", "min_trust", "flag", "exclude_flag", "axis", "since",
    "until", "consensus", "weighting",
)  # fmt: skip
REPEATED_FILTERS = ("policy", "flag", "exclude_flag")


def _filter_params(request: HttpRequest, chosen: list[int]) -> list[tuple[str, str]]:
    """The filters that are set, as query parameters for the export API."""
    params = [("round", str(r)) for r in chosen]
    for name in FILTER_FIELDS:
        params += [(name, v.strip()) for v in request.GET.getlist(name) if v.strip()]
    return params


def _filter_form(
    params: list[tuple[str, str]], errors: dict[str, list[str]], rubrics: list[Rubric]
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
        "rubric_labels": [r.label for r in Rubric.objects.order_by("name", "version")],
        "policy_names": list(
            PolicyVersion.objects.order_by("-created_at").values_list("name", flat=True)[:50]
        ),
        "axes": _axes(rubrics),
        "flags": list(flags.items()),
        "consensus_rules": CONSENSUS_RULES,
        "weightings": WEIGHTINGS,
    }


def _export_section(
    request: HttpRequest, *, chosen: list[int], rubrics: list[Rubric]
) -> dict[str, Any]:
    fmt = request.GET.get("format", "trl")
    if fmt not in FORMATS:
        fmt = "trl"
    params = _filter_params(request, chosen)
    spec = FORMATS[fmt]
    rows: list[dict[str, Any]] = []
    count, error, errors = 0, "", {}
    try:
        filters = export_filters_parse(QueryDict(urlencode(params)))
        rows = list(itertools.islice(export_rows(fmt=fmt, filters=filters), PREVIEW_ROWS))
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
        "export_form": _filter_form(params, errors, rubrics),
        "export_error": error,
        "preview_columns": columns,
        "preview_rows": cells,
        "row_count": count,
        "row_unit": unit,
        "row_note": note,
        "download_url": f"{reverse('api:export-preferences')}?"
        + urlencode([("format", fmt), *params]),
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


# ---- One task, as the researcher studies it (and where an admin makes it gold)


def _ranking_text(ranking: list[list[int]], names: dict[int, str]) -> str:
    """``A > B = C`` with answer letters from ``names`` (ids where it has none); a tie is
    written in the order the answers were shown."""
    return " > ".join(
        " = ".join(
            names.get(cid, str(cid)) for cid in sorted(group, key=lambda c: (names.get(c, ""), c))
        )
        for group in ranking
    )


def _parse_ranking(text: str, completion_ids: list[int]) -> list[list[int]]:
    """``"12 > 13 = 14"`` (completion ids) or ``"A > B = C"`` (answer letters) to groups of
    completion ids, best first; ``=`` ties. The gold service checks the ids themselves."""
    letters = dict(zip(LETTERS, completion_ids, strict=False))
    groups = []
    for part in text.split(">"):
        group = []
        for token in (t.strip() for t in part.split("=")):
            if token.isascii() and token.isdigit():
                group.append(int(token))
            elif token.upper() in letters:
                group.append(letters[token.upper()])
            else:
                reason = f"{token!r} is neither a completion id nor an answer letter."
                if not token:
                    reason = "Write groups like 12 > 13 = 14 (or A > B = C), best first."
                raise DomainError(f"ranking: {reason}", fields={"ranking": [reason]})
        groups.append(group)
    return groups


def _task_context(task: ComparisonTask, *, names: bool) -> dict[str, Any]:
    slots = list(task.slots.select_related("completion__policy_version").order_by("position"))
    ids = [slot.completion_id for slot in slots]
    letter = dict(zip(ids, LETTERS, strict=False))
    rubric = task.round.rubric
    judgments = list(task.judgments.select_related("rubric").order_by("created_at", "id"))
    usernames = (
        dict(
            get_user_model()
            .objects.filter(pk__in=[j.annotator_id for j in judgments])
            .values_list("pk", "username")
        )
        if names
        else {}
    )
    consensus = task_consensus(ids, [(j.ranking, 1.0) for j in judgments]) if judgments else None
    groups = consensus.groups() if consensus else []
    return {
        "task": task,
        "prompt_messages": [
            # render_untrusted: Markdown without raw HTML, then an allow-list sanitizer.
            {"role": m["role"], "html": mark_safe(render_untrusted(m["content"]))}
            for m in task.prompt.messages
        ],
        "completions": [
            {
                "letter": letter[slot.completion_id],
                "id": slot.completion_id,
                "policy": slot.completion.policy_version.name,
                "html": mark_safe(render_untrusted(slot.completion.text)),
            }
            for slot in slots
        ],
        "axes": rubric.axes,
        "judgments": [_judgment_row(j, letter, usernames, task) for j in judgments],
        "consensus": _ranking_text(groups, letter) if groups else None,
        "consensus_pairs": [
            (letter[a], letter[b], round(consensus.probability(a, b), 3))
            for a, b, _ in consensus.pairs()
        ]
        if consensus
        else [],
        "agreement": task_agreement([j.ranking for j in judgments]),
        "gold": _ranking_text(task.gold_ranking, letter) if task.is_gold else None,
        "gold_default": _ranking_text(task.gold_ranking or groups or [ids], {}),
    }


def _judgment_row(
    judgment: Judgment, letter: dict[int, str], usernames: dict[int, str], task: ComparisonTask
) -> dict[str, Any]:
    rubric = judgment.rubric
    strengths = {s["key"]: s["label"] for s in rubric.strength_labels}
    flags = {f["key"]: f["label"] for f in rubric.flags}
    gold = gold_pair_score(judgment.ranking, task.gold_ranking) if task.is_gold else None
    return {
        "annotator": annotator_pseudonym(judgment.annotator_id),
        "username": usernames.get(judgment.annotator_id),
        "ranking": _ranking_text(judgment.ranking, letter),
        "scores": [
            (letter[int(cid)], [per_axis.get(a["key"], "—") for a in rubric.axes])
            for cid, per_axis in sorted(
                judgment.scores.items(), key=lambda item: letter.get(int(item[0]), "")
            )
        ],
        "strength": strengths.get(judgment.strength, judgment.strength),
        "flags": [flags.get(f, f) for f in judgment.flags],
        "rationale": judgment.rationale,
        "seconds": round(judgment.time_spent_ms / 1000),
        "created_at": judgment.created_at,
        "gold": gold,
    }


def _render_task(
    request: HttpRequest, task_id: int, *, form: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    task = get_object_or_404(
        ComparisonTask.objects.select_related("prompt", "round__rubric"), pk=task_id
    )
    is_admin = Role.ADMIN in user_roles(request.user)
    context = _task_context(task, names=is_admin)
    context["is_admin"] = is_admin
    context["form"] = form or {"ranking": context["gold_default"], "errors": []}
    return render(request, "frontend/research_task.html", context, status=status)


@role_required(Role.RESEARCHER, Role.ADMIN)
def research_task(request: HttpRequest, task_id: int) -> HttpResponse:
    return _render_task(request, task_id)


@require_POST
@role_required(Role.ADMIN)
def research_task_gold(request: HttpRequest, task_id: int) -> HttpResponse:
    """Mark a task gold with the reference ranking typed in the form, or unmark it."""
    text = request.POST.get("ranking", "")
    try:
        if request.POST.get("action") == "unmark":
            task_unmark_gold(task_id=task_id)
            messages.success(request, f"Task {task_id} is an ordinary task again.")
        else:
            ids = list(
                TaskCompletion.objects.filter(task_id=task_id)
                .order_by("position")
                .values_list("completion_id", flat=True)
            )
            task = task_mark_gold(task_id=task_id, ranking=_parse_ranking(text, ids))
            letters = dict(zip(ids, LETTERS, strict=False))
            messages.success(
                request,
                f"Task {task_id} is gold: {_ranking_text(task.gold_ranking, letters)}. Every "
                f"annotator of round {task.round.number} will be served it once.",
            )
    except DomainError as exc:
        if exc.status == 404:
            raise Http404(exc.detail) from None
        errors = [
            f"{path}: {reason}" if path != "ranking" else reason
            for path, reasons in exc.fields.items()
            for reason in reasons
        ] or [exc.detail]
        return _render_task(request, task_id, form={"ranking": text, "errors": errors}, status=400)
    return redirect("frontend:research-task", task_id=task_id)


# ---- A snapshot's datasheet


def _datasheet_file(snapshot: DatasetSnapshot) -> Path | None:
    """The snapshot's README.md, if it is there and its path stays under the artifacts root (a
    snapshot's path is data, not to be trusted with ``..``)."""
    root = Path(settings.ARTIFACTS_DIR).resolve()
    path = snapshot_datasheet_path(snapshot).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _strip_front_matter(text: str) -> str:
    """Drop a leading YAML front-matter block (``---`` … ``---``): it is the dataset card's
    metadata for the Hub, not prose for the page."""
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return text
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            return "".join(lines[i + 1 :])
    return text


def _manifest_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for key, value in manifest.items()
    ]


@role_required(Role.RESEARCHER, Role.ADMIN)
def research_snapshot(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
    readme = _datasheet_file(snapshot)
    datasheet = None
    if readme is not None:
        text = _strip_front_matter(readme.read_text(encoding="utf-8", errors="replace"))
        # The datasheet quotes prompts and answers: rendered like any other untrusted text.
        datasheet = mark_safe(render_untrusted(text))
    return render(
        request,
        "frontend/research_snapshot.html",
        {
            "snapshot": snapshot,
            "datasheet": datasheet,
            "manifest": _manifest_rows(snapshot.manifest),
        },
    )
