"""Admin pages from judgments to serving: register a model, start a training run and watch it,
then the release path of the version it made: run the gate, read its result, deploy, roll back,
with the deployment history on the Policies page. Each view checks the role, calls services or
selectors of the other packages, renders; the gate, deployment and rollback run as jobs, and a
page showing one in flight refreshes itself until it finishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from annotation.rounds import round_pair_counts
from feedback.platform.errors import DomainError
from feedback.platform.roles import Role
from feedback.serving.model_files import model_info_summary
from feedback.serving.policies import (
    deployment_request,
    policy_register_model,
    rollback_request,
)
from training.execution import MIN_PROMPTS_TO_HOLD_OUT
from training.gate import gate_request
from training.models import GateEvaluation, TrainingRun
from training.releases import (
    automation_gates,
    deployment_history,
    gate_reward_runs,
    policy_rows,
    release_pending,
    run_release,
)
from training.runs import training_run_cancel, training_run_create
from training.selectors import snapshot_list, training_run_get, training_run_list
from training.snapshots import snapshot_create_text

from .forms import GateForm, posted_json_object
from .run_charts import (
    compare_problem,
    compare_tables,
    final_numbers,
    headline,
    recipe_rows,
    run_charts,
    split_summary,
)
from .views import role_required

POLICY_ACTIONS = ("deploy", "rollback", "gate")


class RegisterModelForm(forms.Form):
    """What ``policy_register_model`` takes; the service checks the source itself."""

    source = forms.CharField(max_length=500)
    name = forms.CharField(max_length=200, required=False)
    revision = forms.CharField(max_length=100, required=False)
    adapter = forms.CharField(max_length=500, required=False)
    activate = forms.BooleanField(required=False)


@role_required(Role.ADMIN)
def manage_policies(request: HttpRequest) -> HttpResponse:
    """The versions with what their names and files say, the release path, and the form that
    registers a model (a POST here: a refused source is shown beside its field)."""
    form = RegisterModelForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and (done := _register_model(request, form)):
        messages.success(request, done)
        return redirect("frontend:manage-policies")
    pending = release_pending()  # first: see training.releases.run_release
    rows = policy_rows()
    return render(
        request,
        "frontend/policies.html",
        {
            "rows": [(row, model_info_summary(row.policy.model_info)) for row in rows],
            "deployments": deployment_history(),
            "gate_chart": _gate_chart(),
            "reward_runs": gate_reward_runs(),
            "gate_form": GateForm(),
            "register_form": form,
            "pending": pending,
        },
        status=400 if form.errors else 200,
    )


def _register_model(request: HttpRequest, form: RegisterModelForm) -> str | None:
    """Register the posted model; the message to show, or None with the reasons on ``form``."""
    if not form.is_valid():
        return None
    data = form.cleaned_data
    try:
        policy = policy_register_model(
            source=data["source"], name=data["name"], revision=data["revision"],
            adapter=data["adapter"], activate=data["activate"], requested_by=request.user,
            via_request=True,
        )  # fmt: skip
    except DomainError as exc:
        for field, reasons in exc.fields.items():
            for reason in reasons:
                form.add_error(field if field in form.fields else None, reason)
        if not exc.fields:
            form.add_error(None, exc.detail)
        return None
    then = "; deploy requested: it switches once the backend answers with it"
    then = then if data["activate"] else ""
    return f"Registered {policy.name} ({policy.status}{then})."


def _gate_chart(height: int = 120) -> list[dict[str, Any]]:
    """Each automatic round's gate: the candidate's win rate against the policy that served the
    round, as bars (SVG drawn on the server, CSP-safe), the threshold as a tick."""
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
        for i, a in enumerate(automation_gates())
    ]


def _back(request: HttpRequest) -> HttpResponse:
    """To the page the form was on (a run's page or the Policies page)."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("frontend:manage-policies")


def _request_gate(request: HttpRequest, policy_id: int) -> str:
    form = GateForm(request.POST)
    if not form.is_valid():
        raise DomainError(f"The gate was not started: {form.problems()}")
    data = form.cleaned_data
    gate = gate_request(
        candidate_id=policy_id, reward_run_id=data["reward_run"], prompts=data["prompts"],
        threshold=data["threshold"], max_kl_drift=data["max_kl_drift"],
        human_prompts=data["human_prompts"] or 0,
        human_threshold=0.5 if data["human_threshold"] is None else data["human_threshold"],
    )  # fmt: skip
    people = (
        f" If it passes, people compare the two on {gate.human_prompts} more held-out prompts, "
        "side by side, and decide."
        if gate.human_prompts
        else " If it passes, it is deployed."
    )
    return (
        f"Gate {gate.pk} started: {gate.candidate.name} against {gate.baseline.name} on "
        f"{gate.prompt_count} held-out prompts, judged by the reward model of run "
        f"{gate.reward_run_id}.{people}"
    )


@require_POST
@role_required(Role.ADMIN)
def manage_policy_action(request: HttpRequest, policy_id: int, action: str) -> HttpResponse:
    """Deploy a version, roll the active one back, or run a candidate's gate."""
    if action not in POLICY_ACTIONS:
        raise Http404("No such action.")
    try:
        if action == "gate":
            done = _request_gate(request, policy_id)
        elif action == "rollback":
            deployment = rollback_request(policy_id=policy_id, requested_by=request.user)
            done = (
                f"Rollback to {deployment.policy_version.name} requested: it switches once the "
                "backend answers with it."
            )
        else:
            deployment = deployment_request(policy_id=policy_id, requested_by=request.user)
            done = (
                f"Deploy of {deployment.policy_version.name} requested: it switches once the "
                "backend answers with it."
            )
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, done)
    return _back(request)


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
                recipe=posted_json_object(request, "recipe"),
                snapshot_id=int(snapshot) if snapshot.isascii() and snapshot.isdigit() else None,
                consensus=request.POST.get("consensus", "bradley_terry"),
                top_ranked=request.POST.get("top_ranked") == "on", created_by=request.user,
            )  # fmt: skip
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect("frontend:manage-training")
        messages.success(request, f"Run {run.pk} queued on the training queue.")
        return redirect("frontend:manage-training-run", run_id=run.pk)
    runs = training_run_list()[:50]
    return render(
        request,
        "frontend/training.html",
        {
            "runs": [(run, headline(run.metrics)) for run in runs],
            "kinds": TrainingRun.Kind.choices,
            "rounds": round_pair_counts(),
            "snapshots": snapshot_list()[:30],
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


@role_required(Role.ADMIN)
def manage_training_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = training_run_get(run_id=run_id)
    if run is None:
        raise Http404(f"No run {run_id}.")
    if request.method == "POST":
        try:
            training_run_cancel(run_id=run.pk)
            messages.success(request, "Cancel requested: the run stops after its current step.")
        except DomainError as exc:
            messages.error(request, exc.detail)
        return redirect("frontend:manage-training-run", run_id=run.pk)
    percent = round(100 * run.progress_step / run.progress_total) if run.progress_total else 0
    release = run_release(run=run)
    return render(
        request,
        "frontend/training_run.html",
        {
            "run": run,
            "charts": run_charts(run.kind, [(f"Run {run.pk}", run.metrics_history)]),
            "numbers": final_numbers(run.kind, run.metrics),
            "split_summary": split_summary(run, min_prompts=MIN_PROMPTS_TO_HOLD_OUT),
            "recipe_rows": recipe_rows(run.recipe),
            "tensorboard": _tensorboard_folder(run),
            "percent": percent,
            "release": release,
            "gate_form": GateForm(),
            # Refreshed while the run, or a gate or deployment of what it made, is in flight.
            "refresh": run.status in TrainingRun.ACTIVE
            or (release is not None and release.pending),
        },
    )


def _tensorboard_folder(run: TrainingRun) -> str | None:
    """Where the run's TensorBoard event files are, when it wrote any."""
    if not run.artifact_path:
        return None
    folder = Path(settings.ARTIFACTS_DIR) / run.artifact_path / "tensorboard"
    return str(folder) if folder.is_dir() else None


def _run_ids(request: HttpRequest) -> list[int]:
    """``?runs=1,2`` or ``?runs=1&runs=2`` (the list page's checkboxes), in order, once each."""
    ids: list[int] = []
    for value in request.GET.getlist("runs"):
        for part in value.split(","):
            if part.strip().isascii() and part.strip().isdigit() and int(part) not in ids:
                ids.append(int(part))
    return ids


@role_required(Role.ADMIN)
def manage_training_compare(request: HttpRequest) -> HttpResponse:
    """Two or more runs of one kind overlaid: loss and each held-out metric by step, a colour a
    run, with their final metrics and the recipe fields that differ side by side. Runs of
    different kinds are refused with the reason (their losses measure different things)."""
    ids = _run_ids(request)
    runs = list(training_run_list().filter(pk__in=ids))
    runs.sort(key=lambda run: ids.index(run.pk))
    problem = compare_problem(ids, runs)
    kind = runs[0].kind if runs else None
    context = {
        "runs": runs,
        "problem": problem,
        "choices": training_run_list().filter(kind=kind)[:50] if kind else training_run_list()[:50],
        "chosen": ids,
    }
    if not problem:
        context |= {
            "charts": run_charts(kind, [(f"Run {run.pk}", run.metrics_history) for run in runs]),
            **compare_tables(runs),
        }
    return render(
        request, "frontend/training_compare.html", context, status=400 if problem else 200
    )
