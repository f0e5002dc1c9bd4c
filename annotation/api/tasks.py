"""The annotator's routes: lease, submit, skip, own stats."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.errors import DomainError
from feedback.platform.rendering import render_untrusted
from feedback.platform.roles import IsAnnotator
from feedback.platform.strict import StrictApiView, StrictSerializer, body_strict

from ..distribution import LeasedTask, assignment_skip
from ..judgments import judgment_submit
from ..lease import lease_next
from ..models import Judgment
from ..progress import annotator_round_progress
from ..quality import annotator_quality
from ..selectors import annotator_counts
from .common import ERROR, MAX_K, RubricSerializer, rubric_payload

_DATETIME = serializers.DateTimeField()


def messages_payload(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Chat messages with their sanitized HTML beside the raw text."""
    return [{**m, "html": render_untrusted(m["content"])} for m in messages]


def completion_payload(completion_id: int, text: str) -> dict[str, object]:
    return {"id": completion_id, "text": text, "html": render_untrusted(text)}


def leased_task_payload(leased: LeasedTask) -> dict[str, Any]:
    """Built by hand, not by ``LeasedTaskSerializer`` (which documents it): serializer
    machinery cost more than the lease's own SQL."""
    return {
        "assignment": str(leased.assignment_id),
        "lease_expires_at": leased.lease_expires_at,
        "task": leased.task_id,
        "round": leased.round_number,
        "prompt": {"messages": messages_payload(leased.messages), "safety": leased.safety},
        "completions": [completion_payload(cid, text) for cid, text in leased.completions],
        "rubric": rubric_payload(leased.rubric),
    }


def judgment_payload(judgment: Judgment) -> dict[str, Any]:
    """What ``JudgmentOutputSerializer`` (which documents it) gives, built by hand (see
    ``leased_task_payload``)."""
    return {
        "id": str(judgment.pk),
        "assignment": str(judgment.assignment_id),
        "task": judgment.task_id,
        "ranking": judgment.ranking,
        "scores": judgment.scores,
        "strength": judgment.strength,
        "flags": judgment.flags,
        "none_acceptable": judgment.none_acceptable,
        "rationale": judgment.rationale,
        "time_spent_ms": judgment.time_spent_ms,
        "display_order": judgment.display_order,
        "rubric": judgment.rubric.label,
        "created_at": _DATETIME.to_representation(judgment.created_at),
    }


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField()
    html = serializers.CharField(help_text="The content as sanitized HTML (Markdown).")


class ShownCompletionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    html = serializers.CharField(help_text="The text as sanitized HTML (Markdown).")


class TaskNextApi(StrictApiView):
    """Lease the next task (or get back the one you hold). 204 when there is no work left;
    429 with Retry-After past the lease rate (``THROTTLE_RATES["lease"]``)."""

    permission_classes = [IsAnnotator]

    class LeasedTaskSerializer(serializers.Serializer):
        assignment = serializers.UUIDField()
        lease_expires_at = serializers.DateTimeField()
        task = serializers.IntegerField()
        round = serializers.IntegerField()
        prompt = inline_serializer(
            "TaskPrompt",
            {
                "messages": ChatMessageSerializer(many=True),
                "safety": serializers.BooleanField(),
            },
        )
        completions = ShownCompletionSerializer(
            many=True,
            help_text="In the order to show them: an order of this assignment's own, the same "
            "every time it is asked for, stored with the judgment.",
        )
        rubric = RubricSerializer()

    @extend_schema(request=None, responses={200: LeasedTaskSerializer, 204: None, 403: ERROR})
    def post(self, request: Request) -> Response:
        body_strict(request)
        lease = lease_next(annotator=request.user)
        if lease.wait is not None:
            self.throttled(request, lease.wait)
        leased = lease.leased
        if leased is None:
            return Response(status=204)
        return Response(leased_task_payload(leased))


class JudgmentOutputSerializer(serializers.ModelSerializer):
    rubric = serializers.CharField(source="rubric.label")

    class Meta:
        model = Judgment
        fields = [
            "id",
            "assignment",
            "task",
            "ranking",
            "scores",
            "strength",
            "flags",
            "none_acceptable",
            "rationale",
            "time_spent_ms",
            "display_order",
            "rubric",
            "created_at",
        ]


class AssignmentSubmitApi(StrictApiView):
    """Submit your judgment for an assignment. Idempotent: the same body again gives the same
    answer; a different body after a submit is a 409 naming the stored judgment."""

    permission_classes = [IsAnnotator]

    class JudgmentInputSerializer(serializers.Serializer):
        """Documentation of the body; the service validates it strictly (see judgments.py)."""

        ranking = serializers.ListField(
            child=serializers.ListField(child=serializers.IntegerField(), max_length=MAX_K),
            max_length=MAX_K,
            help_text="Groups of completion ids, best first; a group of several is a tie.",
        )
        scores = serializers.DictField(
            child=serializers.DictField(child=serializers.IntegerField(min_value=1, max_value=7)),
            help_text='{"<completion id>": {"helpful": 1-7, "honest": 1-7, "harmless": 1-7}}',
        )
        strength = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text="Best vs second: a rubric strength label; empty when the best are tied.",
        )
        flags = serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="Flag keys of the task's rubric, each at most once.",
        )
        none_acceptable = serializers.BooleanField(
            required=False,
            help_text="None of the answers is acceptable (default false): still rank them. "
            "Pair exports leave the judgment out unless asked, KTO labels every answer "
            "undesirable, and the prompt goes to the demonstration queue. The all_bad flag "
            "says the same: either sets both.",
        )
        rationale = serializers.CharField(required=False, allow_blank=True, max_length=5000)
        time_spent_ms = serializers.IntegerField(min_value=0)

    @extend_schema(
        request=JudgmentInputSerializer,
        responses={200: JudgmentOutputSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, assignment_id: Any) -> Response:
        judgment = judgment_submit(
            assignment_id=assignment_id, annotator=request.user, body=request.data
        )
        return Response(judgment_payload(judgment))


class AssignmentSkipApi(StrictApiView):
    """Give a task back with a reason; you will not be offered it again."""

    permission_classes = [IsAnnotator]

    class SkipInputSerializer(StrictSerializer):
        reason = serializers.CharField(max_length=500)

    @extend_schema(
        request=SkipInputSerializer,
        responses={
            200: inline_serializer(
                "Skipped",
                {"assignment": serializers.UUIDField(), "status": serializers.CharField()},
            ),
            400: ERROR,
            404: ERROR,
            409: ERROR,
        },
    )
    def post(self, request: Request, assignment_id: Any) -> Response:
        data = self.SkipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = assignment_skip(
            assignment_id=assignment_id,
            annotator=request.user,
            reason=data.validated_data["reason"],
        )
        return Response({"assignment": str(assignment.pk), "status": assignment.status})


class MeStatsApi(StrictApiView):
    """Your own counts: judgments today and in total, skips, time per task; with ``?round=N``,
    also how far you are through round N."""

    permission_classes = [IsAnnotator]
    query_fields = ("round",)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "round", int, description="A round number: adds your progress through it."
            )
        ],
        responses={
            200: inline_serializer(
                "MyStats",
                {
                    "judgments_total": serializers.IntegerField(),
                    "judgments_today": serializers.IntegerField(),
                    "skipped": serializers.IntegerField(),
                    "mean_time_spent_ms": serializers.FloatField(allow_null=True),
                    "gold_judgments": serializers.IntegerField(),
                    "gold_accuracy": serializers.FloatField(
                        allow_null=True,
                        help_text="Share of reference pairs you ordered the same way.",
                    ),
                    "agreement": serializers.FloatField(
                        allow_null=True,
                        help_text="Share of pairs you ordered as the others' consensus did.",
                    ),
                    "round": inline_serializer(
                        "MyRoundProgress",
                        {
                            "number": serializers.IntegerField(),
                            "tasks": serializers.IntegerField(help_text="Tasks in the round."),
                            "judged": serializers.IntegerField(help_text="Yours judged in it."),
                            "skipped": serializers.IntegerField(help_text="Yours skipped in it."),
                        },
                        required=False,
                        allow_null=True,
                        help_text="Only with ?round=N; null when there is no round N.",
                    ),
                },
            ),
            400: ERROR,
        },
    )
    def get(self, request: Request) -> Response:
        round_number = _round_param(request)
        counts = annotator_counts(annotator=request.user)
        quality = annotator_quality(annotator_id=request.user.pk).get(request.user.pk)
        return Response(
            {
                "judgments_total": counts.judgments_total,
                "judgments_today": counts.judgments_today,
                "skipped": counts.skipped,
                "mean_time_spent_ms": counts.mean_time_spent_ms,
                "gold_judgments": quality.gold_judgments if quality else 0,
                "gold_accuracy": quality.gold_accuracy.value if quality else None,
                "agreement": quality.agreement.value if quality else None,
                **(
                    {}
                    if round_number is None
                    else {"round": _round_payload(request.user, round_number)}
                ),
            }
        )


def _round_param(request: Request) -> int | None:
    value = request.query_params.get("round")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise DomainError(
            "round: A round number is required.", fields={"round": ["A round number is required."]}
        )
    return int(value)


def _round_payload(annotator: Any, number: int) -> dict[str, int] | None:
    progress = annotator_round_progress(annotator=annotator, round_number=number)
    return None if progress is None else asdict(progress)
