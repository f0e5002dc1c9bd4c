"""The core records: prompts, the policies that answer them (the model registry) and completions."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


def messages_hash(messages: list[dict[str, Any]]) -> str:
    """A stable sha256 of a chat: the same conversation always hashes the same."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Prompt(models.Model):
    messages = models.JSONField(
        help_text="The conversation so far, [{role, content}], ending with the user's turn."
    )
    content_hash = models.CharField(
        max_length=64, unique=True, help_text="sha256 of the canonical messages; one row per chat."
    )
    source = models.CharField(
        max_length=200, blank=True, help_text="Where the prompt came from (file, dataset, person)."
    )
    tags = models.JSONField(default=list, blank=True, help_text="Free labels used to pick prompts.")
    safety = models.BooleanField(
        default=False, help_text="Safety-relevant prompt: the harmless axis decides for it."
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was imported.")

    def __str__(self) -> str:
        return f"Prompt {self.pk}"

    @property
    def last_user_text(self) -> str:
        return str(self.messages[-1]["content"]) if self.messages else ""


class PolicyVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "candidate"
        ACTIVE = "active", "active"
        REJECTED = "rejected", "rejected"
        RETIRED = "retired", "retired"
        # A model outside the platform whose completions were imported with the prompts.
        EXTERNAL = "external", "external"

    name = models.CharField(max_length=200, unique=True, help_text="Human name of this version.")
    base_model = models.CharField(
        max_length=500, blank=True, help_text="Hub id or local path of the weights it starts from."
    )
    adapter_path = models.CharField(
        max_length=500, blank=True, help_text="Adapter or weights, relative to the artifacts root."
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        help_text="The version this one was trained from.",
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.CANDIDATE, help_text="Serving state."
    )
    revision = models.CharField(
        max_length=100,
        blank=True,
        help_text="The hub commit the weights were registered at; empty for a local folder.",
    )
    model_info = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the model's files said when it was registered (parameters from the "
        "safetensors headers, dtype, quantization, chat template, context length, serve-only; "
        "see feedback/serving/model_files.py); empty for versions made before registration "
        "read the files, and for trained and imported ones.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was registered.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=Q(status="active"),
                name="policy_single_active",
                violation_error_message="Only one policy version can be active.",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Completion(models.Model):
    prompt = models.ForeignKey(
        Prompt,
        on_delete=models.CASCADE,
        related_name="completions",
        help_text="The prompt it answers.",
    )
    policy_version = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="completions",
        help_text="The policy that wrote it (an external one for imported completions).",
    )
    sample_index = models.PositiveIntegerField(
        help_text="Which of the policy's samples for this prompt (0-based)."
    )
    text = models.TextField(help_text="The answer, untrusted model output: always shown inert.")
    sampling_params = models.JSONField(
        default=dict,
        blank=True,
        help_text="How it was sampled: temperature, top_p, max tokens, seed; empty if imported.",
    )
    finish_reason = models.CharField(
        max_length=32, blank=True, help_text="Why generation stopped: stop or length (backend's)."
    )
    prompt_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens in the prompt, as the backend counted them."
    )
    completion_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens generated for this answer."
    )
    latency_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Generation time for this answer in milliseconds (a batch's time shared out).",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was stored.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "policy_version", "sample_index"],
                name="completion_unique_sample",
            )
        ]

    def __str__(self) -> str:
        return f"Completion {self.pk} of prompt {self.prompt_id}"


class Deployment(models.Model):
    """A request to make a policy version the serving one, and what came of it.

    The switch happens only after the serving backend answered a real generation with the new
    version (readiness); until then the previous version keeps serving.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    class Action(models.TextChoices):
        DEPLOY = "deploy", "deploy"
        ROLLBACK = "rollback", "rollback"

    policy_version = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="deployments",
        help_text="The version to serve (deploy) or to go back to (rollback).",
    )
    previous = models.ForeignKey(
        PolicyVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The version that was active when the switch happened.",
    )
    action = models.CharField(
        max_length=16,
        choices=Action.choices,
        default=Action.DEPLOY,
        help_text="deploy a new version, or rollback to an earlier one.",
    )
    backend = models.CharField(max_length=32, help_text="The generation backend told to switch.")
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.PENDING,
        help_text="pending until the backend answered with the version (done) or did not (failed).",
    )
    error = models.TextField(blank=True, help_text="Why it failed, if it did.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who asked for it; empty when the loop deployed it or the account is gone.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was requested.")
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was done or failed."
    )

    def __str__(self) -> str:
        return f"{self.action} {self.policy_version} ({self.status})"


class OutboxMessage(models.Model):
    """A Celery task a request asked for, written in the request's own transaction (the
    transactional outbox). It is published after the commit and marked; one the broker refused
    stays unpublished until ``outbox_publish`` (the beat task ``outbox_relay``) sends it. The id
    is the Celery task id, so a message sent twice (published, then the mark lost) is one task
    id delivered twice, and every task is safe to run twice (DESIGN §7)."""

    id = models.UUIDField(
        primary_key=True,
        default=uuid.uuid4,
        editable=False,
        help_text="Also the Celery task id, so a message sent twice is one task id.",
    )
    task = models.CharField(max_length=200, help_text="The Celery task name.")
    args = models.JSONField(default=list, help_text="The task's positional arguments (ids).")
    queue = models.CharField(max_length=64, help_text="The Celery queue it is sent to.")
    created_at = models.DateTimeField(
        auto_now_add=True, help_text="When the request's transaction wrote it."
    )
    published_at = models.DateTimeField(
        null=True, blank=True, help_text="When the broker took it; empty while it waits."
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Tries to publish it so far.")
    last_error = models.TextField(blank=True, help_text="Why the last try to publish failed.")

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(published_at=None), name="outbox_pending"
            )
        ]

    def __str__(self) -> str:
        return f"{self.task}{self.args} ({'sent' if self.published_at else 'pending'})"


class AuditEvent(models.Model):
    """One admin action: who, what (the route and its ids), when, and how it ended."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The admin who acted (empty once the account is deleted).",
    )
    actor_name = models.CharField(max_length=150, help_text="Kept if the account is deleted.")
    action = models.CharField(max_length=100, help_text="The route's name, e.g. api:round-close.")
    method = models.CharField(max_length=8, help_text="The HTTP method, e.g. POST.")
    path = models.CharField(max_length=500, help_text="The request's path.")
    target = models.JSONField(default=dict, help_text="The ids named in the URL.")
    status_code = models.PositiveSmallIntegerField(help_text="The HTTP status it ended with.")
    ip = models.GenericIPAddressField(
        null=True, blank=True, help_text="The client's address; empty when unknown."
    )
    at = models.DateTimeField(auto_now_add=True, db_index=True, help_text="When it happened.")

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.method} {self.path}"


class ThrottleHit(models.Model):
    """One request a rate limit let through: the sliding log of feedback/platform/throttle.py
    (for sign-in, one attempt not known to have succeeded). Rows older than the longest
    configured period are pruned by ``feedback.tasks.throttle_windows_prune``."""

    key = models.CharField(max_length=200, help_text="The limit's scope and the client's id.")
    at = models.FloatField(help_text="When it was let through, in seconds since the epoch.")

    class Meta:
        indexes = [models.Index(fields=["key", "at"], name="throttle_hit_key_at")]

    def __str__(self) -> str:
        return f"{self.key} @{self.at:.3f}"


class Webhook(models.Model):
    """A URL an admin registered to be told of events (feedback/platform/webhooks/): each event
    it subscribes to becomes a signed POST, delivered by the worker with retries."""

    url = models.URLField(
        max_length=2000, help_text="Where events are POSTed: http(s), checked against SSRF."
    )
    events = models.JSONField(
        default=list, help_text="The event names it receives (webhooks.events.EVENTS)."
    )
    secret = models.CharField(
        max_length=100,
        help_text="The HMAC-SHA256 key of the X-Feedback-Signature header: shown once, when "
        "created; kept because signing needs it.",
    )
    description = models.CharField(
        max_length=200, blank=True, help_text="What the receiver is, for the admin page."
    )
    active = models.BooleanField(default=True, help_text="Inactive: no new deliveries.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The admin who registered it; empty once the account is gone.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was registered.")

    def __str__(self) -> str:
        return f"Webhook {self.pk} → {self.url}"


class WebhookDelivery(models.Model):
    """One event for one webhook, and how its delivery went: the delivery log.

    queued (an outbox message will run it) → sending (a worker claimed it) → delivered, or
    retrying (until ``next_attempt_at``, then queued again) → … → failed after the last attempt.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        RETRYING = "retrying", "retrying"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed"

    webhook = models.ForeignKey(
        Webhook,
        on_delete=models.CASCADE,
        related_name="deliveries",
        help_text="The webhook it goes to.",
    )
    event_id = models.UUIDField(
        default=uuid.uuid4,
        help_text="The event's id (the body's ``id``): the same in every webhook's delivery of "
        "it, so a receiver can drop one it has seen.",
    )
    event = models.CharField(max_length=64, help_text="The event's name, e.g. gate.decided.")
    payload = models.JSONField(help_text="The JSON body sent, signed, at every attempt.")
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.QUEUED,
        help_text="Where the delivery stands (see the class's docstring).",
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts made so far.")
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="retrying: when the next attempt is due; sending: when the claim is stale.",
    )
    last_status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The HTTP status the last attempt got; empty if none."
    )
    last_error = models.TextField(blank=True, help_text="Why the last attempt failed.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the event happened.")
    delivered_at = models.DateTimeField(
        null=True, blank=True, help_text="When the receiver answered 2xx."
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["retrying", "sending"]),
                name="webhook_delivery_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} → webhook {self.webhook_id} ({self.status})"
