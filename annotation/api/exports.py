"""Streamed dataset exports (researcher, admin)."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from feedback.errors import DomainError
from feedback.roles import IsResearcherOrAdmin

from ..exports import FORMATS, jsonl_lines, judgments_for_export, preference_rows
from ..models import Round
from .common import ERROR


class PreferenceExportApi(APIView):
    """Stream preference pairs as JSONL (TRL's explicit-prompt conversational format)."""

    permission_classes = [IsResearcherOrAdmin]

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=list(FORMATS), description="Default: trl."),
            OpenApiParameter(
                "round", int, many=True, description="Round number(s); repeat or comma-separate."
            ),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="One JSON object per preference pair."
            ),
            400: ERROR,
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        fmt = request.query_params.get("format", "trl")
        if fmt not in FORMATS:
            raise DomainError(
                f"Unknown format {fmt!r}.",
                fields={"format": [f"Must be one of: {', '.join(FORMATS)}."]},
            )
        rounds: list[int] = []
        for value in request.query_params.getlist("round"):
            for part in value.split(","):
                if not part.strip().isdigit():
                    raise DomainError(
                        "Bad round filter.", fields={"round": [f"{part!r} is not a round number."]}
                    )
                rounds.append(int(part))
        missing = sorted(
            set(rounds)
            - set(Round.objects.filter(number__in=rounds).values_list("number", flat=True))
        )
        if missing:
            raise DomainError(
                "Unknown round.", fields={"round": [f"No round number {missing[0]}."]}
            )
        rows = preference_rows(judgments_for_export(rounds=rounds or None))
        response = StreamingHttpResponse(jsonl_lines(rows), content_type="application/x-ndjson")
        name = f"preferences-{fmt}" + (f"-round-{'-'.join(map(str, rounds))}" if rounds else "")
        response["Content-Disposition"] = f'attachment; filename="{name}.jsonl"'
        return response
