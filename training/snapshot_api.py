"""Dataset snapshots over REST: cut one from judgments, upload a plain-text corpus, read them.

Researchers and admins read; admins create (a snapshot writes files under the artifacts root).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.api.export_jobs import MAX_FILTER_VALUES, ExportJobListApi
from annotation.exports import CONSENSUS_RULES, WEIGHTINGS
from annotation.rubrics import rubric_current
from feedback.platform.errors import DomainError, error_schema
from feedback.platform.parsers import MultiPartParser
from feedback.platform.roles import IsAdmin, IsResearcherOrAdmin, Role, user_has_role
from feedback.platform.strict import (
    BoundedDictField,
    BoundedListField,
    StrictApiView,
    StrictSerializer,
    body_strict,
)

from .models import DatasetSnapshot
from .selectors import snapshot_get, snapshot_list
from .snapshots import (
    snapshot_create_export,
    snapshot_create_kto,
    snapshot_create_preference,
    snapshot_create_sft,
    snapshot_create_text,
    snapshot_datasheet_path,
)

ERROR = error_schema()
# A snapshot is cut from at most this many rounds, with at most this many filters (an export's).
MAX_ROUNDS = 1000
MAX_FILTERS = 100
# What POST snapshots/ cuts from judgments; a text corpus is uploaded at snapshots/text/.
SNAPSHOT_REQUEST_KINDS = [
    (kind.value, kind.label)
    for kind in (
        DatasetSnapshot.Kind.PREFERENCE,
        DatasetSnapshot.Kind.SFT,
        DatasetSnapshot.Kind.KTO,
        DatasetSnapshot.Kind.EXPORT,
    )
]


def _too_large() -> DomainError:
    return DomainError(
        f"The corpus is larger than {settings.IMPORT_MAX_BYTES} bytes.", code="too_large",
        status=413, fields={"file": [f"At most {settings.IMPORT_MAX_BYTES} bytes."]},
    )  # fmt: skip


class PlainTextParser(BaseParser):
    """A raw ``text/plain`` body, read up to the import size limit."""

    media_type = "text/plain"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = stream.read(settings.IMPORT_MAX_BYTES + 1) if stream is not None else b""
        if len(data) > settings.IMPORT_MAX_BYTES:
            raise _too_large()
        return {"_raw": data}


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetSnapshot
        fields = ["id", "kind", "filters", "path", "manifest", "sha256", "created_at"]


class _ReadOrAdmin(BasePermission):
    """Researchers and admins read; only admins write (researchers may freeze exports, which
    the view checks)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS") or getattr(view, "researchers_post", False):
            return IsResearcherOrAdmin().has_permission(request, view)
        return IsAdmin().has_permission(request, view)


def _check_trust_options(given: dict[str, Any]) -> None:
    """The trust options (and ``include_none_acceptable``) where they have a meaning: an export
    snapshot takes them in its filters, as an export job does, SFT rows have no consensus to
    weigh, and only preference pairs leave out what found no answer acceptable."""
    kind = given["kind"]
    errors: dict[str, list[str]] = {}
    if kind == DatasetSnapshot.Kind.EXPORT:
        for name in ("min_trust", "weighting"):
            if name in given:
                errors[name] = [f"For an export snapshot, give {name} in filters."]
    elif kind == DatasetSnapshot.Kind.SFT and given.get("weighting", "equal") != "equal":
        errors["weighting"] = ["SFT rows are not a consensus: weighting applies to preference "
                               "and kto snapshots."]  # fmt: skip
    if kind != DatasetSnapshot.Kind.PREFERENCE and "include_none_acceptable" in given:
        errors["include_none_acceptable"] = [
            "Applies to preference snapshots (export: give it in filters; KTO always labels "
            "such answers undesirable)."
        ]
    if errors:
        raise DomainError("Options that do not apply: " + ", ".join(errors) + ".", fields=errors)


class SnapshotListApi(StrictApiView):
    """Freeze judgments (or demonstrations) as an immutable snapshot, or list snapshots."""

    permission_classes = [_ReadOrAdmin]
    researchers_post = True

    class SnapshotInputSerializer(StrictSerializer):
        kind = serializers.ChoiceField(
            choices=SNAPSHOT_REQUEST_KINDS,
            help_text="preference pairs, SFT prompt-completion rows, or KTO unpaired rows (the "
            "training kinds, admins); or export: any research export format frozen with its "
            "filters (researchers too). A text corpus is uploaded at snapshots/text/.",
        )  # fmt: skip
        rounds = BoundedListField(
            child=serializers.IntegerField(min_value=1), required=False, max_length=MAX_ROUNDS,
            help_text="Round numbers; default: every round.",
        )  # fmt: skip
        axis = serializers.CharField(
            required=False, help_text="preference: pairs from this rubric axis's scores."
        )
        consensus = serializers.ChoiceField(
            choices=CONSENSUS_RULES, default="bradley_terry",
            help_text="preference: how a task's several judgments combine.",
        )  # fmt: skip
        min_trust = serializers.FloatField(
            required=False, allow_null=True,
            help_text="preference, kto, sft: leave out the judgments (and demonstrations) of "
            "annotators whose trust is below this, 0 to 1: the export's min_trust (export: "
            "put it in filters).",
        )  # fmt: skip
        weighting = serializers.ChoiceField(
            choices=WEIGHTINGS, required=False,
            help_text="preference, kto: each annotator's weight in a task's consensus, equal "
            "(default) or their trust: the export's weighting (export: put it in filters).",
        )  # fmt: skip
        top_ranked = serializers.BooleanField(
            default=False, help_text="sft: also each judgment's single best completion."
        )
        include_none_acceptable = serializers.BooleanField(
            required=False,
            help_text="preference: also the pairs of judgments (or tasks) that found no answer "
            "acceptable, left out by default: the export's include_none_acceptable (export: "
            "put it in filters).",
        )  # fmt: skip
        eval_fraction = serializers.FloatField(min_value=0, max_value=0.9, default=0.1)
        format = serializers.CharField(
            required=False, help_text="export: the format (GET /api/v1/exports/preferences/)."
        )
        file_format = serializers.ChoiceField(
            choices=["jsonl", "parquet"], default="jsonl", help_text="export: the file format."
        )
        filters = BoundedDictField(
            default=dict, max_length=MAX_FILTERS,
            help_text="export: the export filters (rounds, min_trust, …); a list holds at most "
            f"{MAX_FILTER_VALUES} values.",
        )  # fmt: skip
        pseudonymous = serializers.BooleanField(
            default=True, help_text="export: false (admins only) keeps annotators' names."
        )

        # The export job's check: a filter's list is refused by its length first.
        validate_filters = ExportJobListApi.ExportJobInputSerializer.validate_filters

    @extend_schema(responses=SnapshotSerializer(many=True))
    def get(self, request: Request) -> Response:
        snapshots = snapshot_list()[:100]
        return Response(SnapshotSerializer(snapshots, many=True).data)

    @extend_schema(request=SnapshotInputSerializer, responses={201: SnapshotSerializer, 400: ERROR})
    def post(self, request: Request) -> Response:
        data = self.SnapshotInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        _check_trust_options(given)
        admin = user_has_role(request.user, Role.ADMIN)
        if given["kind"] == DatasetSnapshot.Kind.EXPORT:
            if not given["pseudonymous"] and not admin:
                raise DomainError(
                    "Only an admin can export annotators' names.", code="permission_denied",
                    status=403, fields={"pseudonymous": ["Only admins may set this to false."]},
                )  # fmt: skip
            snapshot = snapshot_create_export(
                fmt=given.get("format") or "trl", file_format=given["file_format"],
                filters=given["filters"], pseudonymous=given["pseudonymous"],
                created_by=request.user,
            )  # fmt: skip
            return Response(SnapshotSerializer(snapshot).data, status=201)
        if not admin:
            raise DomainError(
                "Only admins cut training snapshots; researchers may freeze exports (kind "
                "'export').", code="permission_denied", status=403,
            )  # fmt: skip
        common = {
            "rounds": given.get("rounds"),
            "min_trust": given.get("min_trust"),
            "eval_fraction": given["eval_fraction"],
            "created_by": request.user,
        }
        weighting = given.get("weighting", "equal")
        if given["kind"] == DatasetSnapshot.Kind.SFT:
            snapshot = snapshot_create_sft(top_ranked=given["top_ranked"], **common)
        elif given["kind"] == DatasetSnapshot.Kind.KTO:
            snapshot = snapshot_create_kto(weighting=weighting, **common)
        else:
            axis = given.get("axis")
            if axis is not None and axis not in (keys := [a["key"] for a in rubric_current().axes]):
                raise DomainError(
                    f"axis: one of {', '.join(keys)}.",
                    fields={"axis": [f"One of the rubric's axes: {', '.join(keys)}."]},
                )
            snapshot = snapshot_create_preference(
                axis=axis, consensus=given["consensus"], weighting=weighting,
                include_none_acceptable=given.get("include_none_acceptable", False), **common,
            )  # fmt: skip
        return Response(SnapshotSerializer(snapshot).data, status=201)


class TextSnapshotApi(StrictApiView):
    """Upload a plain-text corpus (UTF-8; documents separated by blank lines) as a snapshot for
    continued pre-training: a multipart ``file`` or a raw ``text/plain`` body."""

    permission_classes = [IsAdmin]
    parser_classes = [MultiPartParser, PlainTextParser]
    query_fields = ("name", "eval_fraction")

    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, description="What the corpus is (kept in filters)."),
            OpenApiParameter("eval_fraction", float, description="Held-out documents (0.1)."),
        ],
        request={
            "multipart/form-data": inline_serializer(
                "CorpusUpload", {"file": serializers.FileField()}
            ),
            "text/plain": OpenApiTypes.BINARY,
        },
        responses={201: SnapshotSerializer, 400: ERROR, 413: ERROR},
    )
    def post(self, request: Request) -> Response:
        try:
            eval_fraction = float(request.query_params.get("eval_fraction", "0.1"))
        except ValueError:
            eval_fraction = -1.0
        if not 0 <= eval_fraction <= 0.9:
            why = "A number from 0 to 0.9."
            raise DomainError(f"eval_fraction: {why}", fields={"eval_fraction": [why]})
        if isinstance(request.data.get("_raw"), bytes):  # PlainTextParser's (not a form field)
            lines: Any = request.data["_raw"].splitlines()
            name = request.query_params.get("name", "upload")
        else:
            body_strict(request, ("file",))
            upload = request.FILES.get("file")
            if upload is None:
                why = "No file was submitted."
                raise DomainError("Send a plain-text corpus.", fields={"file": [why]})
            if upload.size > settings.IMPORT_MAX_BYTES:
                raise _too_large()
            lines = iter(upload)
            name = request.query_params.get("name", upload.name or "upload")
        snapshot = snapshot_create_text(
            lines=lines, name=name, eval_fraction=eval_fraction, created_by=request.user
        )
        return Response(SnapshotSerializer(snapshot).data, status=201)


class SnapshotDetailApi(StrictApiView):
    permission_classes = [IsResearcherOrAdmin]

    @extend_schema(responses={200: SnapshotSerializer, 404: ERROR})
    def get(self, request: Request, snapshot_id: int) -> Response:
        snapshot = snapshot_get(snapshot_id=snapshot_id)
        if snapshot is None:
            raise DomainError("No such snapshot.", code="not_found", status=404)
        return Response(SnapshotSerializer(snapshot).data)


class SnapshotDatasheetApi(StrictApiView):
    """The snapshot's datasheet (its README.md: what the data is, rubric, counts, agreement,
    annotators, known limits, the exact filters and a load_dataset snippet), as Markdown."""

    permission_classes = [IsResearcherOrAdmin]

    @extend_schema(
        responses={
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR, description="Markdown."),
            404: ERROR,
        }
    )
    def get(self, request: Request, snapshot_id: int) -> HttpResponse:
        snapshot = snapshot_get(snapshot_id=snapshot_id)
        sheet = snapshot_datasheet_path(snapshot) if snapshot is not None else None
        if sheet is None or not sheet.exists():
            raise DomainError("No such snapshot datasheet.", code="not_found", status=404)
        return HttpResponse(sheet.read_bytes(), content_type="text/markdown; charset=utf-8")
