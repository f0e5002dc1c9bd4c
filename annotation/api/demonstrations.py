"""Demonstrations: the next prompt to write an ideal answer for, and saving one (annotator)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.models import Prompt
from feedback.platform.rendering import render_untrusted
from feedback.platform.roles import IsAnnotator
from feedback.platform.strict import StrictApiView, StrictSerializer

from ..demonstrations import (
    TEXT_MAX_CHARS,
    demonstration_create,
    demonstration_edit,
    demonstration_last_editable,
    demonstration_skip,
    prompt_next_for_demonstration,
    prompt_rubric,
)
from ..selectors import prompt_completions
from .common import ERROR, RubricSerializer, StrictIntegerField
from .tasks import (
    ChatMessageSerializer,
    ShownCompletionSerializer,
    completion_payload,
    messages_payload,
)


def prompt_payload(prompt: Prompt) -> dict[str, Any]:
    """A prompt to demonstrate: the conversation, the answers one may start from, the rubric
    whose guidelines say what an ideal answer is."""
    completions = prompt_completions(prompt=prompt)
    rubric = prompt_rubric(prompt=prompt)
    return {
        "prompt": prompt.pk,
        "messages": messages_payload(prompt.messages),
        "completions": [completion_payload(c.pk, c.text) for c in completions],
        "rubric": RubricSerializer(rubric).data if rubric else None,
    }


PROMPT_OUT = {
    "prompt": serializers.IntegerField(),
    "messages": ChatMessageSerializer(many=True),
    "completions": ShownCompletionSerializer(many=True),
    "rubric": RubricSerializer(allow_null=True),
}


class DemonstrationNextApi(StrictApiView):
    """A prompt to demonstrate, with the completions you may start from. 204 when none is left."""

    permission_classes = [IsAnnotator]

    @extend_schema(responses={200: inline_serializer("DemonstrationPrompt", PROMPT_OUT), 204: None})
    def get(self, request: Request) -> Response:
        prompt = prompt_next_for_demonstration(annotator=request.user)
        if prompt is None:
            return Response(status=204)
        return Response(prompt_payload(prompt))


class DemonstrationCreateApi(StrictApiView):
    """Save the ideal answer for a prompt, written or edited from one of its completions."""

    permission_classes = [IsAnnotator]

    class DemonstrationInputSerializer(StrictSerializer):
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


class DemonstrationLastApi(StrictApiView):
    """Your newest demonstration whose prompt is still on offer (its round is open, or a
    judgment found none of its answers acceptable), to read again or edit; 204 when there is
    none."""

    permission_classes = [IsAnnotator]

    @extend_schema(
        responses={
            200: inline_serializer(
                "MyLastDemonstration",
                {
                    "id": serializers.IntegerField(),
                    "text": serializers.CharField(),
                    "edited_at": serializers.DateTimeField(allow_null=True),
                    **PROMPT_OUT,
                },
            ),
            204: None,
        }
    )
    def get(self, request: Request) -> Response:
        demonstration = demonstration_last_editable(author=request.user)
        if demonstration is None:
            return Response(status=204)
        return Response(
            {
                "id": demonstration.pk,
                "text": demonstration.text,
                "edited_at": demonstration.edited_at,
                **prompt_payload(demonstration.prompt),
            }
        )


class DemonstrationEditApi(StrictApiView):
    """Replace the text of your demonstration while its round is open."""

    permission_classes = [IsAnnotator]

    class EditInputSerializer(StrictSerializer):
        text = serializers.CharField(
            max_length=TEXT_MAX_CHARS, trim_whitespace=False, allow_blank=True
        )

    @extend_schema(
        request=EditInputSerializer,
        responses={
            200: inline_serializer(
                "DemonstrationEdited",
                {"id": serializers.IntegerField(), "edited_at": serializers.DateTimeField()},
            ),
            400: ERROR,
            404: ERROR,
        },
    )
    def put(self, request: Request, demonstration_id: int) -> Response:
        data = self.EditInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        demonstration = demonstration_edit(
            author=request.user,
            demonstration_id=demonstration_id,
            text=data.validated_data["text"],
        )
        return Response({"id": demonstration.pk, "edited_at": demonstration.edited_at})


class DemonstrationSkipApi(StrictApiView):
    """Pass on a prompt with a reason: it is not offered to you again."""

    permission_classes = [IsAnnotator]

    class PromptSkipInputSerializer(StrictSerializer):
        prompt = StrictIntegerField(min_value=1)
        reason = serializers.CharField(max_length=500, allow_blank=True)

    @extend_schema(
        request=PromptSkipInputSerializer,
        responses={
            200: inline_serializer("DemonstrationSkipped", {"prompt": serializers.IntegerField()}),
            400: ERROR,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.PromptSkipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        skip = demonstration_skip(
            annotator=request.user,
            prompt_id=data.validated_data["prompt"],
            reason=data.validated_data["reason"],
        )
        return Response({"prompt": skip.prompt_id})


class MarkdownPreviewApi(StrictApiView):
    """Markdown to the sanitized HTML the pages show (the same renderer as for model output), so
    a preview matches what readers will see."""

    permission_classes = [IsAnnotator]

    class PreviewInputSerializer(StrictSerializer):
        text = serializers.CharField(
            max_length=TEXT_MAX_CHARS, trim_whitespace=False, allow_blank=True
        )

    @extend_schema(
        request=PreviewInputSerializer,
        responses={
            200: inline_serializer("MarkdownPreview", {"html": serializers.CharField()}),
            400: ERROR,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.PreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"html": render_untrusted(data.validated_data["text"])})
