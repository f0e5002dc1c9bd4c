"""The base layer's API routes (under /api/v1/, namespace "api"): tokens, the audit log, policy
versions and their deployments, webhooks and their delivery log."""

from __future__ import annotations

from django.urls import path

from feedback import api
from feedback.platform.webhooks import api as webhooks_api

urlpatterns = [
    path("auth/token/", api.AuthTokenApi.as_view(), name="auth-token"),
    path("audit/", api.AuditEventListApi.as_view(), name="audit-list"),
    path("policies/", api.PolicyListApi.as_view(), name="policy-list"),
    path("policies/<int:policy_id>/deploy/", api.PolicyDeployApi.as_view(), name="policy-deploy"),
    path(
        "policies/<int:policy_id>/rollback/",
        api.PolicyRollbackApi.as_view(),
        name="policy-rollback",
    ),
    path(
        "deployments/<int:deployment_id>/",
        api.DeploymentDetailApi.as_view(),
        name="deployment-detail",
    ),
    path("webhooks/", webhooks_api.WebhookListApi.as_view(), name="webhook-list"),
    path(
        "webhooks/deliveries/",
        webhooks_api.WebhookDeliveryListApi.as_view(),
        name="webhook-delivery-list",
    ),
    path(
        "webhooks/<int:webhook_id>/", webhooks_api.WebhookDetailApi.as_view(), name="webhook-detail"
    ),
    path(
        "webhooks/<int:webhook_id>/ping/",
        webhooks_api.WebhookPingApi.as_view(),
        name="webhook-ping",
    ),
]
