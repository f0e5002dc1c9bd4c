"""Demonstrations: the next prompt to write an ideal answer for, and saving one (annotator)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.models import Completion
from feedback.roles import IsAnnotator

from ..demonstrations import demonstration_create, prompt_next_for_demonstration
from .common import ERROR, StrictIntegerField
from .tasks import (
    ChatMessageSerializer,
    ShownCompletionSerializer,
    completion_payload,
    messages_payload,
)


class DemonstrationNextApi(APIView):
    """A prompt to demonstrate, with the completions you may start from. 204 when none is left."""

    permission_classes = [IsAnnotator]

    @extend_schema(
        responses={
            200: inline_serializer(
                "DemonstrationPrompt",
                {
                    "prompt": serializers.IntegerField(),
                    "messages": ChatMessageSerializer(many=True),
                    "completions": ShownCompletionSerializer(many=True),
                },
            ),
            204: None,
        }
    )
    def get(self, request: Request) -> Response:
        prompt = prompt_next_for_demonstration(annotator=request.user)
        if prompt is None:
            return Response(status=204)
        completions = Completion.objects.filter(prompt=prompt).order_by("id")[:8]
        return Response(
            {
                "prompt": prompt.pk,
                "messages": messages_payload(prompt.messages),
                "completions": [completion_payload(c.pk, c.text) for c in completions],
            }
        )


class DemonstrationCreateApi(APIView):
    """Save the ideal answer for a prompt, written or edited from one of its completions."""

    permission_classes = [IsAnnotator]

    class DemonstrationInputSerializer(serializers.Serializer):
        prompt = StrictIntegerField(min_value=1)
        text = serializers.CharField(max_length=20_000, trim_whitespace=False, allow_blank=True)
        source_completion = StrictIntegerField(min_value=1, required=False, allow_null=True)

    @extend_schema(
        request=DemonstrationInputSerializer,
        responses={
            201: inline_serializer(
                "DemonstrationSaved",
                {"id": serializers.IntegerField(), "prompt": serializers.IntegerField()},
            ),
            400: ERROR,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.DemonstrationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        demonstration = demonstration_create(
            author=request.user,
            prompt_id=data.validated_data["prompt"],
            text=data.validated_data["text"],
            source_completion_id=data.validated_data.get("source_completion"),
        )
        return Response({"id": demonstration.pk, "prompt": demonstration.prompt_id}, status=201)
