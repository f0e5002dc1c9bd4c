"""Dataset snapshots and training runs. The TrainingRun row is the source of truth for a job."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from feedback.models import PolicyVersion


class DatasetSnapshot(models.Model):
    """An immutable dataset file cut from judgments, with its manifest. Never rewritten."""

    class Kind(models.TextChoices):
        PREFERENCE = "preference", "preference pairs"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    filters = models.JSONField(default=dict, help_text="The filters it was cut with (rounds, …).")
    path = models.CharField(max_length=500, help_text="Folder under ARTIFACTS_DIR.")
    manifest = models.JSONField(
        default=dict,
        help_text="Rows per split, sha256, rubric versions, source rounds, split rule.",
    )
    sha256 = models.CharField(max_length=64, help_text="sha256 over the split files, in order.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} snapshot {self.pk}"


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        REWARD = "reward", "reward model"
        DPO = "dpo", "DPO policy update"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    base_policy = models.ForeignKey(
        PolicyVersion, on_delete=models.PROTECT, related_name="training_runs",
        help_text="The policy whose weights the run starts from.",
    )  # fmt: skip
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.PROTECT, related_name="runs")
    recipe = models.JSONField(help_text="The full recipe (defaults plus overrides) it ran with.")
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    metrics_history = models.JSONField(default=list, help_text="Logged metrics, one dict a step.")
    metrics = models.JSONField(default=dict, help_text="Final and held-out metrics.")
    artifact_path = models.CharField(max_length=500, blank=True, help_text="Under ARTIFACTS_DIR.")
    produced_policy = models.ForeignKey(
        PolicyVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The candidate version a policy-training run registered.",
    )  # fmt: skip
    provenance = models.JSONField(
        default=dict, help_text="Recipe, dataset sha256, base model, seed, git commit, versions."
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="How many times a worker claimed it (a dead worker's run is retried once).",
    )
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["base_policy"],
                condition=Q(status__in=["queued", "running"]),
                name="training_one_active_run_per_policy",
                violation_error_message="This policy already has a queued or running run.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"


class GateEvaluation(models.Model):
    """Does a candidate beat the serving policy? Reward-model win rate on held-out prompts."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        PASSED = "passed", "passed"
        FAILED = "failed", "failed"
        ERROR = "error", "error"

    candidate = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="gates")
    baseline = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="+")
    reward_run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, related_name="gates")
    prompt_count = models.PositiveIntegerField(help_text="Held-out prompts compared.")
    threshold = models.FloatField(
        help_text="The candidate passes when its win rate is at least this."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    win_rate = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, help_text="Mean rewards, reward delta, length delta.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"gate {self.pk}: {self.candidate} vs {self.baseline} ({self.status})"
