"""Annotation quality (researcher, admin): agreement per round, annotator trust, disagreements.

The definitions are in ``annotation.quality``. Researchers see annotators as the same keyed
hashes the exports carry; admins also see usernames (they manage the people behind them).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.errors import DomainError
from feedback.platform.roles import IsResearcherOrAdmin, Role, user_has_role
from feedback.platform.strict import StrictApiView

from ..exports import annotator_pseudonym
from ..pseudonyms import usernames_by_id
from ..quality import agreement_by_round, annotator_quality, disagreements
from ..selectors import rounds_existing
from .common import ERROR


def _estimate_field(name: str) -> serializers.Serializer:
    return inline_serializer(
        name,
        {
            "value": serializers.FloatField(allow_null=True),
            "low": serializers.FloatField(allow_null=True),
            "high": serializers.FloatField(allow_null=True),
            "n": serializers.IntegerField(),
        },
    )


ROUNDS_PARAMETER = OpenApiParameter(
    "round", int, many=True, description="Round number(s); repeat or comma-separate. Default: all."
)


def _rounds(request: Request) -> list[int] | None:
    numbers: list[int] = []
    for value in request.query_params.getlist("round"):
        for part in value.split(","):
            # isdigit() alone accepts '²', which int() refuses.
            if not (part.strip().isascii() and part.strip().isdigit()):
                raise DomainError(
                    "Bad round filter.", fields={"round": [f"{part!r} is not a round number."]}
                )
            numbers.append(int(part))
    known = rounds_existing(numbers=numbers)
    if missing := sorted(set(numbers) - known):
        raise DomainError("Unknown round.", fields={"round": [f"No round number {missing[0]}."]})
    return numbers or None


class AgreementApi(StrictApiView):
    """Per round: Krippendorff's alpha (ordinal) on rankings and on each axis, and pairwise
    agreement on pair directions, each with a 95% interval, over tasks judged at least twice."""

    permission_classes = [IsResearcherOrAdmin]

    @extend_schema(
        responses=inline_serializer(
            "RoundAgreement",
            {
                "round": serializers.IntegerField(),
                "tasks": serializers.IntegerField(),
                "judgments": serializers.IntegerField(),
                "annotators": serializers.IntegerField(),
                "ranking_alpha": _estimate_field("AlphaEstimate"),
                "axis_alpha": serializers.DictField(child=_estimate_field("AxisAlphaEstimate")),
                "pairwise": _estimate_field("PairwiseEstimate"),
            },
            many=True,
        )
    )
    def get(self, request: Request) -> Response:
        return Response([asdict(row) for row in agreement_by_round()])


class AnnotatorQualityApi(StrictApiView):
    """Each annotator's gold accuracy, agreement with the others' consensus, trust (0 to 1)
    and whether they are flagged for review."""

    permission_classes = [IsResearcherOrAdmin]
    query_fields = ("round",)

    @extend_schema(
        parameters=[ROUNDS_PARAMETER],
        responses={
            200: inline_serializer(
                "AnnotatorQuality",
                {
                    "annotator": serializers.CharField(),
                    "username": serializers.CharField(required=False),
                    "judgments": serializers.IntegerField(),
                    "gold_judgments": serializers.IntegerField(),
                    "gold_accuracy": _estimate_field("GoldAccuracyEstimate"),
                    "agreement": _estimate_field("AgreementEstimate"),
                    "trust": serializers.FloatField(),
                    "flagged": serializers.BooleanField(),
                },
                many=True,
            ),
            400: ERROR,
        },
    )
    def get(self, request: Request) -> Response:
        quality = annotator_quality(rounds=_rounds(request))
        names: dict[int, str] = {}
        if user_has_role(request.user, Role.ADMIN):
            names = usernames_by_id(user_ids=quality)
        rows: list[dict[str, Any]] = []
        for user_id, q in sorted(quality.items(), key=lambda item: item[1].trust):
            row = {
                "annotator": annotator_pseudonym(user_id),
                "judgments": q.judgments,
                "gold_judgments": q.gold_judgments,
                "gold_accuracy": asdict(q.gold_accuracy),
                "agreement": asdict(q.agreement),
                "trust": q.trust,
                "flagged": q.flagged,
            }
            if names:
                row["username"] = names.get(user_id, "")
            rows.append(row)
        return Response(rows)


class DisagreementApi(StrictApiView):
    """Tasks judged several times where the annotators split, lowest agreement first."""

    permission_classes = [IsResearcherOrAdmin]
    query_fields = ("round",)

    @extend_schema(
        parameters=[ROUNDS_PARAMETER],
        responses={
            200: inline_serializer(
                "TaskDisagreement",
                {
                    "task_id": serializers.IntegerField(),
                    "round": serializers.IntegerField(),
                    "judgments": serializers.IntegerField(),
                    "agreement": serializers.FloatField(),
                },
                many=True,
            ),
            400: ERROR,
        },
    )
    def get(self, request: Request) -> Response:
        return Response([asdict(row) for row in disagreements(rounds=_rounds(request))])
