"""Training runs over REST (admin): create, read, cancel."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.errors import DomainError, error_schema
from feedback.roles import IsAdmin

from .gate import gate_request
from .models import GateEvaluation, TrainingRun
from .runs import training_run_cancel, training_run_create

ERROR = error_schema()


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
            "progress_total", "metrics_history", "metrics", "artifact_path", "produced_policy",
            "provenance", "heartbeat_at", "cancel_requested", "error", "created_at", "started_at",
            "finished_at",
        ]  # fmt: skip

    def get_snapshot(self, run: TrainingRun) -> dict[str, Any]:
        return {
            "id": run.snapshot_id,
            "sha256": run.snapshot.sha256,
            "manifest": run.snapshot.manifest,
        }


def _get(run_id: int) -> TrainingRun:
    run = TrainingRun.objects.select_related("base_policy", "snapshot").filter(pk=run_id).first()
    if run is None:
        raise DomainError("No such training run.", code="not_found", status=404)
    return run


class TrainingRunListApi(APIView):
    """Start a training run (a job on the ``training`` queue), or list runs newest first."""

    permission_classes = [IsAdmin]

    class TrainingRunInputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
        rounds = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False)
        base_policy = serializers.IntegerField(required=False, help_text="Default: the active one.")
        recipe = serializers.DictField(
            required=False, help_text="Overrides of the trainer's recipe; unknown fields are 400s."
        )

    @extend_schema(responses=TrainingRunSerializer(many=True))
    def get(self, request: Request) -> Response:
        runs = TrainingRun.objects.select_related("base_policy", "snapshot").order_by("-id")[:100]
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
            created_by=request.user,
        )
        return Response(TrainingRunSerializer(_get(run.pk)).data, status=202)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses={200: TrainingRunSerializer, 404: ERROR})
    def get(self, request: Request, run_id: int) -> Response:
        return Response(TrainingRunSerializer(_get(run_id)).data)


class TrainingRunCancelApi(APIView):
    """Cancel a queued run at once, or ask a running one to stop after its current step."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: TrainingRunSerializer, 404: ERROR, 409: ERROR})
    def post(self, request: Request, run_id: int) -> Response:
        training_run_cancel(run_id=run_id)
        return Response(TrainingRunSerializer(_get(run_id)).data)


class GateSerializer(serializers.ModelSerializer):
    candidate = serializers.CharField(source="candidate.name")
    baseline = serializers.CharField(source="baseline.name")

    class Meta:
        model = GateEvaluation
        fields = [
            "id", "candidate", "baseline", "reward_run", "prompt_count", "threshold", "status",
            "win_rate", "metrics", "error", "created_at", "finished_at",
        ]  # fmt: skip


class PolicyGateApi(APIView):
    """Compare a candidate with the active policy (a job): deployed if it wins, else rejected."""

    permission_classes = [IsAdmin]

    class GateInputSerializer(serializers.Serializer):
        reward_run = serializers.IntegerField(required=False, help_text="Default: the newest.")
        prompts = serializers.IntegerField(min_value=1, max_value=2000, default=32)
        threshold = serializers.FloatField(
            min_value=0, max_value=1, default=0.55, help_text="Win rate needed to pass."
        )

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
        )
        return Response(GateSerializer(gate).data, status=202)


class GateDetailApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses={200: GateSerializer, 404: ERROR})
    def get(self, request: Request, gate_id: int) -> Response:
        gate = (
            GateEvaluation.objects.select_related("candidate", "baseline")
            .filter(pk=gate_id)
            .first()
        )
        if gate is None:
            raise DomainError("No such gate evaluation.", code="not_found", status=404)
        return Response(GateSerializer(gate).data)
