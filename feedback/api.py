"""Core routes: token sign-in for scripts and the policy list."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.models import Deployment, PolicyVersion
from feedback.platform.audit import audit_event_dict, audit_events
from feedback.platform.errors import DomainError, error_schema
from feedback.platform.middleware import API_DOCS_CONTENT_SECURITY_POLICY
from feedback.platform.roles import IsAdmin, IsResearcherOrAdmin, user_roles
from feedback.platform.throttle import LoginThrottle
from feedback.serving.policies import (
    deployment_get,
    deployment_request,
    policy_list,
    rollback_request,
)
from feedback.serving.registry import policy_registry_info

ERROR = error_schema()


class AuthTokenApi(APIView):
    """Exchange a username and password for the account's API token (``Authorization: Token …``)."""

    permission_classes = [AllowAny]
    authentication_classes: list[type] = []
    throttle_classes = [LoginThrottle]

    class AuthTokenInputSerializer(serializers.Serializer):
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
            )
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


class PolicyListApi(APIView):
    """Every policy version the platform knows, newest first."""

    permission_classes = [IsResearcherOrAdmin]

    class PolicySerializer(serializers.ModelSerializer):
        parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
        registry = serializers.SerializerMethodField(
            help_text="What the model's name says (family, version, size, chat or base, "
            "quantization), memory estimates to serve and fine-tune, and warnings."
        )

        class Meta:
            model = PolicyVersion
            fields = [
                "id", "name", "base_model", "adapter_path", "parent", "status", "created_at",
                "registry",
            ]  # fmt: skip

        def get_registry(self, policy: PolicyVersion) -> dict[str, Any]:
            return policy_registry_info(policy)

    @extend_schema(responses=PolicySerializer(many=True))
    def get(self, request: Request) -> Response:
        policies = policy_list()
        return Response(self.PolicySerializer(policies, many=True).data)


class DeploymentSerializer(serializers.ModelSerializer):
    policy_version = serializers.CharField(source="policy_version.name")
    previous = serializers.CharField(source="previous.name", allow_null=True, default=None)

    class Meta:
        model = Deployment
        fields = [
            "id", "policy_version", "previous", "action", "backend", "status", "error",
            "created_at", "finished_at",
        ]  # fmt: skip


class PolicyDeployApi(APIView):
    """Make this version the serving one. 202: a job checks the backend answers with it, then
    switches in one transaction; follow ``/api/v1/deployments/{id}/``."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={202: DeploymentSerializer, 404: ERROR, 409: ERROR})
    def post(self, request: Request, policy_id: int) -> Response:
        deployment = deployment_request(policy_id=policy_id, requested_by=request.user)
        return Response(DeploymentSerializer(deployment).data, status=202)


class PolicyRollbackApi(APIView):
    """Put back the version that served before this one (which must be the active one)."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={202: DeploymentSerializer, 409: ERROR})
    def post(self, request: Request, policy_id: int) -> Response:
        deployment = rollback_request(policy_id=policy_id, requested_by=request.user)
        return Response(DeploymentSerializer(deployment).data, status=202)


class DeploymentDetailApi(APIView):
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


class AuditEventListApi(APIView):
    """The audit log (admins only): every state-changing request an admin account made, newest
    first; ``before`` (an event id) pages back through older ones."""

    permission_classes = [IsAdmin]

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
