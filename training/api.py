"""Training over REST (admin): runs (create, read, cancel), gates, and automatic rounds."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.exports import CONSENSUS_RULES
from annotation.models import Round
from annotation.selectors import round_get
from feedback.platform.errors import DomainError, error_schema
from feedback.platform.roles import IsAdmin
from feedback.platform.strict import (
    BoundedDictField,
    BoundedListField,
    StrictApiView,
    StrictSerializer,
    body_strict,
)

from .automation import automation_create, automation_stop
from .gate import gate_request
from .models import Automation, GateEvaluation, TrainingRun
from .runs import training_run_cancel, training_run_create
from .selectors import automation_of_round, gate_get, training_run_get, training_run_list

ERROR = error_schema()
# More rounds than a run is ever trained on, more recipe fields than any trainer has, more tags
# than a prompt carries: refused by their count before any entry is read.
MAX_ROUNDS = 1000
MAX_RECIPE_FIELDS = 100
MAX_TAGS = 50


class TrainingRunSerializer(serializers.ModelSerializer):
    base_policy = serializers.CharField(source="base_policy.name")
    produced_policy = serializers.CharField(
        source="produced_policy.name", allow_null=True, default=None
    )
    snapshot = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "kind", "status", "base_policy", "snapshot", "recipe", "progress_step",
            "progress_total", "metrics_history", "metrics", "eval_split", "artifact_path",
            "produced_policy",
            "provenance", "heartbeat_at", "cancel_requested", "error", "warnings", "created_at",
            "started_at", "finished_at",
        ]  # fmt: skip

    def get_snapshot(self, run: TrainingRun) -> dict[str, Any]:
        return {
            "id": run.snapshot_id,
            "sha256": run.snapshot.sha256,
            "manifest": run.snapshot.manifest,
        }


def _get(run_id: int) -> TrainingRun:
    run = training_run_get(run_id=run_id)
    if run is None:
        raise DomainError("No such training run.", code="not_found", status=404)
    return run


class TrainingRunListApi(StrictApiView):
    """Start a training run (a job on the ``training`` queue), or list runs newest first."""

    permission_classes = [IsAdmin]

    class TrainingRunInputSerializer(StrictSerializer):
        kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
        rounds = BoundedListField(
            child=serializers.IntegerField(min_value=1), required=False, max_length=MAX_ROUNDS
        )
        base_policy = serializers.IntegerField(required=False, help_text="Default: the active one.")
        recipe = BoundedDictField(
            required=False, max_length=MAX_RECIPE_FIELDS,
            help_text="Overrides of the trainer's recipe; unknown fields are 400s.",
        )  # fmt: skip
        top_ranked = serializers.BooleanField(
            default=False,
            help_text="SFT: also train on each judgment's single best completion.",
        )
        snapshot = serializers.IntegerField(
            required=False,
            help_text="Train on this snapshot instead of cutting one from rounds (pretrain: an "
            "uploaded corpus, see snapshots/text/).",
        )
        consensus = serializers.ChoiceField(
            choices=CONSENSUS_RULES, default="bradley_terry",
            help_text="How a task's several judgments combine into pairs.",
        )  # fmt: skip

    @extend_schema(responses=TrainingRunSerializer(many=True))
    def get(self, request: Request) -> Response:
        runs = training_run_list()[:100]
        return Response(TrainingRunSerializer(runs, many=True).data)

    @extend_schema(
        request=TrainingRunInputSerializer,
        responses={202: TrainingRunSerializer, 400: ERROR, 409: ERROR},
    )
    def post(self, request: Request) -> Response:
        data = self.TrainingRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = training_run_create(
            kind=data.validated_data["kind"],
            rounds=data.validated_data.get("rounds"),
            recipe=data.validated_data.get("recipe"),
            base_policy_id=data.validated_data.get("base_policy"),
            top_ranked=data.validated_data["top_ranked"],
            snapshot_id=data.validated_data.get("snapshot"),
            consensus=data.validated_data["consensus"],
            created_by=request.user,
        )
        return Response(TrainingRunSerializer(_get(run.pk)).data, status=202)


class TrainingRunDetailApi(StrictApiView):
    permission_classes = [IsAdmin]

    @extend_schema(responses={200: TrainingRunSerializer, 404: ERROR})
    def get(self, request: Request, run_id: int) -> Response:
        return Response(TrainingRunSerializer(_get(run_id)).data)


class TrainingRunCancelApi(StrictApiView):
    """Cancel a queued run at once, or ask a running one to stop after its current step."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: TrainingRunSerializer, 404: ERROR, 409: ERROR})
    def post(self, request: Request, run_id: int) -> Response:
        body_strict(request)
        training_run_cancel(run_id=run_id)
        return Response(TrainingRunSerializer(_get(run_id)).data)


class GateSerializer(serializers.ModelSerializer):
    candidate = serializers.CharField(source="candidate.name")
    baseline = serializers.CharField(source="baseline.name")

    class Meta:
        model = GateEvaluation
        fields = [
            "id", "candidate", "baseline", "reward_run", "prompt_count", "threshold",
            "max_kl_drift", "status", "win_rate", "human_prompts", "human_threshold",
            "human_overlap", "human_tags", "human_round", "human_win_rate", "human_lower_bound",
            "metrics", "error", "created_at", "finished_at",
        ]  # fmt: skip


class PolicyGateApi(StrictApiView):
    """Compare a candidate with the active policy (a job): deployed if it wins, else rejected."""

    permission_classes = [IsAdmin]

    class GateInputSerializer(StrictSerializer):
        reward_run = serializers.IntegerField(required=False, help_text="Default: the newest.")
        prompts = serializers.IntegerField(min_value=1, max_value=2000, default=32)
        threshold = serializers.FloatField(
            min_value=0, max_value=1, default=0.55, help_text="Win rate needed to pass."
        )
        max_kl_drift = serializers.FloatField(
            min_value=0, required=False, allow_null=True,
            help_text="Fail a candidate whose KL drift from the active policy (nats per answer) "
            "exceeds this. Default: not checked.",
        )  # fmt: skip
        human_prompts = serializers.IntegerField(
            min_value=0, max_value=2000, default=0,
            help_text="After the reward model's check passes, people compare the two "
            "versions' answers to this many held-out prompts side by side, blind, and decide. "
            "0: the reward model decides alone.",
        )  # fmt: skip
        human_threshold = serializers.FloatField(
            min_value=0, max_value=1, default=0.5,
            help_text="The candidate passes when the lower end of the 95% interval of its "
            "human win rate is at least this.",
        )  # fmt: skip
        human_overlap = serializers.IntegerField(
            min_value=1, max_value=50, default=1, help_text="Judgments per side-by-side task."
        )
        human_tags = BoundedListField(
            child=serializers.CharField(max_length=100), required=False, max_length=MAX_TAGS,
            help_text="The held-out prompts people see must have every one of these tags.",
        )  # fmt: skip

    @extend_schema(
        request=GateInputSerializer, responses={202: GateSerializer, 400: ERROR, 409: ERROR}
    )
    def post(self, request: Request, policy_id: int) -> Response:
        data = self.GateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        gate = gate_request(
            candidate_id=policy_id,
            reward_run_id=data.validated_data.get("reward_run"),
            prompts=data.validated_data["prompts"],
            threshold=data.validated_data["threshold"],
            max_kl_drift=data.validated_data.get("max_kl_drift"),
            human_prompts=data.validated_data["human_prompts"],
            human_threshold=data.validated_data["human_threshold"],
            human_overlap=data.validated_data["human_overlap"],
            human_tags=data.validated_data.get("human_tags"),
        )
        return Response(GateSerializer(gate).data, status=202)


class GateDetailApi(StrictApiView):
    permission_classes = [IsAdmin]

    @extend_schema(responses={200: GateSerializer, 404: ERROR})
    def get(self, request: Request, gate_id: int) -> Response:
        gate = gate_get(gate_id=gate_id)
        if gate is None:
            raise DomainError("No such gate evaluation.", code="not_found", status=404)
        return Response(GateSerializer(gate).data)


class AutomationSerializer(serializers.ModelSerializer):
    round_number = serializers.IntegerField(source="round.number")
    candidate = serializers.SerializerMethodField()

    class Meta:
        model = Automation
        fields = [
            "id", "round", "round_number", "stage", "required_judgments", "policy_kind",
            "policy_rounds",
            "reward_recipe", "policy_recipe", "gate_threshold", "gate_max_kl_drift",
            "gate_prompts", "human_gate_prompts", "human_gate_threshold", "human_gate_overlap",
            "next_prompts", "prompt_tags", "rounds_left", "next_selection", "next_pool",
            "snapshot",
            "reward_run", "policy_run", "gate", "deployment", "next_round", "candidate",
            "history", "stop_requested", "error", "created_at", "updated_at",
        ]  # fmt: skip

    def get_candidate(self, automation: Automation) -> str | None:
        run = automation.policy_run
        return run.produced_policy.name if run and run.produced_policy_id else None


def _round(round_id: int) -> Round:
    round_ = round_get(round_id=round_id)
    if round_ is None:
        raise DomainError("No such round.", code="not_found", status=404)
    return round_


def _automation(round_id: int) -> Automation:
    automation = automation_of_round(round_id=round_id)
    if automation is None:
        raise DomainError("This round is not automated.", code="not_found", status=404)
    return automation


class AutomationApi(StrictApiView):
    """Set a round to advance by itself, or read where its automation stands.

    Once the round has ``required_judgments`` (default: every task judged ``overlap`` times):
    snapshot → reward-model run → DPO run from the serving policy → gate → deploy if it passed →
    the next round, from unused prompts (with ``prompt_tags``), automated in turn while
    ``rounds_left`` lasts.
    """

    permission_classes = [IsAdmin]

    class AutomationInputSerializer(StrictSerializer):
        required_judgments = serializers.IntegerField(min_value=1, required=False)
        reward_recipe = BoundedDictField(required=False, max_length=MAX_RECIPE_FIELDS)
        policy_kind = serializers.ChoiceField(
            choices=["dpo", "online_rl"], default="dpo",
            help_text="dpo: on the round's pairs; online_rl: against the new reward model.",
        )  # fmt: skip
        policy_recipe = BoundedDictField(
            required=False, max_length=MAX_RECIPE_FIELDS,
            help_text="Overrides of the policy step's recipe.",
        )  # fmt: skip
        policy_rounds = serializers.ChoiceField(
            choices=["all", "this"], default="all",
            help_text="What DPO trains on: all (every judged round's pairs so far, as the reward "
            "model) or this (this round's pairs alone).",
        )  # fmt: skip
        gate_threshold = serializers.FloatField(
            min_value=0,
            max_value=1,
            default=0.5,
            help_text="Win rate the candidate needs; 0.5: not worse than the serving policy.",
        )
        gate_max_kl_drift = serializers.FloatField(
            min_value=0, required=False, allow_null=True,
            help_text="The gate also fails a candidate whose KL drift from the serving policy "
            "(nats per answer) exceeds this. Default: not checked.",
        )  # fmt: skip
        gate_prompts = serializers.IntegerField(min_value=1, max_value=2000, default=32)
        human_gate_prompts = serializers.IntegerField(
            min_value=0, max_value=2000, default=0,
            help_text="People decide the gate: after the reward model's check passes, they "
            "compare the candidate's and the serving policy's answers to this many held-out "
            "prompts side by side (a round of its own, blind, order balanced). 0: no human stage.",
        )  # fmt: skip
        human_gate_threshold = serializers.FloatField(
            min_value=0, max_value=1, default=0.5,
            help_text="Lower end of the 95% interval of the human win rate that the candidate "
            "needs; 0.5: people prefer it beyond chance.",
        )  # fmt: skip
        human_gate_overlap = serializers.IntegerField(
            min_value=1, max_value=50, default=1, help_text="Judgments per side-by-side task."
        )
        next_prompts = serializers.IntegerField(min_value=0, default=0)
        prompt_tags = BoundedListField(
            child=serializers.CharField(max_length=100), required=False, max_length=MAX_TAGS
        )
        rounds_left = serializers.IntegerField(min_value=0, max_value=100, default=0)
        next_selection = serializers.ChoiceField(
            choices=["random", "uncertainty", "disagreement"], default="random",
            help_text="How the next round chooses its prompts: uncertainty keeps those the "
            "reward model just trained is least sure about (see POST /api/v1/rounds/).",
        )  # fmt: skip
        next_pool = serializers.IntegerField(
            min_value=1, required=False,
            help_text="Unused prompts the next round scores to choose from (default: all).",
        )  # fmt: skip

    @extend_schema(responses={200: AutomationSerializer, 404: ERROR})
    def get(self, request: Request, round_id: int) -> Response:
        return Response(AutomationSerializer(_automation(round_id)).data)

    @extend_schema(
        request=AutomationInputSerializer,
        responses={201: AutomationSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, round_id: int) -> Response:
        data = self.AutomationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        automation_create(round_=_round(round_id), created_by=request.user, **data.validated_data)
        return Response(AutomationSerializer(_automation(round_id)).data, status=201)


class AutomationStopApi(StrictApiView):
    """Stop an automatic round where it stands; a training run in progress is cancelled."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: AutomationSerializer, 404: ERROR})
    def post(self, request: Request, round_id: int) -> Response:
        body_strict(request)
        automation_stop(automation_id=_automation(round_id).pk)
        return Response(AutomationSerializer(_automation(round_id)).data)
