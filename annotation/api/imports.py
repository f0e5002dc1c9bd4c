"""Importing prompts from JSONL (admin)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.errors import DomainError
from feedback.platform.parsers import MultiPartParser
from feedback.platform.roles import IsAdmin
from feedback.platform.strict import StrictApiView, body_strict

from ..imports import prompts_import
from .common import ERROR


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
        "errors_not_shown": serializers.IntegerField(),
    },
)


class PromptImportApi(StrictApiView):
    """Import prompts (and completions other models produced) from JSONL: a multipart ``file``
    or a raw ``application/x-ndjson`` body. A file with any bad line changes nothing unless
    ``skip_invalid=true``; each bad line is reported with its number and reason."""

    permission_classes = [IsAdmin]
    parser_classes = [MultiPartParser, JsonLinesParser, JsonlParser]
    query_fields = ("skip_invalid", "source")

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
        if isinstance(request.data.get("_raw"), bytes):  # the raw JSONL parser's body
            lines: Any = request.data["_raw"].splitlines()
            source = request.query_params.get("source", "api")
        else:
            body_strict(request, ("file",))
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
