"""The webhooks' REST routes (admins only): register, list, delete, send a test ping, and read
the delivery log. Routed in feedback/api_urls.py under /api/v1/webhooks/."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.models import Webhook, WebhookDelivery
from feedback.platform.errors import error_schema
from feedback.platform.roles import IsAdmin
from feedback.platform.strict import (
    BoundedListField,
    StrictApiView,
    StrictSerializer,
    body_strict,
)

from .events import EVENTS
from .services import (
    webhook_create,
    webhook_delete,
    webhook_deliveries,
    webhook_get,
    webhook_list,
    webhook_ping,
)

ERROR = error_schema()


class WebhookSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(
        source="created_by.username", allow_null=True, default=None, read_only=True
    )
    secret_hint = serializers.SerializerMethodField(
        help_text="The secret's first characters, to tell secrets apart; the whole one is "
        "shown only when the webhook is created."
    )

    class Meta:
        model = Webhook
        fields = [
            "id", "url", "events", "description", "active", "created_by", "created_at",
            "secret_hint",
        ]  # fmt: skip

    def get_secret_hint(self, webhook: Webhook) -> str:
        return webhook.secret[:10] + "…"


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing key of X-Feedback-Signature. Shown this once: keep it with the "
        "receiver.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    webhook_url = serializers.CharField(source="webhook.url", read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id", "webhook", "webhook_url", "event", "event_id", "payload", "status",
            "attempts", "next_attempt_at", "last_status_code", "last_error", "created_at",
            "delivered_at",
        ]  # fmt: skip


class WebhookListApi(StrictApiView):
    """Every webhook, newest first; POST registers one. Its URL is checked against server-side
    request forgery now and at every attempt (and every redirect hop): loopback, private,
    link-local and metadata addresses are refused, in any spelling, unless the setting
    WEBHOOK_ALLOW_PRIVATE_TARGETS allows private ones."""

    permission_classes = [IsAdmin]

    class WebhookCreateInputSerializer(StrictSerializer):
        # A CharField: the SSRF check parses the URL itself, and says why a numeric host
        # (2130706433, 0x7f.1) is refused rather than Django's "Enter a valid URL."
        url = serializers.CharField(max_length=2000, help_text="http(s) URL of the receiver.")
        events = BoundedListField(
            child=serializers.ChoiceField(choices=list(EVENTS)),
            max_length=len(EVENTS),
            help_text="The events it receives: " + ", ".join(EVENTS) + ".",
        )
        description = serializers.CharField(
            max_length=200, required=False, allow_blank=True, default=""
        )

    @extend_schema(responses=WebhookSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(WebhookSerializer(webhook_list(), many=True).data)

    @extend_schema(
        request=WebhookCreateInputSerializer,
        responses={201: WebhookCreatedSerializer, 400: ERROR, 403: ERROR},
    )
    def post(self, request: Request) -> Response:
        data = self.WebhookCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        webhook, secret = webhook_create(
            url=values["url"], events=values["events"], description=values["description"],
            created_by=request.user,
        )  # fmt: skip
        webhook.secret = secret
        return Response(WebhookCreatedSerializer(webhook).data, status=201)


class WebhookDetailApi(StrictApiView):
    permission_classes = [IsAdmin]

    @extend_schema(responses={200: WebhookSerializer, 404: ERROR})
    def get(self, request: Request, webhook_id: int) -> Response:
        return Response(WebhookSerializer(webhook_get(webhook_id=webhook_id)).data)

    @extend_schema(request=None, responses={204: None, 404: ERROR})
    def delete(self, request: Request, webhook_id: int) -> Response:
        """Remove the webhook and its delivery log."""
        body_strict(request)
        webhook_delete(webhook_id=webhook_id)
        return Response(status=204)


class WebhookPingApi(StrictApiView):
    """Send a test event (``ping``) to this webhook now; follow it in the delivery log."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer, 404: ERROR})
    def post(self, request: Request, webhook_id: int) -> Response:
        body_strict(request)
        delivery = webhook_ping(webhook_id=webhook_id)
        return Response(WebhookDeliverySerializer(delivery).data, status=202)


class WebhookDeliveryListApi(StrictApiView):
    """The delivery log, newest first: each event sent to each webhook, its status, attempts,
    the last response code or error, and when the next attempt is due."""

    permission_classes = [IsAdmin]
    query_fields = ("webhook", "before", "limit")

    class DeliveryQuerySerializer(serializers.Serializer):
        webhook = serializers.IntegerField(required=False, min_value=1)
        before = serializers.IntegerField(required=False, min_value=1, help_text="A delivery id.")
        limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)

    @extend_schema(
        parameters=[DeliveryQuerySerializer],
        responses={200: WebhookDeliverySerializer(many=True), 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        query = self.DeliveryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        values: dict[str, Any] = query.validated_data
        deliveries = webhook_deliveries(webhook_id=values.get("webhook"))
        if "before" in values:
            deliveries = deliveries.filter(pk__lt=values["before"])
        page = deliveries[: values["limit"]]
        return Response(WebhookDeliverySerializer(page, many=True).data)
