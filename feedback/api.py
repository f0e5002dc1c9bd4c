"""Core routes: token sign-in for scripts, the policy list and registering a model."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.models import Deployment, PolicyVersion
from feedback.platform.audit import audit_event_dict, audit_events
from feedback.platform.errors import DomainError, error_schema
from feedback.platform.middleware import API_DOCS_CONTENT_SECURITY_POLICY
from feedback.platform.roles import IsAdmin, IsResearcherOrAdmin, user_roles
from feedback.platform.strict import StrictApiView, StrictSerializer, body_strict
from feedback.platform.throttle import login_attempt_begin, login_attempt_succeeded
from feedback.serving.guidance import policy_registry_info
from feedback.serving.policies import (
    deployment_get,
    deployment_request,
    policy_list,
    policy_register_model,
    rollback_request,
)

ERROR = error_schema()


class AuthTokenApi(StrictApiView):
    """Exchange a username and password for the account's API token (``Authorization: Token …``).
    Under the sign-in limits (feedback/platform/throttle.py): past them, 429 with Retry-After,
    whatever the password."""

    permission_classes = [AllowAny]
    authentication_classes: list[type] = []

    class AuthTokenInputSerializer(StrictSerializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)

    @extend_schema(
        request=AuthTokenInputSerializer,
        responses=inline_serializer(
            "AuthToken",
            {
                "token": serializers.CharField(),
                "username": serializers.CharField(),
                "roles": serializers.ListField(child=serializers.CharField()),
            },
        ),
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = self.AuthTokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        attempt = login_attempt_begin(request, username=data.validated_data["username"])
        if attempt.wait is not None:
            raise Throttled(wait=attempt.wait)
        user = authenticate(
            request._request,
            username=data.validated_data["username"],
            password=data.validated_data["password"],
        )
        if user is None or not user.is_active:
            raise DomainError(
                "Unable to sign in with this username and password.",
                code="invalid_credentials",
                fields={"password": ["Unable to sign in with this username and password."]},
            )  # the attempt's slots stay taken: it counts as a failure
        login_attempt_succeeded(attempt)
        token, _ = Token.objects.get_or_create(user=user)
        return Response(
            {"token": token.key, "username": user.get_username(), "roles": sorted(user_roles(user))}
        )


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI served from this host, its script a separate file, as the CSP requires."""

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        response.headers["Content-Security-Policy"] = API_DOCS_CONTENT_SECURITY_POLICY
        return response


class PolicySerializer(serializers.ModelSerializer):
    parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    registry = serializers.SerializerMethodField(
        help_text="What the model's name says (family, version, size, chat or base, "
        "quantization), memory estimates to serve and fine-tune, and warnings."
    )
    model_info = serializers.JSONField(
        read_only=True,
        help_text="What the files said at registration: source, revision, path, format "
        "(safetensors or gguf), serve_only, parameters (from the safetensors headers), "
        "torch_dtype, quantization, quantization_config, chat_template, context_length, "
        "architectures, model_type, layers, kv_heads, head_dim, adapter {path, base_model, r}. "
        "Empty for versions not registered from files (the tiny model, trained, imported).",
    )

    class Meta:
        model = PolicyVersion
        fields = [
            "id", "name", "base_model", "adapter_path", "revision", "parent", "status",
            "created_at", "model_info", "registry",
        ]  # fmt: skip

    def get_registry(self, policy: PolicyVersion) -> dict[str, Any]:
        return policy_registry_info(policy)


class PolicyListApi(StrictApiView):
    """Every policy version the platform knows, newest first (researchers and admins); an admin
    registers a model by POSTing where its files are (strict: an unknown field is a 400)."""

    def get_permissions(self) -> list[Any]:
        return [IsAdmin()] if self.request.method == "POST" else [IsResearcherOrAdmin()]

    class PolicyRegisterInputSerializer(StrictSerializer):
        source = serializers.CharField(
            max_length=500,
            help_text="A folder or .gguf file under ARTIFACTS_DIR or a folder of MODEL_DIRS, or "
            "a hub id (org/name) already in the local Hugging Face cache (never downloaded).",
        )
        name = serializers.CharField(
            max_length=200, required=False, allow_blank=True,
            help_text="The version's name; default: the hub id, or the folder's (file's) name.",
        )  # fmt: skip
        revision = serializers.CharField(
            max_length=100, required=False, allow_blank=True,
            help_text="A hub branch, tag or commit (hub ids only).",
        )  # fmt: skip
        adapter = serializers.CharField(
            max_length=500, required=False, allow_blank=True,
            help_text="A PEFT adapter folder (adapter_model.safetensors) served on top of it.",
        )  # fmt: skip
        activate = serializers.BooleanField(
            default=False,
            help_text="Deploy it: a deployment job checks the backend answers with it, then "
            "makes it the serving version.",
        )

    class PolicyRegisteredSerializer(PolicySerializer):
        # A plain string here: the status enum already has its one name in Policy's schema.
        status = serializers.CharField(read_only=True, help_text="candidate: newly registered.")
        deployment = serializers.SerializerMethodField(
            help_text="The deployment ``activate`` requested (null when not asked); follow "
            "/api/v1/deployments/{id}/: it switches once the backend answers with the model."
        )

        class Meta(PolicySerializer.Meta):
            fields = [*PolicySerializer.Meta.fields, "deployment"]

        def get_deployment(self, policy: PolicyVersion) -> int | None:
            deployment = policy.deployments.order_by("-id").first()
            return deployment.pk if deployment else None

    @extend_schema(responses=PolicySerializer(many=True))
    def get(self, request: Request) -> Response:
        policies = policy_list()
        return Response(PolicySerializer(policies, many=True).data)

    @extend_schema(
        request=PolicyRegisterInputSerializer,
        responses={201: PolicyRegisteredSerializer, 400: ERROR, 403: ERROR, 409: ERROR},
    )
    def post(self, request: Request) -> Response:
        """Register a model from its files: what they say is stored with the version. A
        source that is not there, not allowed, or only pickled weights is a 400 naming it."""
        data = self.PolicyRegisterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        policy = policy_register_model(
            source=values["source"], name=values.get("name"), revision=values.get("revision"),
            adapter=values.get("adapter"), activate=values["activate"],
            requested_by=request.user, via_request=True,
        )  # fmt: skip
        return Response(self.PolicyRegisteredSerializer(policy).data, status=201)


class DeploymentSerializer(serializers.ModelSerializer):
    policy_version = serializers.CharField(source="policy_version.name")
    previous = serializers.CharField(source="previous.name", allow_null=True, default=None)

    class Meta:
        model = Deployment
        fields = [
            "id", "policy_version", "previous", "action", "backend", "status", "error",
            "created_at", "finished_at",
        ]  # fmt: skip


class PolicyDeployApi(StrictApiView):
    """Make this version the serving one. 202: a job checks the backend answers with it, then
    switches in one transaction; follow ``/api/v1/deployments/{id}/``."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={202: DeploymentSerializer, 404: ERROR, 409: ERROR})
    def post(self, request: Request, policy_id: int) -> Response:
        body_strict(request)
        deployment = deployment_request(policy_id=policy_id, requested_by=request.user)
        return Response(DeploymentSerializer(deployment).data, status=202)


class PolicyRollbackApi(StrictApiView):
    """Put back the version that served before this one (which must be the active one)."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={202: DeploymentSerializer, 409: ERROR})
    def post(self, request: Request, policy_id: int) -> Response:
        body_strict(request)
        deployment = rollback_request(policy_id=policy_id, requested_by=request.user)
        return Response(DeploymentSerializer(deployment).data, status=202)


class DeploymentDetailApi(StrictApiView):
    permission_classes = [IsResearcherOrAdmin]

    @extend_schema(responses={200: DeploymentSerializer, 404: ERROR})
    def get(self, request: Request, deployment_id: int) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        if deployment is None:
            raise DomainError("No such deployment.", code="not_found", status=404)
        return Response(DeploymentSerializer(deployment).data)


AUDIT_EVENT_FIELDS = {
    "id": serializers.IntegerField(),
    "at": serializers.DateTimeField(),
    "actor": serializers.CharField(),
    "action": serializers.CharField(),
    "method": serializers.CharField(),
    "path": serializers.CharField(),
    "target": serializers.DictField(child=serializers.CharField()),
    "status_code": serializers.IntegerField(),
    "ip": serializers.IPAddressField(allow_null=True),
}


class AuditEventListApi(StrictApiView):
    """The audit log (admins only): every state-changing request an admin account made, newest
    first; ``before`` (an event id) pages back through older ones."""

    permission_classes = [IsAdmin]
    query_fields = ("actor", "action", "since", "before", "limit")

    class AuditQuerySerializer(serializers.Serializer):
        actor = serializers.CharField(required=False, max_length=150, help_text="A username.")
        action = serializers.CharField(
            required=False, max_length=100, help_text="A route name, e.g. api:round-close."
        )
        since = serializers.DateTimeField(required=False)
        before = serializers.IntegerField(required=False, min_value=1)
        limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=100)

    @extend_schema(
        parameters=[AuditQuerySerializer],
        responses={
            200: inline_serializer(
                "AuditEventPage",
                {
                    "results": inline_serializer(
                        "AuditEvent",
                        AUDIT_EVENT_FIELDS,
                        many=True,
                    ),
                    "next_before": serializers.IntegerField(allow_null=True),
                },
            ),
            400: error_schema(),
        },
    )
    def get(self, request: Request) -> Response:
        query = self.AuditQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        values = query.validated_data
        events = audit_events(
            actor=values.get("actor"), action=values.get("action"), since=values.get("since")
        )
        if "before" in values:
            events = events.filter(pk__lt=values["before"])
        page = list(events.order_by("-id")[: values["limit"] + 1])
        more = len(page) > values["limit"]
        page = page[: values["limit"]]
        return Response(
            {
                "results": [audit_event_dict(event) for event in page],
                "next_before": page[-1].pk if more else None,
            }
        )
