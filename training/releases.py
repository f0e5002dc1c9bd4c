"""The release path as an admin sees it (selectors): each policy version with the run that made
it, its latest gate, and what Deploy, Roll back and Run the gate would do now, each with the
reason when it cannot; the deployment history; and one training run's candidate on its way out.

The rules mirror the services' refusals (``feedback.serving.policies``, ``training.gate``) so a
page can disable a button with the reason instead of offering a click that is then refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet

from feedback.models import Deployment, PolicyVersion
from feedback.serving.guidance import policy_registry_info
from feedback.serving.policies import DEPLOYABLE, policy_active

from .models import Automation, GateEvaluation, TrainingRun
from .runs import overall_reward_runs


@dataclass(frozen=True)
class Action:
    """A button: enabled, or disabled with the reason shown beside it."""

    allowed: bool
    reason: str = ""
    target: PolicyVersion | None = None  # a rollback's destination


@dataclass
class PolicyRow:
    policy: PolicyVersion
    info: dict[str, Any]
    made_by: TrainingRun | None
    gate: GateEvaluation | None  # the newest
    deploy: Action | None = None  # None: not offered for this status
    rollback: Action | None = None
    run_gate: Action | None = None


@dataclass
class DeploymentRow:
    deployment: Deployment
    who: str
    source: str  # the version it replaced (or will replace, while pending)
    took: timedelta | None


@dataclass
class Release:
    """What the run page shows about the version a run produced."""

    policy: PolicyVersion
    gates: list[GateEvaluation]
    deployments: list[DeploymentRow]
    row: PolicyRow
    pending: bool  # a gate or a deployment is still running: the page refreshes
    reward_runs: list[TrainingRun] = field(default_factory=list)


def gate_reward_runs() -> list[TrainingRun]:
    """The reward models a gate can judge with, newest (the default) first."""
    return list(overall_reward_runs().order_by("-id")[:20])


def _pending_deployment() -> Deployment | None:
    pending = Deployment.objects.filter(status=Deployment.Status.PENDING)
    return pending.select_related("policy_version").order_by("id").first()


def _wait_for(busy: Deployment) -> Action:
    # Two switches in flight would race for "active"; the second waits for the first.
    what = "the rollback to" if busy.action == Deployment.Action.ROLLBACK else "the deployment of"
    return Action(False, f"Wait for {what} {busy.policy_version.name} to finish.")


def rollback_option(*, policy: PolicyVersion, busy: Deployment | None = None) -> Action:
    """Where Roll back on the active ``policy`` would go (``rollback_request``'s rule: the
    version its newest finished deployment replaced), or why there is nowhere to go."""
    if busy is not None:
        return _wait_for(busy)
    last = (
        Deployment.objects.filter(policy_version=policy, status=Deployment.Status.DONE)
        .exclude(previous=None)
        .select_related("previous")
        .order_by("-finished_at")
        .first()
    )
    if last is None:
        return Action(
            False, f"Nothing to roll back to: {policy.name} is the first version deployed."
        )
    before = last.previous
    if before.status not in DEPLOYABLE:
        why = f"Nothing to roll back to: {before.name}, which served before, is {before.status}."
        return Action(False, why)
    return Action(True, target=before)


def _deploy_option(policy: PolicyVersion, busy: Deployment | None, gating: bool) -> Action:
    if busy is not None:
        return _wait_for(busy)
    if gating:
        return Action(False, "Its gate is running; it deploys by itself if it passes.")
    return Action(True)


def _gate_option(has_active: bool, has_judge: bool, gating: bool) -> Action:
    if gating:
        return Action(False, "Its gate is running.")
    if not has_active:
        return Action(False, "No active version to compare it with.")
    if not has_judge:
        return Action(False, "The gate needs a succeeded reward-model run: train one first.")
    return Action(True)


def policy_rows(*, policies: QuerySet[PolicyVersion] | None = None) -> list[PolicyRow]:
    """Policy versions newest first, each with its lineage, newest gate and actions."""
    policies = policies if policies is not None else PolicyVersion.objects.all()
    policies = list(policies.select_related("parent").order_by("-created_at", "-id"))
    ids = [p.pk for p in policies]
    runs = TrainingRun.objects.filter(produced_policy__in=ids).select_related("snapshot")
    made_by = {run.produced_policy_id: run for run in runs}
    gates = {
        g.candidate_id: g for g in GateEvaluation.objects.filter(candidate__in=ids).order_by("id")
    }
    busy = _pending_deployment()
    has_active = policy_active() is not None
    has_judge = overall_reward_runs().exists()
    rows = []
    for policy in policies:
        gate = gates.get(policy.pk)
        gating = gate is not None and gate.status == GateEvaluation.Status.PENDING
        row = PolicyRow(policy, policy_registry_info(policy), made_by.get(policy.pk), gate)
        if policy.status == PolicyVersion.Status.ACTIVE:
            row.rollback = rollback_option(policy=policy, busy=busy)
        if policy.status in DEPLOYABLE:
            row.deploy = _deploy_option(policy, busy, gating)
        if policy.status == PolicyVersion.Status.CANDIDATE:
            row.run_gate = _gate_option(has_active, has_judge, gating)
        rows.append(row)
    return rows


def deployment_history(
    *, limit: int = 50, policy: PolicyVersion | None = None
) -> list[DeploymentRow]:
    """Deployments and rollbacks, newest first (those to or from ``policy`` if given): who asked
    (the gate, when a passed gate deployed its candidate), from which version to which, and how
    long the switch took."""
    deployments = Deployment.objects.select_related("policy_version", "previous", "requested_by")
    if policy is not None:
        deployments = deployments.filter(Q(policy_version=policy) | Q(previous=policy))
    deployments = list(deployments.order_by("-created_at", "-id")[:limit])
    gated = set(
        GateEvaluation.objects.filter(
            status=GateEvaluation.Status.PASSED,
            candidate__in=[d.policy_version_id for d in deployments],
        ).values_list("candidate_id", flat=True)
    )
    active = policy_active()
    rows = []
    for d in deployments:
        if d.requested_by is not None:
            who = d.requested_by.get_username()
        else:
            who = "the gate" if d.policy_version_id in gated else "automatic"
        if d.previous is not None:
            source = d.previous.name
        elif d.status == Deployment.Status.PENDING and active is not None:
            source = active.name
        else:
            source = "—"
        took = d.finished_at - d.created_at if d.finished_at else None
        rows.append(DeploymentRow(d, who, source, took))
    return rows


def release_pending() -> bool:
    """Whether a gate or a deployment is still running (a page showing them refreshes)."""
    return (
        GateEvaluation.objects.filter(status=GateEvaluation.Status.PENDING).exists()
        or Deployment.objects.filter(status=Deployment.Status.PENDING).exists()
    )


def run_release(*, run: TrainingRun) -> Release | None:
    """The version ``run`` produced: its gates (newest first), deployments and actions.

    Whether anything is pending is read first: a deployment that finishes while the rest is
    read then leaves a page that refreshes once more, never one that shows the version as it
    was before and stops refreshing."""
    policy = run.produced_policy
    if policy is None:
        return None
    pending = release_pending()
    gates = list(
        GateEvaluation.objects.filter(candidate=policy)
        .select_related("candidate", "baseline", "reward_run")
        .order_by("-id")
    )
    (row,) = policy_rows(policies=PolicyVersion.objects.filter(pk=policy.pk))
    return Release(
        policy=row.policy, gates=gates, deployments=deployment_history(policy=policy, limit=20),
        row=row, pending=pending, reward_runs=gate_reward_runs(),
    )  # fmt: skip


def automation_gates() -> list[Automation]:
    """Automatic rounds whose gate has a win rate, by round: the Policies page charts them."""
    automations = Automation.objects.filter(gate__win_rate__isnull=False)
    return list(automations.select_related("round", "gate").order_by("round__number"))
