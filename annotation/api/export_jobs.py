"""Export jobs (researcher, admin): queue an export, watch its progress, download its file."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.errors import DomainError
from feedback.platform.roles import IsResearcherOrAdmin, Role, user_has_role
from feedback.platform.strict import BoundedDictField, StrictApiView, StrictSerializer

from ..exports import FILE_FORMATS, FORMATS
from ..exports.jobs import export_job_create, export_job_path
from ..models import ExportJob
from ..selectors import export_job_list
from .common import ERROR


class ExportJobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    download = serializers.SerializerMethodField()
    percent = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = [
            "id", "url", "format", "file_format", "filters", "pseudonymous", "status",
            "progress_done", "progress_total", "percent", "rows", "size_bytes", "sha256",
            "error", "created_at", "started_at", "finished_at", "download",
        ]  # fmt: skip

    def get_url(self, job: ExportJob) -> str:
        return reverse("api:export-job-detail", args=[job.pk])

    def get_download(self, job: ExportJob) -> str | None:
        if job.status != ExportJob.Status.SUCCEEDED:
            return None
        return reverse("api:export-job-download", args=[job.pk])

    def get_percent(self, job: ExportJob) -> float:
        if job.status == ExportJob.Status.SUCCEEDED:
            return 100.0
        return round(100 * job.progress_done / job.progress_total, 1) if job.progress_total else 0.0


# More rounds, policies or flags than any export is cut from.
MAX_FILTER_VALUES = 1000


def _visible_jobs(request: Request) -> QuerySet[ExportJob]:
    """Admins see every job; a researcher sees their own (another's is a 404)."""
    jobs = export_job_list()
    return jobs if user_has_role(request.user, Role.ADMIN) else jobs.filter(created_by=request.user)


def _job(request: Request, job_id: Any) -> ExportJob:
    job = _visible_jobs(request).filter(pk=job_id).first()
    if job is None:
        raise DomainError("No such export.", code="not_found", status=404)
    return job


class ExportJobListApi(StrictApiView):
    """Queue an export in any format, JSONL or Parquet, with the same filters as the streamed
    export (GET /api/v1/exports/preferences/). Answers 202 with the job; poll its url for
    progress; its download link appears when it has succeeded."""

    permission_classes = [IsResearcherOrAdmin]

    class ExportJobInputSerializer(StrictSerializer):
        format = serializers.ChoiceField(choices=list(FORMATS), default="trl")
        file_format = serializers.ChoiceField(choices=list(FILE_FORMATS), default="jsonl")
        filters = BoundedDictField(
            default=dict,
            max_length=100,
            help_text="rounds, policies, rubric, min_agreement, min_trust, flags, exclude_flags, "
            "axis, since, until, consensus, weighting, include_none_acceptable (see the "
            "streamed export's parameters); "
            f"a list holds at most {MAX_FILTER_VALUES} values.",
        )
        pseudonymous = serializers.BooleanField(
            default=True, help_text="false (admins only) puts usernames in the annotator columns."
        )

        def validate_filters(self, filters: dict[str, Any]) -> dict[str, Any]:
            """A filter's list is refused by its length before its values are looked up."""
            too_long = {
                name: [f"At most {MAX_FILTER_VALUES} entries; got {len(value)}."]
                for name, value in filters.items()
                if isinstance(value, list) and len(value) > MAX_FILTER_VALUES
            }
            if too_long:
                raise serializers.ValidationError(too_long)
            return filters

    @extend_schema(responses=ExportJobSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ExportJobSerializer(_visible_jobs(request)[:100], many=True).data)

    @extend_schema(
        request=ExportJobInputSerializer,
        responses={202: ExportJobSerializer, 400: ERROR, 403: ERROR},
    )
    def post(self, request: Request) -> Response:
        data = self.ExportJobInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if not values["pseudonymous"] and not user_has_role(request.user, Role.ADMIN):
            raise DomainError(
                "Only an admin can export annotators' names.",
                code="permission_denied",
                status=403,
                fields={"pseudonymous": ["Only admins may set this to false."]},
            )
        job = export_job_create(
            fmt=values["format"], file_format=values["file_format"], filters=values["filters"],
            pseudonymous=values["pseudonymous"], created_by=request.user,
        )  # fmt: skip
        body = ExportJobSerializer(job).data
        return Response(body, status=202, headers={"Location": body["url"]})


class ExportJobDetailApi(StrictApiView):
    permission_classes = [IsResearcherOrAdmin]

    @extend_schema(responses={200: ExportJobSerializer, 404: ERROR})
    def get(self, request: Request, job_id: Any) -> Response:
        return Response(ExportJobSerializer(_job(request, job_id)).data)


class ExportJobDownloadApi(StrictApiView):
    permission_classes = [IsResearcherOrAdmin]

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The export file (JSONL or Parquet)."
            ),
            404: ERROR,
            409: ERROR,
        }
    )
    def get(self, request: Request, job_id: Any) -> FileResponse:
        job = _job(request, job_id)
        if job.status != ExportJob.Status.SUCCEEDED:
            raise DomainError(
                f"The export is {job.status}; its file is not ready.", code="not_ready", status=409
            )
        content_type = (
            "application/x-ndjson"
            if job.file_format == "jsonl"
            else "application/vnd.apache.parquet"
        )
        return FileResponse(
            export_job_path(job).open("rb"), as_attachment=True, content_type=content_type,
            filename=f"{job.format}-{str(job.pk)[:8]}.{job.file_format}",
        )  # fmt: skip
