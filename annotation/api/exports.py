"""Streamed dataset exports (researcher, admin): any format, any filter, as JSONL.

Parquet needs the whole file written before it can be read, so it is not streamed here: an
export job (``/api/v1/exports/jobs/``) writes it.
"""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request

from feedback.platform.errors import DomainError
from feedback.platform.roles import IsResearcherOrAdmin, Role, user_has_role
from feedback.platform.strict import StrictApiView

from ..exports import (
    CONSENSUS_RULES,
    FORMATS,
    WEIGHTINGS,
    export_filters_parse,
    export_format,
    export_prepare,
)
from ..exports.filters import FILTER_NAMES
from .common import ERROR

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
REPEAT = " Repeat or comma-separate."
FILTER_PARAMETERS = [
    OpenApiParameter("round", int, many=True, description="Round number(s)." + REPEAT),
    OpenApiParameter(
        "policy", str, many=True,
        description="Policy version name(s): tasks with a completion from one of them." + REPEAT,
    ),
    OpenApiParameter("rubric", str, description="Rubric label, e.g. 3H@1."),
    OpenApiParameter(
        "min_agreement", float,
        description="0..1: tasks whose pairwise agreement among their kept judgments is at "
        "least this (a task judged once has none and is dropped).",
    ),
    OpenApiParameter(
        "min_trust", float, description="0..1: judgments of annotators with at least this trust."
    ),
    OpenApiParameter(
        "flag", str, many=True, description="Judgments that raised any of these flags." + REPEAT
    ),
    OpenApiParameter(
        "exclude_flag", str, many=True,
        description="Leave out judgments that raised any of these flags." + REPEAT,
    ),
    OpenApiParameter(
        "axis", str,
        description="Rubric axis: pairs from its scores (ultrafeedback: only its ratings).",
    ),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO date or datetime, from."),
    OpenApiParameter(
        "until", OpenApiTypes.DATETIME, description="ISO date or datetime, before (exclusive)."
    ),
    OpenApiParameter(
        "consensus", str, enum=list(CONSENSUS_RULES),
        description="none: every judgment's own rows; bradley_terry: one consensus per task.",
    ),
    OpenApiParameter(
        "weighting", str, enum=list(WEIGHTINGS),
        description="Annotators' weights in a consensus: equal, or their trust.",
    ),
    OpenApiParameter(
        "include_none_acceptable", bool,
        description="Default false: the pair formats and ultrafeedback leave out judgments "
        "(under a consensus, tasks) that found no answer acceptable; true puts them back, "
        "with a none_acceptable column. KTO and the raw judgments always read them.",
    ),
]  # fmt: skip


def _pseudonymous(request: Request) -> bool:
    value = request.query_params.get("pseudonymous", "true").lower()
    if value not in TRUE + FALSE:
        raise DomainError(
            "Bad pseudonymous flag.", fields={"pseudonymous": ["Must be true or false."]}
        )
    if value in FALSE and not user_has_role(request.user, Role.ADMIN):
        raise DomainError(
            "Only an admin can export annotators' names.",
            code="permission_denied",
            status=403,
            fields={"pseudonymous": ["Only admins may set this to false."]},
        )
    return value in TRUE


class PreferenceExportApi(StrictApiView):
    """Stream an export as JSONL, one JSON object per row (``format``: see the enum; TRL's
    explicit-prompt conversational preference pairs by default)."""

    permission_classes = [IsResearcherOrAdmin]
    # The filters answer to their plural names too (``rounds``, as in a job's JSON filters).
    query_fields = frozenset(
        {"format", "pseudonymous", *FILTER_NAMES, *(p.name for p in FILTER_PARAMETERS)}
    )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format",
                str,
                enum=list(FORMATS),
                description="Default: trl. "
                + " ".join(f"{name}: {spec.description}." for name, spec in FORMATS.items()),
            ),
            OpenApiParameter(
                "pseudonymous",
                bool,
                description="Default true; false (admins only) puts usernames in the annotator "
                "columns.",
            ),
            *FILTER_PARAMETERS,
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="One JSON object per row."
            ),
            400: ERROR,
            403: ERROR,
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        fmt = request.query_params.get("format", "trl")
        export_format(fmt)
        pseudonymous = _pseudonymous(request)
        filters = export_filters_parse(request.query_params)
        # Everything that can fail is checked here, before the first byte goes out.
        plan = export_prepare(fmt=fmt, filters=filters, pseudonymous=pseudonymous)
        response = StreamingHttpResponse(plan.jsonl(), content_type="application/x-ndjson")
        rounds = "-".join(map(str, filters.rounds))
        name = f"preferences-{fmt}" + (f"-round-{rounds}" if rounds else "")
        response["Content-Disposition"] = f'attachment; filename="{name}.jsonl"'
        return response
