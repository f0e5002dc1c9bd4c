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

from .errors import DomainError
from .middleware import API_DOCS_CONTENT_SECURITY_POLICY
from .models import PolicyVersion
from .registry import policy_registry_info
from .roles import IsResearcherOrAdmin, user_roles


class AuthTokenApi(APIView):
    """Exchange a username and password for the account's API token (``Authorization: Token …``)."""

    permission_classes = [AllowAny]
    authentication_classes: list[type] = []

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
        parent = serializers.PrimaryKeyRelatedField(read_only=True)
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
        policies = PolicyVersion.objects.order_by("-created_at", "-id")
        return Response(self.PolicySerializer(policies, many=True).data)
