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
    model_info: dict[str, Any] | None = None,
    revision: str = "",
) -> PolicyVersion:
    """Add a version (or return the one with this name): every PolicyVersion is made here, by
    the tiny model's build, a training run's result, imported completions' model names and
    ``policy_register_model`` (which adds what the files say). The first can become active at
    once."""
    with transaction.atomic():
        policy, _ = PolicyVersion.objects.get_or_create(
            name=name,
            defaults={
                "base_model": base_model,
                "adapter_path": adapter_path,
                "parent": parent,
                "status": status,
                "model_info": model_info or {},
                "revision": revision,
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


def policy_register_model(
    *,
    source: str,
    name: str | None = None,
    revision: str | None = None,
    adapter: str | None = None,
    activate: bool = False,
    requested_by: Any = None,
    via_request: bool = False,
) -> PolicyVersion:
    """Register a model a user brings (a local folder, a GGUF file or a hub id in the local
    cache) as a candidate, with what its files say; ``activate`` then deploys it through the
    usual path, even when nothing serves yet: a model nobody has run here yet (it may need a
    GPU, or a llama.cpp server) becomes active only once the backend answers with it. The command
    passes ``via_request=False`` and is audited here; a page or API request is audited by the
    audit middleware, like every admin request."""
    from pathlib import Path

    from feedback.serving.model_files import model_inspect, stored_path

    facts = model_inspect(source, revision=revision, adapter=adapter)
    hub = facts.revision is not None  # a hub id, read from the cache at this commit
    base_model = source.strip() if hub else stored_path(facts.path)
    adapter_path = stored_path(facts.adapter.path) if facts.adapter else ""
    # Named after what distinguishes it: the adapter, else the hub id or the folder (file).
    default = Path(adapter_path).name if adapter_path else base_model
    name = (name or "").strip() or (default if hub and not adapter_path else Path(default).name)
    if len(name) > 200:
        too_long = "A version's name has at most 200 characters."
        raise DomainError(too_long, fields={"name": [too_long]})
    info = facts.as_dict()
    taken = f"A version named {name} exists already; choose another name."
    if PolicyVersion.objects.filter(name=name).exists():
        raise DomainError(taken, code="duplicate", status=409, fields={"name": [taken]})
    with transaction.atomic():  # the version, its deployment and its audit record, or none
        policy = policy_register(
            name=name, base_model=base_model, adapter_path=adapter_path, model_info=info,
            revision=facts.revision or "",
        )  # fmt: skip
        if (policy.base_model, policy.adapter_path) != (base_model, adapter_path):
            # Another registration took the name between the check and the insert.
            raise DomainError(taken, code="duplicate", status=409, fields={"name": [taken]})
        if activate:
            deployment_request(policy_id=policy.pk, requested_by=requested_by)
        if not via_request:
            _audit_command(policy=policy, source=source, requested_by=requested_by)
    return policy


def _audit_command(*, policy: PolicyVersion, source: str, requested_by: Any) -> None:
    """The audit log's record of a registration made outside a request (manage.py)."""
    import getpass

    from feedback.models import AuditEvent

    try:
        operator = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        operator = "unknown"
    AuditEvent.objects.create(
        actor=requested_by,
        actor_name=requested_by.get_username() if requested_by else f"{operator} (manage.py)",
        action="command:register_model",
        method="CLI",
        path=f"manage.py register_model {source}"[:500],
        target={"policy_id": str(policy.pk), "name": policy.name},
        status_code=201,
    )


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
    active = PolicyVersion.objects.filter(pk=policy_id).first()
    if active is None:
        raise DomainError("No such policy version.", code="not_found", status=404)
    if active.status != PolicyVersion.Status.ACTIVE:
        raise DomainError(
            f"Only the active version can be rolled back; {active.name} is {active.status}.",
            code="not_active",
            status=409,
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
    """Load the new version where it will serve (an adapter into a `vllm serve` replica, vLLM's
    engine for new weights), check it answers, then switch. A rollback is the same path: the
    previous version is loaded again if the server lost it. Idempotent: a finished deployment is
    left be."""
    from feedback.serving.backends import (
        BackendUnavailable,
        backend_load,
        get_backend,
        target_for,
    )

    deployment = Deployment.objects.select_related("policy_version").get(pk=deployment_id)
    if deployment.status != Deployment.Status.PENDING:
        return deployment
    try:
        backend = get_backend(deployment.backend)
        target = target_for(deployment.policy_version)
        backend_load(backend, target)
        backend.ready(target)
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
