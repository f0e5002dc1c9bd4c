"""Pages. Each view checks the role, calls services or selectors of the other packages, renders.

The annotator's workspace and the demonstration page are small shells: their scripts talk to the
JSON API, so the page and a script see the same rules and the same errors.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation.generation import round_open_for_policy
from annotation.imports import prompts_import
from annotation.models import Round
from annotation.rounds import round_close, round_open_from_imported, round_progress, round_stats
from feedback.audit import audit_events
from feedback.errors import DomainError
from feedback.middleware import database_unavailable, is_database_outage
from feedback.models import Deployment, PolicyVersion
from feedback.policies import deployment_request, rollback_request
from feedback.registry import policy_registry_info
from feedback.roles import Role, user_roles
from feedback.throttle import login_rate_exceeded
from training.automation import automation_create, automation_stop, automation_validate
from training.models import Automation, DatasetSnapshot, GateEvaluation, TrainingRun
from training.runs import training_run_cancel, training_run_create
from training.snapshots import snapshot_create_text


def role_required(
    *roles: Role,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not user_roles(request.user) & set(roles):
                return render(
                    request,
                    "frontend/error.html",
                    {"message": "Your account does not have the role this page needs."},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send each role to its own page."""
    roles = user_roles(request.user)
    if Role.ADMIN in roles:
        return redirect("frontend:manage")
    if Role.RESEARCHER in roles:
        return redirect("frontend:research")
    if Role.ANNOTATOR in roles:
        return redirect("frontend:workspace")
    return render(request, "frontend/error.html", {"message": "Your account has no role yet."})


@role_required(Role.ANNOTATOR)
def workspace(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/workspace.html", {"lease_seconds": settings.LEASE_SECONDS})


@role_required(Role.ANNOTATOR)
def demonstrate(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/demonstrate.html")


@role_required(Role.ADMIN)
def manage(request: HttpRequest) -> HttpResponse:
    rounds = Round.objects.select_related("rubric").order_by("-number")
    return render(
        request,
        "frontend/manage.html",
        {
            "rounds": [(r, round_progress(round_=r)) for r in rounds],
            "import_report": request.session.pop("import_report", None),
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
        }
    else:
        request.session["import_report"] = {"ok": True, **report.as_dict()}
    return redirect("frontend:manage")


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return -1


def _json_field(request: HttpRequest, name: str) -> dict[str, Any]:

    text = request.POST.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DomainError(f"{name}: not JSON ({exc.msg}).", fields={name: [exc.msg]}) from None
    if not isinstance(value, dict):
        raise DomainError(f"{name}: must be a JSON object.", fields={name: ["Not an object."]})
    return value


@require_POST
@role_required(Role.ADMIN)
def manage_round_open(request: HttpRequest) -> HttpResponse:
    k, overlap = _int(request.POST.get("k"), 3), _int(request.POST.get("overlap"), 3)
    limit = _int(request.POST.get("limit"), 0)
    tags = [t.strip() for t in request.POST.get("tags", "").split(",") if t.strip()]
    if not 2 <= k <= 16 or not 1 <= overlap <= 50 or limit < 0:
        messages.error(request, "K must be 2 to 16, overlap 1 to 50, and at most N prompts ≥ 0.")
        return redirect("frontend:manage")
    automate = request.POST.get("automate") == "on"
    try:
        if request.POST.get("source") == "policy":
            settings_ = {}
            if automate:  # checked before anything is written
                settings_ = {
                    "policy_kind": request.POST.get("policy_kind", "dpo"),
                    "policy_recipe": _json_field(request, "policy_recipe"),
                    "reward_recipe": _json_field(request, "reward_recipe"),
                    "rounds_left": max(0, _int(request.POST.get("rounds_left"), 0)),
                    "gate_threshold": float(request.POST.get("gate_threshold") or 0.5),
                    "gate_max_kl_drift": float(request.POST["gate_max_kl_drift"])
                    if request.POST.get("gate_max_kl_drift")
                    else None,
                    "prompt_tags": tags,
                    "next_prompts": limit,
                }
                automation_validate(**settings_)
            with transaction.atomic():
                round_ = round_open_for_policy(
                    k=k, overlap=overlap, tags=tags, limit=limit or None, created_by=request.user
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
        if automate or limit:
            raise DomainError("Automatic rounds and a prompt limit need the policy to generate.")
        round_, left_out = round_open_from_imported(
            k=k, overlap=overlap, tags=tags, created_by=request.user
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


@role_required(Role.ADMIN)
def manage_round(request: HttpRequest, round_id: int) -> HttpResponse:
    round_ = get_object_or_404(Round.objects.select_related("rubric"), pk=round_id)
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
    automation = (
        Automation.objects.select_related(
            "reward_run", "policy_run__produced_policy", "gate", "deployment", "next_round"
        )
        .filter(round=round_)
        .first()
    )
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
        },
    )


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
    automation = get_object_or_404(Automation, round_id=round_id)
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


@role_required(Role.ADMIN)
def manage_policies(request: HttpRequest) -> HttpResponse:
    policies = PolicyVersion.objects.select_related("parent").order_by("-created_at", "-id")
    deployments = Deployment.objects.select_related("policy_version", "previous").order_by(
        "-created_at"
    )[:20]
    # Lineage: the run that made each version (its data and recipe), and its latest gate.
    made_by = {
        run.produced_policy_id: run
        for run in TrainingRun.objects.filter(produced_policy__isnull=False).select_related(
            "snapshot"
        )
    }
    gates = {g.candidate_id: g for g in GateEvaluation.objects.order_by("id")}
    return render(
        request,
        "frontend/policies.html",
        {
            "policies": [
                (p, policy_registry_info(p), made_by.get(p.pk), gates.get(p.pk)) for p in policies
            ],
            "deployments": deployments,
            "gate_chart": _gate_chart(),
        },
    )


def _gate_chart(height: int = 120) -> list[dict[str, Any]]:
    """Each automatic round's gate: the candidate's win rate against the policy that served the
    round, as bars (SVG drawn on the server, CSP-safe), the threshold as a tick."""
    automations = (
        Automation.objects.filter(gate__win_rate__isnull=False)
        .select_related("round", "gate")
        .order_by("round__number")
    )
    return [
        {
            "round": a.round.number,
            "win_rate": a.gate.win_rate,
            "passed": a.gate.status == GateEvaluation.Status.PASSED,
            "x": 10 + 40 * i,
            "y": round(height * (1 - a.gate.win_rate)),
            "h": round(height * a.gate.win_rate),
            "tick": round(height * (1 - a.gate.threshold)),
        }
        for i, a in enumerate(automations)
    ]


@require_POST
@role_required(Role.ADMIN)
def manage_policy_action(request: HttpRequest, policy_id: int, action: str) -> HttpResponse:
    try:
        if action == "rollback":
            deployment = rollback_request(policy_id=policy_id, requested_by=request.user)
        else:
            deployment = deployment_request(policy_id=policy_id, requested_by=request.user)
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"{deployment.get_action_display().capitalize()} of {deployment.policy_version.name} "
            "requested: it switches once the backend answers with it.",
        )
    return redirect("frontend:manage-policies")


@role_required(Role.ADMIN)
def manage_training(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and request.POST.get("action") == "corpus":
        return _upload_corpus(request)
    if request.method == "POST":
        rounds = [int(r) for r in request.POST.getlist("round") if r.isascii() and r.isdigit()]
        snapshot = request.POST.get("snapshot", "")
        try:
            run = training_run_create(
                kind=request.POST.get("kind", ""), rounds=rounds or None,
                recipe=_json_field(request, "recipe"),
                snapshot_id=int(snapshot) if snapshot.isascii() and snapshot.isdigit() else None,
                consensus=request.POST.get("consensus", "bradley_terry"),
                top_ranked=request.POST.get("top_ranked") == "on", created_by=request.user,
            )  # fmt: skip
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect("frontend:manage-training")
        messages.success(request, f"Run {run.pk} queued on the training queue.")
        return redirect("frontend:manage-training-run", run_id=run.pk)
    runs = TrainingRun.objects.select_related("base_policy", "produced_policy").order_by("-id")[:50]
    return render(
        request,
        "frontend/training.html",
        {
            "runs": runs,
            "kinds": TrainingRun.Kind.choices,
            "rounds": Round.objects.order_by("number").values_list("number", flat=True),
            "snapshots": DatasetSnapshot.objects.order_by("-id")[:30],
        },
    )


def _upload_corpus(request: HttpRequest) -> HttpResponse:
    """A plain-text corpus from the training page becomes a text snapshot."""
    upload = request.FILES.get("corpus")
    try:
        if upload is None:
            raise DomainError("Choose a plain-text file to upload.")
        if upload.size > settings.IMPORT_MAX_BYTES:
            raise DomainError(f"The corpus is larger than {settings.IMPORT_MAX_BYTES} bytes.")
        snapshot = snapshot_create_text(
            lines=iter(upload), name=upload.name or "upload", created_by=request.user
        )
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        rows = snapshot.manifest["rows"]
        messages.success(
            request,
            f"Snapshot {snapshot.pk}: {rows['train']} documents to train on, {rows['eval']} "
            "held out. Choose it below with continued pre-training.",
        )
    return redirect("frontend:manage-training")


def _loss_chart(
    history: list[dict[str, Any]], width: int = 600, height: int = 160
) -> dict[str, Any]:
    """An SVG polyline of the training loss, drawn on the server (no script, CSP-safe)."""
    points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    if len(points) < 2:
        return {"points": "", "max": None, "min": None}
    steps = [p[0] for p in points]
    losses = [p[1] for p in points]
    low, high = min(losses), max(losses)
    span_x = (max(steps) - min(steps)) or 1
    span_y = (high - low) or 1
    coords = " ".join(
        f"{(step - min(steps)) / span_x * width:.1f},{height - (loss - low) / span_y * height:.1f}"
        for step, loss in points
    )
    return {"points": coords, "max": round(high, 4), "min": round(low, 4), "last_step": steps[-1]}


@role_required(Role.ADMIN)
def manage_training_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(
        TrainingRun.objects.select_related("base_policy", "produced_policy", "snapshot"), pk=run_id
    )
    if request.method == "POST":
        try:
            training_run_cancel(run_id=run.pk)
            messages.success(request, "Cancel requested: the run stops after its current step.")
        except DomainError as exc:
            messages.error(request, exc.detail)
        return redirect("frontend:manage-training-run", run_id=run.pk)
    percent = round(100 * run.progress_step / run.progress_total) if run.progress_total else 0
    return render(
        request,
        "frontend/training_run.html",
        {"run": run, "chart": _loss_chart(run.metrics_history), "percent": percent},
    )


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        body = {"code": "not_found", "detail": "No such route.", "fields": {}}
        return JsonResponse(body, status=404)
    return render(request, "frontend/error.html", {"message": "Page not found."}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_database_outage(sys.exc_info()[1]):  # raised outside a view (see the middleware)
        return database_unavailable(request)
    if _is_api(request):
        body = {
            "code": "server_error",
            "detail": "Internal error; it has been logged.",
            "fields": {},
        }
        return JsonResponse(body, status=500)
    return render(request, "frontend/error.html", {"message": "Something went wrong."}, status=500)


class ThrottledLoginView(auth_views.LoginView):
    """Django's sign-in page, with the sign-in rate limits (feedback/throttle.py): past them the
    form says when to try again and answers 429, whether or not the password was right."""

    template_name = "frontend/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = login_rate_exceeded(request, username=request.POST.get("username", ""))
        if wait is None:
            return super().post(request, *args, **kwargs)
        # The form is not validated: that would check the password, which is what is limited.
        seconds = math.ceil(wait)
        context = self.get_context_data(
            throttled=f"Too many sign-in attempts. Try again in {seconds} s."
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(seconds)
        return response


@role_required(Role.ADMIN)
def manage_audit(request: HttpRequest) -> HttpResponse:
    """The audit log, newest first; ?actor= narrows it to one account."""
    actor = request.GET.get("actor", "")[:150] or None
    return render(
        request,
        "frontend/audit.html",
        {"events": audit_events(actor=actor)[:200], "actor": actor or ""},
    )
