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
        SFT = "sft", "prompt-completion (SFT)"
        KTO = "kto", "unpaired desirable / undesirable completions (KTO)"
        TEXT = "text", "plain-text corpus (continued pre-training)"
        EXPORT = "export", "a frozen export in one of the research formats"

    kind = models.CharField(
        max_length=16, choices=Kind.choices, help_text="What its rows are, and so what it trains."
    )
    filters = models.JSONField(default=dict, help_text="The filters it was cut with (rounds, …).")
    path = models.CharField(max_length=500, help_text="Folder under ARTIFACTS_DIR.")
    manifest = models.JSONField(
        default=dict,
        help_text="Rows per split, sha256, rubric versions, source rounds, split rule.",
    )
    sha256 = models.CharField(max_length=64, help_text="sha256 over the split files, in order.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who cut it (empty when a run or the loop did).",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was cut.")

    def __str__(self) -> str:
        return f"{self.kind} snapshot {self.pk}"


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        REWARD = "reward", "reward model"
        DPO = "dpo", "DPO policy update"
        KTO = "kto", "KTO policy update (unpaired desirable / undesirable answers)"
        SFT = "sft", "supervised fine-tuning"
        ONLINE_RL = "online_rl", "online RL (GRPO / RLOO) against the reward model"
        PRETRAIN = "pretrain", "continued pre-training on a plain-text corpus"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(
        max_length=16,
        choices=Kind.choices,
        help_text="The training method (one trainer file each).",
    )
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.QUEUED,
        help_text="queued, running, then succeeded, failed or cancelled.",
    )
    base_policy = models.ForeignKey(
        PolicyVersion, on_delete=models.PROTECT, related_name="training_runs",
        help_text="The policy whose weights the run starts from.",
    )  # fmt: skip
    snapshot = models.ForeignKey(
        DatasetSnapshot,
        on_delete=models.PROTECT,
        related_name="runs",
        help_text="The data it trains on.",
    )
    recipe = models.JSONField(help_text="The full recipe (defaults plus overrides) it ran with.")
    progress_step = models.PositiveIntegerField(default=0, help_text="Optimizer steps done.")
    progress_total = models.PositiveIntegerField(
        default=0, help_text="Optimizer steps the run will take (0 until training starts)."
    )
    metrics_history = models.JSONField(default=list, help_text="Logged metrics, one dict a step.")
    metrics = models.JSONField(default=dict, help_text="Final and held-out metrics.")
    eval_split = models.JSONField(
        default=dict, blank=True,
        help_text="What it held out, by prompt (or document): whose split (the snapshot's, or "
        "the run's own when the snapshot held none out), the rule, and prompts and rows per side.",
    )  # fmt: skip
    artifact_path = models.CharField(max_length=500, blank=True, help_text="Under ARTIFACTS_DIR.")
    produced_policy = models.ForeignKey(
        PolicyVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The candidate version a policy-training run registered.",
    )  # fmt: skip
    provenance = models.JSONField(
        default=dict, help_text="Recipe, dataset sha256, base model, seed, git commit, versions."
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life: a stale one means the worker died."
    )
    attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="How many times a worker claimed it (a dead worker's run is retried once).",
    )
    cancel_requested = models.BooleanField(
        default=False, help_text="Asked to stop while running; it stops at the next step."
    )
    error = models.TextField(blank=True, help_text="Why it failed, if it did.")
    warnings = models.JSONField(
        default=list,
        blank=True,
        help_text="What the registry said of the base when the run was created (a chat model "
        "for continued pre-training, a quantized base, too little device memory).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who started it (empty when the loop or a script did).",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was asked for.")
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker claimed it (the latest claim)."
    )
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it succeeded, failed or was cancelled."
    )

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
    """Does a candidate beat the serving policy? The reward model's win rate on held-out prompts,
    then, with ``human_prompts``, people's side by side (``training.human_gate``)."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        JUDGING = "judging", "judging: people compare the two side by side"
        PASSED = "passed", "passed"
        FAILED = "failed", "failed"
        ERROR = "error", "error"

    candidate = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="gates",
        help_text="The version being judged.",
    )
    baseline = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The version it is compared with: the one serving when the gate was asked for.",
    )
    reward_run = models.ForeignKey(
        TrainingRun,
        on_delete=models.PROTECT,
        related_name="gates",
        help_text="The reward-model run that scores both versions' answers.",
    )
    prompt_count = models.PositiveIntegerField(help_text="Held-out prompts compared.")
    threshold = models.FloatField(
        help_text="The candidate passes when its win rate is at least this."
    )
    max_kl_drift = models.FloatField(
        null=True, blank=True,
        help_text="The candidate fails when its KL drift from the baseline (nats per answer) "
        "exceeds this; empty: not checked.",
    )  # fmt: skip
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.PENDING,
        help_text="pending, then passed or failed (or error when it could not be measured).",
    )
    win_rate = models.FloatField(
        null=True,
        blank=True,
        help_text="Share of answer pairs where the candidate's reward is higher (a tie is half).",
    )
    metrics = models.JSONField(
        default=dict,
        help_text="Mean rewards, reward and length deltas, per-axis deltas, KL drift, failed_on.",
    )
    error = models.TextField(blank=True, help_text="Why it could not be measured, if so.")
    # The human stage (training/human_gate.py): after the reward model's check passes, people
    # compare the two policies' answers side by side, and they decide.
    human_prompts = models.PositiveIntegerField(
        default=0,
        help_text="Held-out prompts people compare the two versions' answers on, once the "
        "reward model's check passed; 0: the reward model decides alone.",
    )
    human_threshold = models.FloatField(
        default=0.5,
        help_text="The candidate passes when the lower end of the 95% interval of its decisive "
        "human win rate (judgments preferring one answer) is at least this (0.5: people prefer "
        "it, beyond chance).",
    )
    human_overlap = models.PositiveSmallIntegerField(
        default=1, help_text="Judgments wanted for each side-by-side task."
    )
    human_tags = models.JSONField(
        default=list, blank=True, help_text="The held-out prompts must have every one of these."
    )
    human_round = models.ForeignKey(
        "annotation.Round", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The side-by-side round people judge (once the reward model's check passed).",
    )  # fmt: skip
    human_win_rate = models.FloatField(
        null=True, blank=True,
        help_text="Share of side-by-side judgments preferring the candidate (a tie is half).",
    )  # fmt: skip
    human_lower_bound = models.FloatField(
        null=True,
        blank=True,
        help_text="Lower end of the 95% Wilson interval of the candidate's share of the "
        "side-by-side judgments that prefer one answer (ties left out): what decides.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was asked for.")
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When its verdict (or error) was written."
    )

    def __str__(self) -> str:
        return f"gate {self.pk}: {self.candidate} vs {self.baseline} ({self.status})"


class Automation(models.Model):
    """A round that advances by itself once it has enough judgments.

    Stages, in order: waiting (for judgments) → reward (a reward-model run on every judged round
    so far) → policy (a DPO run on this round's pairs, from the serving policy) → gate (the
    candidate against the serving policy) → deploy (when the gate passed) → next round (opened
    with the then-serving policy, automated in turn while ``rounds_left`` lasts) → done. A stage's
    output is stored before the next starts, so advancing is idempotent; ``history`` says when
    each stage began.
    """

    class Stage(models.TextChoices):
        WAITING = "waiting", "waiting for judgments"
        REWARD = "reward", "training the reward model"
        POLICY = "policy", "training the policy"
        GATE = "gate", "gate: candidate against the serving policy"
        DEPLOY = "deploy", "deploying the candidate"
        NEXT_ROUND = "next_round", "opening the next round"
        DONE = "done", "done"
        STOPPED = "stopped", "stopped"
        FAILED = "failed", "failed"

    FINISHED = (Stage.DONE, Stage.STOPPED, Stage.FAILED)

    round = models.OneToOneField("annotation.Round", on_delete=models.CASCADE,
                                 related_name="automation",
                                 help_text="The round whose judgments start it.")  # fmt: skip
    required_judgments = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Judgments the round needs before training starts; empty: every task judged "
        "as often as the round's overlap asks.",
    )  # fmt: skip
    policy_kind = models.CharField(
        max_length=16, default="dpo",
        help_text="The policy step: dpo (on the round's pairs) or online_rl (against the reward "
        "model just trained).",
    )  # fmt: skip
    policy_rounds = models.CharField(
        max_length=8, default="all", db_default="all",
        help_text="What DPO trains on: all (the pairs of every judged round so far, as the reward "
        "model does) or this (this round's pairs alone: only the serving policy's own samples).",
    )  # fmt: skip
    reward_recipe = models.JSONField(default=dict, help_text="Reward-model recipe overrides.")
    policy_recipe = models.JSONField(default=dict, help_text="Policy-step recipe overrides.")
    gate_threshold = models.FloatField(
        default=0.5, help_text="Win rate a candidate needs; 0.5: not worse than the serving policy."
    )
    gate_max_kl_drift = models.FloatField(
        null=True, blank=True,
        help_text="The gate also fails a candidate whose KL drift from the serving policy exceeds "
        "this (nats per answer); empty: not checked.",
    )  # fmt: skip
    gate_prompts = models.PositiveIntegerField(
        default=32, help_text="Held-out prompts the gate compares the two versions on."
    )
    human_gate_prompts = models.PositiveIntegerField(
        default=0,
        help_text="Held-out prompts people compare the candidate and the serving policy on, "
        "side by side, after the reward model's check; 0: no human stage.",
    )
    human_gate_threshold = models.FloatField(
        default=0.5, help_text="Lower bound of the human win rate the candidate needs."
    )
    human_gate_overlap = models.PositiveSmallIntegerField(
        default=1, help_text="Judgments wanted for each side-by-side task."
    )
    next_prompts = models.PositiveIntegerField(
        default=0, help_text="Prompts in the next round; 0 means as many as this round has."
    )
    prompt_tags = models.JSONField(
        default=list, blank=True, help_text="The next round takes unused prompts with these tags."
    )
    rounds_left = models.PositiveIntegerField(
        default=0, help_text="Further automated rounds to open after this one."
    )
    next_selection = models.CharField(
        max_length=16,
        default="random",
        help_text="How the next round chooses its prompts: random, uncertainty (by the reward "
        "model this automation trains) or disagreement (annotation/round_selection.py).",
    )
    next_pool = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="With a next_selection other than random: how many unused prompts to score "
        "(default: all that match).",
    )
    stage = models.CharField(
        max_length=16,
        choices=Stage.choices,
        default=Stage.WAITING,
        help_text="Where it is now; see the class doc for the order.",
    )
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="This round's pairs (for DPO).",
    )  # fmt: skip
    reward_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The reward-model run it started.",
    )  # fmt: skip
    policy_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The policy run (DPO or online RL) it started.",
    )  # fmt: skip
    gate = models.ForeignKey(
        GateEvaluation, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The gate it asked for on the candidate.",
    )  # fmt: skip
    deployment = models.ForeignKey(
        "feedback.Deployment", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The deployment of a candidate that passed.",
    )  # fmt: skip
    next_round = models.ForeignKey(
        "annotation.Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The round it opened next, if any.",
    )  # fmt: skip
    history = models.JSONField(default=list, help_text="[{stage, at}] in order.")
    stop_requested = models.BooleanField(
        default=False, help_text="An admin asked it to stop; it stops at its next step."
    )
    error = models.TextField(blank=True, help_text="Why it failed, if it did.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who automated the first round; the rounds it opens inherit them.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was set up.")
    updated_at = models.DateTimeField(auto_now=True, help_text="Its last change.")

    def __str__(self) -> str:
        return f"automation of round {self.round_id} ({self.stage})"
