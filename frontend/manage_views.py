"""Admin pages for the human side of the loop: rounds (import, open, watch, close) and the
audit log (rubrics: ``rubric_views``). Each view checks the role, calls services or
selectors of the other packages, renders."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from annotation.imports import prompts_import
from annotation.progress import round_leaderboard, round_set_leaderboard
from annotation.pseudonyms import usernames_by_id
from annotation.rounds import (
    MAX_PRIORITY,
    round_close,
    round_open_for_policy,
    round_open_from_imported,
    round_progress,
    round_set_priority,
    round_stats,
)
from annotation.rubrics import DEFAULT_RUBRIC, rubric_list
from annotation.selectors import round_get, round_list
from feedback.platform.audit import audit_events
from feedback.platform.errors import DomainError
from feedback.platform.roles import Role
from training.automation import automation_create, automation_stop, automation_validate
from training.models import Automation
from training.selectors import automation_of_round

from .forms import posted_int, posted_json_object
from .views import leaderboard_rows, role_required


@role_required(Role.ADMIN)
def manage(request: HttpRequest) -> HttpResponse:
    rounds = round_list()
    rubrics = list(rubric_list())
    return render(
        request,
        "frontend/manage.html",
        {
            "rounds": [(r, round_progress(round_=r)) for r in rounds],
            "import_report": request.session.pop("import_report", None),
            "rubrics": rubrics,
            # Selected: the newest version of 3H, what a round gets when none is chosen.
            "default_rubric": max(
                (r for r in rubrics if r.name == DEFAULT_RUBRIC),
                key=lambda r: r.version,
                default=None,
            ),
        },
    )


@require_POST
@role_required(Role.ADMIN)
def manage_import(request: HttpRequest) -> HttpResponse:
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, "Choose a JSONL file to import.")
        return redirect("frontend:manage")
    skip_invalid = request.POST.get("skip_invalid") == "on"
    try:
        report = prompts_import(
            lines=(line.rstrip(b"\r\n") for line in upload),
            source=(upload.name or "upload")[:200],
            skip_invalid=skip_invalid,
        )
    except DomainError as exc:
        request.session["import_report"] = {
            "ok": False,
            "detail": exc.detail,
            "errors": exc.extra.get("errors", [])[:200],
            "errors_not_shown": exc.extra.get("errors_not_shown", 0),
        }
    else:
        request.session["import_report"] = {"ok": True, **report.as_dict()}
    return redirect("frontend:manage")


@require_POST
@role_required(Role.ADMIN)
def manage_round_open(request: HttpRequest) -> HttpResponse:
    k, overlap = posted_int(request.POST.get("k"), 3), posted_int(request.POST.get("overlap"), 3)
    limit = posted_int(request.POST.get("limit"), 0)
    tags = [t.strip() for t in request.POST.get("tags", "").split(",") if t.strip()]
    if not 2 <= k <= 16 or not 1 <= overlap <= 50 or limit < 0:
        messages.error(request, "K must be 2 to 16, overlap 1 to 50, and at most N prompts ≥ 0.")
        return redirect("frontend:manage")
    automate = request.POST.get("automate") == "on"
    rubric = None
    if request.POST.get("rubric"):
        rubric = rubric_list().filter(pk=posted_int(request.POST.get("rubric"), 0)).first()
        if rubric is None:
            messages.error(request, "No such rubric version.")
            return redirect("frontend:manage")
    try:
        if request.POST.get("source") == "policy":
            settings_ = {}
            if automate:  # checked before anything is written
                settings_ = {
                    "policy_kind": request.POST.get("policy_kind", "dpo"),
                    "policy_rounds": request.POST.get("policy_rounds", "all"),
                    "policy_recipe": posted_json_object(request, "policy_recipe"),
                    "reward_recipe": posted_json_object(request, "reward_recipe"),
                    "rounds_left": max(0, posted_int(request.POST.get("rounds_left"), 0)),
                    "gate_threshold": float(request.POST.get("gate_threshold") or 0.5),
                    "human_gate_prompts": max(
                        0, posted_int(request.POST.get("human_gate_prompts"), 0)
                    ),
                    "human_gate_threshold": float(request.POST.get("human_gate_threshold") or 0.5),
                    "gate_max_kl_drift": float(request.POST["gate_max_kl_drift"])
                    if request.POST.get("gate_max_kl_drift")
                    else None,
                    "prompt_tags": tags,
                    "next_prompts": limit,
                    "next_selection": request.POST.get("next_selection") or "random",
                }
                automation_validate(**settings_)
            with transaction.atomic():
                round_ = round_open_for_policy(
                    k=k,
                    overlap=overlap,
                    tags=tags,
                    limit=limit or None,
                    rubric=rubric,
                    created_by=request.user,
                    **_selection_posted(request),
                )
                if automate:
                    automation_create(round_=round_, created_by=request.user, **settings_)
            messages.success(
                request,
                f"Round {round_.number}: {round_.policy_version.name} is generating "
                f"{k} completions for {len(round_.prompt_ids)} prompts"
                + (", and the round will advance by itself." if automate else "."),
            )
            return redirect("frontend:manage-round", round_id=round_.pk)
        if automate or limit or _selection_posted(request):
            raise DomainError(
                "Automatic rounds, a prompt limit and selection by a reward model need the "
                "policy to generate."
            )
        round_, left_out = round_open_from_imported(
            k=k, overlap=overlap, tags=tags, rubric=rubric, created_by=request.user
        )
    except (DomainError, ValueError) as exc:
        messages.error(request, getattr(exc, "detail", None) or str(exc))
        return redirect("frontend:manage")
    messages.success(
        request,
        f"Opened round {round_.number} with {round_.tasks.count()} tasks"
        + (f" ({left_out} prompts had fewer than {k} distinct completions)." if left_out else "."),
    )
    return redirect("frontend:manage-round", round_id=round_.pk)


def _selection_posted(request: HttpRequest) -> dict[str, Any]:
    """The open-round form's active-learning fields, as ``round_open_for_policy`` takes them
    (nothing for random selection, so that the service's checks name what was set)."""
    selection = request.POST.get("selection") or "random"
    posted: dict[str, Any] = {} if selection == "random" else {"selection": selection}
    for name in ("selection_run", "pool"):
        if request.POST.get(name):
            posted[name] = posted_int(request.POST.get(name), 0) or None
    return posted


@role_required(Role.ADMIN)
def manage_round(request: HttpRequest, round_id: int) -> HttpResponse:
    round_ = round_get(round_id=round_id)
    if round_ is None:
        raise Http404(f"No round {round_id}.")
    stats = round_stats(round_=round_)
    peak = max([row["n"] for row in stats["per_hour"]] + [1])
    bars = [
        {**row, "height": round(100 * row["n"] / peak), "y": 100 - round(100 * row["n"] / peak)}
        for row in stats["per_hour"]
    ]
    total = sum(stats["by_state"].values()) or 1
    states = [
        {"key": key, "label": key.replace("_", " "), "n": n, "width": round(600 * n / total)}
        for key, n in stats["by_state"].items()
    ]
    offset = 0
    for state in states:
        state["x"], offset = offset, offset + state["width"]
    automation = automation_of_round(round_id=round_.pk)
    return render(
        request,
        "frontend/manage_round.html",
        {
            "round": round_,
            "automation": automation,
            "automation_stages": _automation_stages(automation),
            "progress": round_progress(round_=round_),
            "states": states,
            "bars": bars,
            "peak": peak,
            "annotators": stats["annotators"],
            "leaderboard": _leaderboard(round_, viewer_id=request.user.pk),
            "chosen": _chosen(round_),
        },
    )


def _chosen(round_: Any) -> list[dict[str, Any]]:
    """Active learning: the kept prompts with the measure that chose them, most uncertain first
    (empty for random selection, or before the choice is made)."""
    scores = round_.selection_detail.get("scores", {})
    return [{"prompt": pid, "measure": scores.get(str(pid))}
            for pid in round_.selection_detail.get("kept", [])]  # fmt: skip


def _leaderboard(round_: Any, *, viewer_id: int) -> list[dict[str, Any]]:
    """The round's leaderboard as annotators see it, with each row's username for the admin."""
    board = round_leaderboard(round_=round_)
    usernames = usernames_by_id(user_ids=[row.annotator_id for row in board])
    rows = leaderboard_rows(board, viewer_id=viewer_id)
    for row in rows:
        row["username"] = usernames.get(row["row"].annotator_id, "")
    return rows


def _automation_stages(automation: Automation | None) -> list[dict[str, Any]]:
    """The loop's stages in order, each done, current, failed/stopped, skipped or to come."""
    if automation is None:
        return []
    Stage = Automation.Stage
    began = {entry["stage"]: entry["at"] for entry in automation.history}
    order = [stage for stage in Stage if stage not in Automation.FINISHED]
    reached = max((order.index(e["stage"]) for e in automation.history if e["stage"] in order),
                  default=0)  # fmt: skip
    halted = automation.stage in (Stage.FAILED, Stage.STOPPED)
    rows = []
    for i, stage in enumerate(order):
        if i == reached and halted:
            state = automation.stage
        elif stage == automation.stage:
            state = "current"
        elif i <= reached:
            state = "done" if stage in began else "skipped"
        else:
            state = "todo"
        rows.append({"key": stage, "label": stage.label, "state": state, "at": began.get(stage)})
    done = automation.stage == Stage.DONE
    rows.append({"key": Stage.DONE, "label": Stage.DONE.label, "state": "done" if done else "todo",
                 "at": began.get(Stage.DONE)})  # fmt: skip
    return rows


@require_POST
@role_required(Role.ADMIN)
def manage_round_stop(request: HttpRequest, round_id: int) -> HttpResponse:
    automation = automation_of_round(round_id=round_id)
    if automation is None:
        raise Http404(f"Round {round_id} has no automation.")
    automation = automation_stop(automation_id=automation.pk)
    messages.success(
        request,
        f"Round {automation.round.number} no longer advances by itself; a training run in "
        "progress was cancelled. Whatever was already deployed stays deployed.",
    )
    return redirect("frontend:manage-round", round_id=round_id)


@require_POST
@role_required(Role.ADMIN)
def manage_round_close(request: HttpRequest, round_id: int) -> HttpResponse:
    round_close(round_id=round_id)
    messages.success(request, "Round closed: no new leases; held leases may still be submitted.")
    return redirect("frontend:manage-round", round_id=round_id)


@require_POST
@role_required(Role.ADMIN)
def manage_round_priority(request: HttpRequest, round_id: int) -> HttpResponse:
    """Which open round's tasks annotators get first."""
    try:
        round_ = round_set_priority(round_id=round_id, priority=int(request.POST["priority"]))
    except (KeyError, ValueError):
        messages.error(request, f"Priority: a whole number from 0 to {MAX_PRIORITY}.")
    except DomainError as error:
        if error.status == 404:
            raise Http404(f"No round {round_id}.") from None
        messages.error(request, str(error))
    else:
        messages.success(request, f"Round {round_.number}'s priority is {round_.priority}.")
    return redirect("frontend:manage-round", round_id=round_id)


@require_POST
@role_required(Role.ADMIN)
def manage_round_leaderboard(request: HttpRequest, round_id: int) -> HttpResponse:
    """Turn the round's leaderboard on or off for annotators, with usernames or pseudonyms."""
    enabled = request.POST.get("leaderboard_enabled") == "on"
    names = request.POST.get("leaderboard_names") == "on"
    try:
        round_ = round_set_leaderboard(round_id=round_id, enabled=enabled, names=names)
    except DomainError:
        raise Http404(f"No round {round_id}.") from None
    if not enabled:
        messages.success(request, f"Round {round_.number}'s leaderboard is off for annotators.")
    else:
        who = "usernames" if names else "pseudonyms"
        messages.success(
            request, f"Annotators now see round {round_.number}'s leaderboard, with {who}."
        )
    return redirect("frontend:manage-round", round_id=round_id)


@role_required(Role.ADMIN)
def manage_audit(request: HttpRequest) -> HttpResponse:
    """The audit log, newest first; ?actor= narrows it to one account."""
    actor = request.GET.get("actor", "")[:150] or None
    return render(
        request,
        "frontend/audit.html",
        {"events": audit_events(actor=actor)[:200], "actor": actor or ""},
    )
