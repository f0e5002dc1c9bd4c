"""URL map: the v1 REST API, its OpenAPI schema and docs, and the pages."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from annotation import api as annotation_api

from . import api

api_v1 = [
    path("auth/token/", api.AuthTokenApi.as_view(), name="auth-token"),
    path("policies/", api.PolicyListApi.as_view(), name="policy-list"),
    path("tasks/next/", annotation_api.TaskNextApi.as_view(), name="task-next"),
    path(
        "assignments/<uuid:assignment_id>/submit/",
        annotation_api.AssignmentSubmitApi.as_view(),
        name="assignment-submit",
    ),
    path(
        "assignments/<uuid:assignment_id>/skip/",
        annotation_api.AssignmentSkipApi.as_view(),
        name="assignment-skip",
    ),
    path("me/stats/", annotation_api.MeStatsApi.as_view(), name="me-stats"),
    path("prompts/import/", annotation_api.PromptImportApi.as_view(), name="prompt-import"),
    path("rounds/", annotation_api.RoundListApi.as_view(), name="round-list"),
    path("rounds/<int:round_id>/", annotation_api.RoundDetailApi.as_view(), name="round-detail"),
    path(
        "rounds/<int:round_id>/close/", annotation_api.RoundCloseApi.as_view(), name="round-close"
    ),
    path(
        "exports/preferences/",
        annotation_api.PreferenceExportApi.as_view(),
        name="export-preferences",
    ),
]

urlpatterns = [
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("", include("frontend.urls")),
]

handler404 = "frontend.views.not_found"
handler500 = "frontend.views.server_error"
