"""An annotator's own judgments: the recent ones, and revising one (a correction)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.roles import IsAnnotator
from feedback.platform.strict import StrictApiView

from ..corrections import judgment_revise
from ..models import Judgment, Round
from ..selectors import annotator_judgments_recent
from .common import ERROR
from .tasks import (
    AssignmentSubmitApi,
    ChatMessageSerializer,
    JudgmentOutputSerializer,
    ShownCompletionSerializer,
    completion_payload,
    judgment_payload,
    messages_payload,
)


class RevisedJudgmentSerializer(JudgmentOutputSerializer):
    supersedes = serializers.UUIDField(
        allow_null=True,
        help_text="The judgment this one corrected (kept, marked superseded; in no export).",
    )

    class Meta(JudgmentOutputSerializer.Meta):
        fields = [*JudgmentOutputSerializer.Meta.fields, "supersedes"]


class JudgmentReviseApi(StrictApiView):
    """Revise one of your judgments while its round is open: the body is a whole judgment,
    checked as a submit is (the same rubric version and completions). The answer is the new
    judgment; the one it corrects is kept, marked superseded, and left out of exports and
    snapshots. Idempotent: the same correction again gives the same answer (one new judgment),
    and a body equal to the judgment's own changes nothing. 409 ``superseded`` (naming the
    current judgment) for a judgment already corrected, 409 ``round_closed`` once its round is
    closed, 404 for a judgment that is not yours."""

    permission_classes = [IsAnnotator]

    @extend_schema(
        request=AssignmentSubmitApi.JudgmentInputSerializer,
        responses={200: RevisedJudgmentSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, judgment_id: Any) -> Response:
        revision = judgment_revise(
            judgment_id=judgment_id, annotator=request.user, body=request.data
        )
        supersedes = None if revision.supersedes is None else str(revision.supersedes)
        return Response({**judgment_payload(revision.judgment), "supersedes": supersedes})


class MyJudgmentSerializer(RevisedJudgmentSerializer):
    round = serializers.IntegerField(help_text="The task's round number.")
    revisable = serializers.BooleanField(help_text="Its round is open: it may be revised.")
    prompt = inline_serializer(
        "JudgedPrompt",
        {"messages": ChatMessageSerializer(many=True), "safety": serializers.BooleanField()},
    )
    completions = ShownCompletionSerializer(
        many=True, help_text="The task's completions, in the order you were shown them."
    )

    class Meta(RevisedJudgmentSerializer.Meta):
        fields = [*RevisedJudgmentSerializer.Meta.fields, "round", "revisable", "prompt",
                  "completions"]  # fmt: skip


def my_judgment_payload(judgment: Judgment) -> dict[str, Any]:
    task = judgment.task
    texts = {slot.completion_id: slot.completion.text for slot in task.slots.all()}
    shown = [cid for cid in judgment.display_order if cid in texts] or list(texts)
    return {
        **judgment_payload(judgment),
        "supersedes": None if judgment.supersedes_id is None else str(judgment.supersedes_id),
        "round": task.round.number,
        "revisable": task.round.status == Round.Status.OPEN,
        "prompt": {
            "messages": messages_payload(task.prompt.messages),
            "safety": task.prompt.safety,
        },
        "completions": [completion_payload(cid, texts[cid]) for cid in shown],
    }


class MyJudgmentListApi(StrictApiView):
    """Your current judgments, newest first, each with its task's prompt and completions and
    whether it may still be revised (``POST /api/v1/judgments/{id}/revise/``). Judgments that
    a correction superseded are not listed."""

    permission_classes = [IsAnnotator]
    query_fields = ("round", "limit")

    class MyJudgmentsQuerySerializer(serializers.Serializer):
        round = serializers.IntegerField(
            required=False, min_value=1, help_text="Only this round's judgments."
        )
        limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)

    @extend_schema(
        parameters=[MyJudgmentsQuerySerializer],
        responses={200: MyJudgmentSerializer(many=True), 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        query = self.MyJudgmentsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        judgments = annotator_judgments_recent(
            annotator=request.user,
            round_number=query.validated_data.get("round"),
            limit=query.validated_data["limit"],
        )
        return Response([my_judgment_payload(judgment) for judgment in judgments])
