"""The work: assignments (leases), judgments and their corrections, demonstrations and the
skips of them, export jobs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from feedback.models import Completion, Prompt

from .rounds import ComparisonTask, Rubric


class Assignment(models.Model):
    """A task leased to one annotator. Its id is random, so it cannot be guessed from another's."""

    class Status(models.TextChoices):
        LEASED = "leased", "leased"
        SUBMITTED = "submitted", "submitted"
        SKIPPED = "skipped", "skipped"
        EXPIRED = "expired", "expired"

    id = models.UUIDField(
        primary_key=True,
        default=uuid.uuid4,
        editable=False,
        help_text="Random, so one annotator cannot guess another's.",
    )
    task = models.ForeignKey(
        ComparisonTask,
        on_delete=models.CASCADE,
        related_name="assignments",
        help_text="The task leased.",
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="assignments",
        help_text="Who holds it.",
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.LEASED,
        help_text="leased, then submitted, skipped or expired.",
    )
    leased_at = models.DateTimeField(help_text="When the lease was taken (or taken again).")
    lease_expires_at = models.DateTimeField(
        help_text="Past this the slot returns to the pool unless the judgment came in."
    )
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was submitted, skipped or expired."
    )
    skip_reason = models.CharField(
        max_length=500, blank=True, help_text="Why the annotator skipped it, in their words."
    )
    # ``db_default`` as well, so that rows written by raw SQL (benchmarks/_seed.py) stay valid.
    display_order = models.JSONField(
        default=list,
        db_default=[],
        blank=True,
        help_text="The task's completion ids in the order this annotator is shown them: sorted "
        "by a SHA-256 of the round's seed, the task, the annotator and the completion "
        "(``distribution.assignment_display_order``), so position bias does not line up.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "annotator"], name="assignment_unique_annotator"
            ),
        ]
        indexes = [
            models.Index(
                fields=["annotator", "lease_expires_at"],
                name="assignment_active_lease",
                condition=Q(status="leased"),
            ),
            models.Index(fields=["task", "status"], name="assignment_task_status"),
        ]

    def __str__(self) -> str:
        return f"Assignment {self.pk}"


class CurrentJudgments(models.Manager["Judgment"]):
    """The judgments that stand: a superseded one (an annotator's correction replaced it) is
    left out. It is ``Judgment.objects``, the default manager, rather than an opt-in
    ``current()``: every reader (exports, snapshots, quality, consensus, counts, the related
    managers ``task.judgments`` and ``annotator.judgments``) then sees only current judgments
    without having to remember to ask, and the history is the explicit choice
    (``Judgment.all_versions``). Raw SQL over the table says ``superseded_by_id IS NULL`` itself
    (``exports/sql.py``)."""

    def get_queryset(self) -> models.QuerySet[Judgment]:
        return super().get_queryset().filter(superseded_by__isnull=True)


class Judgment(models.Model):
    """What one annotator decided about one task. Immutable once written: a correction is a new
    judgment, and the one it replaces is kept as it was, only marked superseded
    (``annotation.corrections``)."""

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, editable=False, help_text="Random, not guessable."
    )
    assignment = models.ForeignKey(
        Assignment,
        on_delete=models.PROTECT,
        related_name="judgments",
        help_text="The lease it was submitted under: one current judgment per assignment, "
        "and the ones its corrections superseded.",
    )
    task = models.ForeignKey(
        ComparisonTask,
        on_delete=models.PROTECT,
        related_name="judgments",
        help_text="The task judged (the assignment's, kept here for queries).",
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="judgments",
        help_text="Who judged (the assignment's).",
    )
    rubric = models.ForeignKey(
        Rubric,
        on_delete=models.PROTECT,
        related_name="judgments",
        help_text="The rubric version it was made under.",
    )
    ranking = models.JSONField(help_text="Groups of completion ids, best first; a group is a tie.")
    scores = models.JSONField(help_text="{completion id: {axis: 1..7}} for every completion.")
    strength = models.CharField(
        max_length=40,
        blank=True,
        help_text="Rubric strength label, best vs second; empty on a tie.",
    )
    flags = models.JSONField(default=list, help_text="Rubric flag keys raised.")
    none_acceptable = models.BooleanField(
        default=False,
        db_default=False,
        help_text="The annotator found none of the answers acceptable (still ranked): pair "
        "exports leave it out unless asked, KTO labels every answer undesirable, and the "
        "prompt goes to the demonstration queue. The rubric flag all_bad says the same.",
    )
    rationale = models.TextField(blank=True, help_text="Why, in the annotator's words; optional.")
    time_spent_ms = models.PositiveIntegerField(
        help_text="Time on the task, as the client measured."
    )
    display_order = models.JSONField(
        default=list,
        db_default=[],
        blank=True,
        help_text="The completion ids in the order the annotator was shown them (the "
        "assignment's), kept with what they decided; empty where it was not recorded.",
    )
    body_sha256 = models.CharField(
        max_length=64, help_text="Hash of the canonical submitted body: a resubmit must match it."
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was submitted.")
    superseded_by = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="supersedes",
        help_text="The correction that replaced it; empty while it is the current judgment.",
    )
    superseded_at = models.DateTimeField(
        null=True, blank=True, help_text="When a correction replaced it; empty while current."
    )

    all_versions = models.Manager()  # superseded judgments too: the history
    objects = CurrentJudgments()

    class Meta:
        default_manager_name = "objects"
        constraints = [
            models.UniqueConstraint(
                fields=["assignment"],
                condition=Q(superseded_by__isnull=True),
                name="judgment_one_current_per_assignment",
            ),
            models.CheckConstraint(
                condition=Q(superseded_by__isnull=True, superseded_at__isnull=True)
                | Q(superseded_by__isnull=False, superseded_at__isnull=False),
                name="judgment_superseded_with_time",
            ),
        ]
        indexes = [
            models.Index(fields=["task"], name="judgment_task"),
            # Exports stream judgments in this order, and filter on the date range.
            models.Index(fields=["created_at", "id"], name="judgment_created"),
        ]

    def __str__(self) -> str:
        return f"Judgment {self.pk}"


class Demonstration(models.Model):
    """An ideal answer an annotator wrote, or edited from a completion: SFT data."""

    prompt = models.ForeignKey(
        Prompt,
        on_delete=models.PROTECT,
        related_name="demonstrations",
        help_text="The prompt it answers.",
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="demonstrations",
        help_text="The annotator who wrote it.",
    )
    text = models.TextField(help_text="The ideal answer, as the assistant's reply.")
    source_completion = models.ForeignKey(
        Completion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The completion it was edited from, if any.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was written.")
    edited_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its author last edited it (allowed while its prompt's round is open).",
    )

    def __str__(self) -> str:
        return f"Demonstration {self.pk}"


class DemonstrationSkip(models.Model):
    """A prompt an annotator chose not to demonstrate, with why; it is not offered to them again."""

    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="+", help_text="The prompt passed over."
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Who passed it over.",
    )
    reason = models.CharField(max_length=500, help_text="Why, in the annotator's words.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was skipped.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "annotator"], name="demonstration_skip_once_per_annotator"
            )
        ]

    def __str__(self) -> str:
        return f"Demonstration skip {self.pk}"


class ExportJob(models.Model):
    """An export written to a file by a worker, for exports too large for one request."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, editable=False, help_text="Random, not guessable."
    )
    format = models.CharField(max_length=32, help_text="Export format (annotation/exports.py).")
    file_format = models.CharField(max_length=16, help_text="jsonl or parquet.")
    filters = models.JSONField(default=dict, help_text="The filters, as the API received them.")
    pseudonymous = models.BooleanField(
        default=True, help_text="Annotators as keyed hashes (false only on an admin's request)."
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.QUEUED,
        help_text="queued, running, then succeeded or failed.",
    )
    progress_done = models.PositiveBigIntegerField(default=0, help_text="Judgments read so far.")
    progress_total = models.PositiveBigIntegerField(default=0, help_text="Judgments to read.")
    rows = models.PositiveBigIntegerField(default=0, help_text="Rows written.")
    path = models.CharField(max_length=500, blank=True, help_text="File under ARTIFACTS_DIR.")
    size_bytes = models.PositiveBigIntegerField(default=0, help_text="Size of the finished file.")
    sha256 = models.CharField(max_length=64, blank=True, help_text="sha256 of the finished file.")
    error = models.TextField(blank=True, help_text="Why it failed, if it did.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who asked for it.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was asked for.")
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker began writing it."
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last progress write: a stale one means the worker died."
    )
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Workers that began it (a dead worker's job is retried once)."
    )
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it succeeded or failed."
    )

    def __str__(self) -> str:
        return f"Export {self.pk} ({self.format}, {self.file_format})"
