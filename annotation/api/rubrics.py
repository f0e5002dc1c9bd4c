"""Rubric versions: list and read them (anyone with a role: annotators are shown theirs in every
lease anyway), and make a new version (admin). A version is never changed once made."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.errors import DomainError
from feedback.platform.roles import HasAnyRole, IsAdmin
from feedback.platform.strict import StrictApiView

from ..models import Rubric
from ..rubric_versions import (
    MAX_AXES,
    MAX_FLAGS,
    MAX_SCALE_POINTS,
    MAX_STRENGTHS,
    rubric_version_create,
)
from ..rubrics import rubric_list
from .common import ERROR, RubricSerializer


class RubricOutputSerializer(RubricSerializer):
    rounds = serializers.SerializerMethodField(help_text="Numbers of the rounds judged under it.")
    created_at = serializers.DateTimeField(read_only=True)

    def get_rounds(self, rubric: Rubric) -> list[int]:
        return sorted(r.number for r in rubric.rounds.all())

    class Meta(RubricSerializer.Meta):
        fields = [*RubricSerializer.Meta.fields, "created_at", "rounds"]


class _AxisSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="lowercase letters, digits, _; unique in the rubric")
    label = serializers.CharField()
    question = serializers.CharField(help_text="What the annotator answers on this axis.")
    min = serializers.IntegerField(help_text="Lowest score (0 or more).")
    max = serializers.IntegerField(help_text=f"Highest score: 2 to {MAX_SCALE_POINTS} points.")
    guidelines = serializers.DictField(
        child=serializers.CharField(), help_text="What each score means: {'1': text, ...}."
    )


class _FlagSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()


class _StrengthSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    margin = serializers.FloatField(help_text="0 to 10; strongest first, each at most the last.")


class RubricInputSerializer(serializers.Serializer):
    """The request body's shape, for the schema; ``rubric_version_create`` checks it."""

    name = serializers.CharField(help_text="The rubric's name: the next version of it is made.")
    axes = _AxisSerializer(many=True, help_text=f"1 to {MAX_AXES} axes, in the order shown.")
    flags = _FlagSerializer(many=True, required=False, help_text=f"Up to {MAX_FLAGS}.")
    strength_labels = _StrengthSerializer(
        many=True, help_text=f"1 to {MAX_STRENGTHS}, strongest first."
    )
    guidelines = serializers.CharField(required=False, help_text="General instructions, Markdown.")


def _rubrics() -> Any:
    return rubric_list().prefetch_related("rounds")


class RubricListApi(StrictApiView):
    """Every rubric version, by name then version. POST (admin) makes the next version of a
    rubric from a full definition (copy the newest version's fields and change what you need);
    new rounds may then be opened under it, and rounds already open keep theirs."""

    permission_classes = [HasAnyRole]

    def get_permissions(self) -> list[BasePermission]:
        return [IsAdmin()] if self.request.method == "POST" else super().get_permissions()

    @extend_schema(responses={200: RubricOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(RubricOutputSerializer(_rubrics(), many=True).data)

    @extend_schema(
        request=RubricInputSerializer,
        responses={201: RubricOutputSerializer, 400: ERROR, 409: ERROR},
    )
    def post(self, request: Request) -> Response:
        rubric = rubric_version_create(body=request.data)
        return Response(RubricOutputSerializer(_rubrics().get(pk=rubric.pk)).data, status=201)


class RubricDetailApi(StrictApiView):
    """One rubric version, with the rounds judged under it."""

    permission_classes = [HasAnyRole]

    @extend_schema(responses={200: RubricOutputSerializer, 404: ERROR})
    def get(self, request: Request, rubric_id: int) -> Response:
        rubric = _rubrics().filter(pk=rubric_id).first()
        if rubric is None:
            raise DomainError("No such rubric.", code="not_found", status=404)
        return Response(RubricOutputSerializer(rubric).data)
