"""Policy versions: registering them, deploying one (exactly one active), rolling back.

A deploy is a Deployment row, then a job on the ``generation`` queue: the job asks the serving
backend to generate one real token with the new version (for transformers this loads the new
weights, for vLLM the LoRA adapter), and only when that answers does it switch the active version,
in one transaction. A failed readiness check leaves the active version serving.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from feedback.models import Deployment, PolicyVersion
from feedback.platform.errors import DomainError
from feedback.platform.outbox import outbox_enqueue

DEPLOYABLE = {PolicyVersion.Status.CANDIDATE, PolicyVersion.Status.RETIRED}


def policy_active() -> PolicyVersion | None:
    """The version that serves now (at most one is active: a partial unique index says so)."""
    return PolicyVersion.objects.filter(status=PolicyVersion.Status.ACTIVE).first()


def policy_list() -> QuerySet[PolicyVersion]:
    """Every version, newest first."""
    return PolicyVersion.objects.order_by("-created_at", "-id")


def deployment_get(*, deployment_id: int) -> Deployment | None:
    related = Deployment.objects.select_related("policy_version", "previous")
    return related.filter(pk=deployment_id).first()


def policy_register(
    *,
    name: str,
    base_model: str = "",
    adapter_path: str = "",
    parent: PolicyVersion | None = None,
    status: str = PolicyVersion.Status.CANDIDATE,
    activate_if_none: bool = False,
) -> PolicyVersion:
    """Add a version (or return the one with this name): every PolicyVersion is made here, by
    the tiny model's build, a training run's result and imported completions' model names. The
    first can become active at once."""
    with transaction.atomic():
        policy, _ = PolicyVersion.objects.get_or_create(
            name=name,
            defaults={
                "base_model": base_model,
                "adapter_path": adapter_path,
                "parent": parent,
                "status": status,
            },
        )
        if (
            activate_if_none
            and not PolicyVersion.objects.select_for_update()
            .filter(status=PolicyVersion.Status.ACTIVE)
            .exists()
        ):
            policy.status = PolicyVersion.Status.ACTIVE
            policy.save(update_fields=["status"])
    return policy


def deployment_request(
    *,
    policy_id: int,
    requested_by: Any = None,
    action: str = Deployment.Action.DEPLOY,
    enqueue: bool = True,
) -> Deployment:
    policy = PolicyVersion.objects.filter(pk=policy_id).first()
    if policy is None:
        raise DomainError("No such policy version.", code="not_found", status=404)
    if policy.status == PolicyVersion.Status.ACTIVE:
        raise DomainError(f"{policy.name} is already active.", code="already_active", status=409)
    if policy.status not in DEPLOYABLE:
        raise DomainError(
            f"{policy.name} is {policy.status}; only candidate or retired versions can serve.",
            code="not_deployable",
            status=409,
        )
    with transaction.atomic():
        deployment = Deployment.objects.create(
            policy_version=policy,
            action=action,
            backend=settings.GENERATION_BACKEND,
            requested_by=requested_by,
        )
        if enqueue:  # `simulate` runs the deployment in its own process instead
            _enqueue(deployment.pk)
    return deployment


def rollback_request(*, policy_id: int, requested_by: Any = None) -> Deployment:
    """Put back the version that served before ``policy_id`` (which must be the active one)."""
    active = PolicyVersion.objects.filter(pk=policy_id, status=PolicyVersion.Status.ACTIVE).first()
    if active is None:
        raise DomainError(
            "Only the active version can be rolled back.", code="not_active", status=409
        )
    last = (
        Deployment.objects.filter(policy_version=active, status=Deployment.Status.DONE)
        .exclude(previous=None)
        .order_by("-finished_at")
        .first()
    )
    if last is None:
        raise DomainError(
            f"{active.name} has no earlier version to roll back to.", code="no_previous", status=409
        )
    return deployment_request(
        policy_id=last.previous_id, requested_by=requested_by, action=Deployment.Action.ROLLBACK
    )


def _enqueue(deployment_id: int) -> None:
    outbox_enqueue(task="feedback.tasks.deployment_run", args=[deployment_id], queue="generation")


def deployment_run(*, deployment_id: int) -> Deployment:
    """Check the new version answers, then switch. Idempotent: a finished deployment is left be."""
    from feedback.serving.backends import BackendUnavailable, get_backend, target_for

    deployment = Deployment.objects.select_related("policy_version").get(pk=deployment_id)
    if deployment.status != Deployment.Status.PENDING:
        return deployment
    try:
        get_backend(deployment.backend).ready(target_for(deployment.policy_version))
    except BackendUnavailable as exc:
        deployment.status = Deployment.Status.FAILED
        deployment.error = str(exc)[:2000]
        deployment.finished_at = timezone.now()
        deployment.save(update_fields=["status", "error", "finished_at"])
        return deployment
    with transaction.atomic():
        current = (
            PolicyVersion.objects.select_for_update()
            .filter(status=PolicyVersion.Status.ACTIVE)
            .first()
        )
        target = PolicyVersion.objects.select_for_update().get(pk=deployment.policy_version_id)
        if current is not None and current.pk != target.pk:
            current.status = PolicyVersion.Status.RETIRED
            current.save(update_fields=["status"])
        target.status = PolicyVersion.Status.ACTIVE
        target.save(update_fields=["status"])
        deployment.previous = current
        deployment.status = Deployment.Status.DONE
        deployment.finished_at = timezone.now()
        deployment.save(update_fields=["previous", "status", "finished_at"])
    return deployment
