"""REST routes of the annotation instrument. Each view validates, calls one service, serializes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, Q
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.errors import DomainError
from feedback.roles import IsAdmin, IsAnnotator, IsResearcherOrAdmin

from .distribution import LeasedTask, assignment_skip, task_next_for_annotator
from .exports import FORMATS, jsonl_lines, judgments_for_export, preference_rows
from .imports import prompts_import
from .judgments import judgment_submit
from .models import Assignment, Judgment, Round, Rubric
from .rounds import round_close, round_open_from_imported, round_progress

ERROR = inline_serializer(
    "Error",
    {
        "code": serializers.CharField(),
        "detail": serializers.CharField(),
        "fields": serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
    },
)


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: not "5", not 5.0, not true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class RubricSerializer(serializers.ModelSerializer):
    label = serializers.CharField(read_only=True)

    class Meta:
        model = Rubric
        fields = [
            "id",
            "name",
            "version",
            "label",
            "axes",
            "flags",
            "strength_labels",
            "guidelines",
        ]


def leased_task_payload(leased: LeasedTask) -> dict[str, Any]:
    task = leased.task
    return {
        "assignment": str(leased.assignment.pk),
        "lease_expires_at": leased.assignment.lease_expires_at,
        "task": task.pk,
        "round": task.round.number,
        "prompt": {"messages": task.prompt.messages, "safety": task.prompt.safety},
        "completions": [{"id": s.completion_id, "text": s.completion.text} for s in leased.slots],
        "rubric": RubricSerializer(task.round.rubric).data,
    }


class TaskNextApi(APIView):
    """Lease the next task (or get back the one you hold). 204 when there is no work left."""

    permission_classes = [IsAnnotator]

    class LeasedTaskSerializer(serializers.Serializer):
        assignment = serializers.UUIDField()
        lease_expires_at = serializers.DateTimeField()
        task = serializers.IntegerField()
        round = serializers.IntegerField()
        prompt = inline_serializer(
            "TaskPrompt",
            {
                "messages": serializers.ListField(child=serializers.DictField()),
                "safety": serializers.BooleanField(),
            },
        )
        completions = inline_serializer(
            "TaskCompletion",
            {"id": serializers.IntegerField(), "text": serializers.CharField()},
            many=True,
        )
        rubric = RubricSerializer()

    @extend_schema(request=None, responses={200: LeasedTaskSerializer, 204: None, 403: ERROR})
    def post(self, request: Request) -> Response:
        leased = task_next_for_annotator(annotator=request.user)
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
            "rationale",
            "time_spent_ms",
            "rubric",
            "created_at",
        ]


class AssignmentSubmitApi(APIView):
    """Submit your judgment for an assignment. Idempotent: the same body again gives the same
    answer; a different body after a submit is a 409 naming the stored judgment."""

    permission_classes = [IsAnnotator]

    class JudgmentInputSerializer(serializers.Serializer):
        """Documentation of the body; the service validates it strictly (see judgments.py)."""

        ranking = serializers.ListField(
            child=serializers.ListField(child=serializers.IntegerField()),
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
        flags = serializers.ListField(child=serializers.CharField(), required=False)
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
        return Response(JudgmentOutputSerializer(judgment).data)


class AssignmentSkipApi(APIView):
    """Give a task back with a reason; you will not be offered it again."""

    permission_classes = [IsAnnotator]

    class SkipInputSerializer(serializers.Serializer):
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


class MeStatsApi(APIView):
    """Your own counts: judgments today and in total, skips, time per task."""

    permission_classes = [IsAnnotator]

    @extend_schema(
        responses=inline_serializer(
            "MyStats",
            {
                "judgments_total": serializers.IntegerField(),
                "judgments_today": serializers.IntegerField(),
                "skipped": serializers.IntegerField(),
                "mean_time_spent_ms": serializers.FloatField(allow_null=True),
            },
        )
    )
    def get(self, request: Request) -> Response:
        today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        judged = Judgment.objects.filter(annotator=request.user).aggregate(
            total=Count("pk"),
            today=Count("pk", filter=Q(created_at__gte=today)),
            mean=Avg("time_spent_ms"),
        )
        skipped = Assignment.objects.filter(
            annotator=request.user, status=Assignment.Status.SKIPPED
        ).count()
        return Response(
            {
                "judgments_total": judged["total"],
                "judgments_today": judged["today"],
                "skipped": skipped,
                "mean_time_spent_ms": judged["mean"],
            }
        )


class JsonLinesParser(BaseParser):
    """A raw JSONL body, handed to the importer as bytes (read up to the import size limit)."""

    media_type = "application/x-ndjson"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = stream.read(settings.IMPORT_MAX_BYTES + 1) if stream is not None else b""
        if len(data) > settings.IMPORT_MAX_BYTES:
            raise DomainError(
                f"The file is larger than {settings.IMPORT_MAX_BYTES} bytes.",
                code="too_large",
                status=413,
                fields={"file": [f"At most {settings.IMPORT_MAX_BYTES} bytes."]},
            )
        return {"_raw": data}


class JsonlParser(JsonLinesParser):
    media_type = "application/jsonl"


IMPORT_REPORT = inline_serializer(
    "ImportReport",
    {
        "lines": serializers.IntegerField(),
        "prompts_created": serializers.IntegerField(),
        "prompts_existing": serializers.IntegerField(),
        "completions_created": serializers.IntegerField(),
        "lines_skipped": serializers.IntegerField(),
        "errors": serializers.ListField(child=serializers.DictField()),
    },
)


class PromptImportApi(APIView):
    """Import prompts (and completions other models produced) from JSONL: a multipart ``file``
    or a raw ``application/x-ndjson`` body. A file with any bad line changes nothing unless
    ``skip_invalid=true``; each bad line is reported with its number and reason."""

    permission_classes = [IsAdmin]
    parser_classes = [MultiPartParser, JsonLinesParser, JsonlParser]

    @extend_schema(
        parameters=[
            OpenApiParameter("skip_invalid", bool, description="Import the good lines anyway."),
            OpenApiParameter("source", str, description="Recorded as each prompt's source."),
        ],
        request={
            "multipart/form-data": inline_serializer(
                "PromptImportUpload", {"file": serializers.FileField()}
            ),
            "application/x-ndjson": OpenApiTypes.BINARY,
        },
        responses={201: IMPORT_REPORT, 400: ERROR, 413: ERROR},
    )
    def post(self, request: Request) -> Response:
        skip_invalid = request.query_params.get("skip_invalid", "false").lower() in {
            "1",
            "true",
            "yes",
        }
        if "_raw" in request.data:
            lines: Any = request.data["_raw"].splitlines()
            source = request.query_params.get("source", "api")
        else:
            upload = request.FILES.get("file")
            if upload is None:
                raise DomainError("Send a JSONL file.", fields={"file": ["No file was submitted."]})
            if upload.size > settings.IMPORT_MAX_BYTES:
                raise DomainError(
                    "The file is too large.",
                    code="too_large",
                    status=413,
                    fields={"file": [f"At most {settings.IMPORT_MAX_BYTES} bytes."]},
                )
            lines = (line.rstrip(b"\r\n") for line in upload)
            source = request.query_params.get("source", upload.name or "upload")
        report = prompts_import(lines=lines, source=source[:200], skip_invalid=skip_invalid)
        return Response(report.as_dict(), status=201)


class RoundOutputSerializer(serializers.ModelSerializer):
    rubric = serializers.CharField(source="rubric.label")
    policy_version = serializers.CharField(
        source="policy_version.name", allow_null=True, default=None
    )
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Round
        fields = [
            "id",
            "number",
            "source",
            "status",
            "k",
            "overlap",
            "seed",
            "rubric",
            "policy_version",
            "created_at",
            "closed_at",
            "progress",
        ]

    @extend_schema_field(
        inline_serializer(
            "RoundProgress",
            {
                name: serializers.IntegerField()
                for name in ("tasks", "complete", "judgments", "target", "leased")
            },
        )
    )
    def get_progress(self, round_: Round) -> dict[str, int]:
        return round_progress(round_=round_)


class RoundListApi(APIView):
    """List rounds (newest first) with their progress, or open a round from imported completions."""

    permission_classes = [IsAdmin]

    class RoundOpenInputSerializer(serializers.Serializer):
        k = StrictIntegerField(min_value=2, max_value=16, help_text="Completions per task.")
        overlap = StrictIntegerField(
            min_value=1, max_value=50, default=3, help_text="Judgments wanted per task."
        )
        tags = serializers.ListField(
            child=serializers.CharField(max_length=100),
            required=False,
            help_text="Only prompts carrying all these tags.",
        )
        prompt_ids = serializers.ListField(
            child=StrictIntegerField(min_value=1), required=False, max_length=100_000
        )
        include_used = serializers.BooleanField(
            default=False, help_text="Also use prompts that are already in a round."
        )
        rubric = serializers.PrimaryKeyRelatedField(
            queryset=Rubric.objects.all(), required=False, help_text="Default: the newest 3H."
        )
        seed = StrictIntegerField(required=False, min_value=0, max_value=2**31 - 1)

    @extend_schema(responses=RoundOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        rounds = Round.objects.select_related("rubric", "policy_version").order_by("-number")
        return Response(RoundOutputSerializer(rounds, many=True).data)

    @extend_schema(
        request=RoundOpenInputSerializer,
        responses={
            201: inline_serializer(
                "RoundOpened",
                {"round": RoundOutputSerializer(), "prompts_left_out": serializers.IntegerField()},
            ),
            400: ERROR,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.RoundOpenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        round_, left_out = round_open_from_imported(**data.validated_data, created_by=request.user)
        return Response(
            {"round": RoundOutputSerializer(round_).data, "prompts_left_out": left_out}, status=201
        )


class RoundDetailApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses={200: RoundOutputSerializer, 404: ERROR})
    def get(self, request: Request, round_id: int) -> Response:
        round_ = (
            Round.objects.select_related("rubric", "policy_version").filter(pk=round_id).first()
        )
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        return Response(RoundOutputSerializer(round_).data)


class RoundCloseApi(APIView):
    """Stop handing out the round's tasks; leases already held can still be submitted."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: RoundOutputSerializer, 404: ERROR})
    def post(self, request: Request, round_id: int) -> Response:
        return Response(RoundOutputSerializer(round_close(round_id=round_id)).data)


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
