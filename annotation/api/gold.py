"""Gold tasks (admin): read, set and remove a task's reference answer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.errors import DomainError
from feedback.platform.roles import IsAdmin
from feedback.platform.strict import StrictApiView, StrictSerializer, body_strict

from ..gold import task_mark_gold, task_unmark_gold
from ..models import ComparisonTask
from ..selectors import task_get
from .common import ERROR


class GoldOutputSerializer(serializers.ModelSerializer):
    task = serializers.IntegerField(source="pk")
    round = serializers.IntegerField(source="round.number")
    gold = serializers.BooleanField(source="is_gold")
    gold_ranking = serializers.JSONField(allow_null=True)
    gold_scores = serializers.JSONField(allow_null=True)
    judgments = serializers.IntegerField(source="submitted_count")

    class Meta:
        model = ComparisonTask
        fields = ["task", "round", "gold", "gold_ranking", "gold_scores", "judgments"]


class TaskGoldApi(StrictApiView):
    """A task's gold reference. PUT makes the task gold (every annotator of its round is then
    served it once, at the round's gold_rate, looking like any other task); DELETE makes it an
    ordinary task again. Annotators' accuracy on gold tasks feeds their trust score."""

    permission_classes = [IsAdmin]

    class GoldInputSerializer(StrictSerializer):
        ranking = serializers.JSONField(
            help_text="Reference ranking: groups of completion ids, best first (a group ties)."
        )
        scores = serializers.JSONField(
            required=False,
            allow_null=True,
            help_text="Optional reference scores {completion id: {axis: score}} on every axis.",
        )

    def _task(self, task_id: int) -> ComparisonTask:
        task = task_get(task_id=task_id)
        if task is None:
            raise DomainError("No such task.", code="not_found", status=404)
        return task

    @extend_schema(responses={200: GoldOutputSerializer, 404: ERROR})
    def get(self, request: Request, task_id: int) -> Response:
        return Response(GoldOutputSerializer(self._task(task_id)).data)

    @extend_schema(
        request=GoldInputSerializer, responses={200: GoldOutputSerializer, 400: ERROR, 404: ERROR}
    )
    def put(self, request: Request, task_id: int) -> Response:
        data = self.GoldInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values: dict[str, Any] = data.validated_data
        task_mark_gold(task_id=task_id, ranking=values["ranking"], scores=values.get("scores"))
        return Response(GoldOutputSerializer(self._task(task_id)).data)

    @extend_schema(request=None, responses={200: GoldOutputSerializer, 404: ERROR})
    def delete(self, request: Request, task_id: int) -> Response:
        body_strict(request)
        task_unmark_gold(task_id=task_id)
        return Response(GoldOutputSerializer(self._task(task_id)).data)
