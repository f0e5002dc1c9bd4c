"""URL map: the v1 REST API, its OpenAPI schema and docs, and the pages."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from annotation.api import (
    demonstrations,
    export_jobs,
    exports,
    gold,
    imports,
    quality,
    rounds,
    tasks,
)
from training import api as training_api
from training import snapshot_api

from . import api

api_v1 = [
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
    path("tasks/next/", tasks.TaskNextApi.as_view(), name="task-next"),
    path(
        "assignments/<uuid:assignment_id>/submit/",
        tasks.AssignmentSubmitApi.as_view(),
        name="assignment-submit",
    ),
    path(
        "assignments/<uuid:assignment_id>/skip/",
        tasks.AssignmentSkipApi.as_view(),
        name="assignment-skip",
    ),
    path(
        "demonstrations/next/",
        demonstrations.DemonstrationNextApi.as_view(),
        name="demonstration-next",
    ),
    path(
        "demonstrations/",
        demonstrations.DemonstrationCreateApi.as_view(),
        name="demonstration-create",
    ),
    path(
        "demonstrations/mine/last/",
        demonstrations.DemonstrationLastApi.as_view(),
        name="demonstration-last",
    ),
    path(
        "demonstrations/<int:demonstration_id>/",
        demonstrations.DemonstrationEditApi.as_view(),
        name="demonstration-edit",
    ),
    path(
        "demonstrations/skip/",
        demonstrations.DemonstrationSkipApi.as_view(),
        name="demonstration-skip",
    ),
    path(
        "demonstrations/preview/",
        demonstrations.MarkdownPreviewApi.as_view(),
        name="demonstration-preview",
    ),
    path("me/stats/", tasks.MeStatsApi.as_view(), name="me-stats"),
    path("tasks/<int:task_id>/gold/", gold.TaskGoldApi.as_view(), name="task-gold"),
    path("quality/agreement/", quality.AgreementApi.as_view(), name="quality-agreement"),
    path("quality/annotators/", quality.AnnotatorQualityApi.as_view(), name="quality-annotators"),
    path("quality/disagreements/", quality.DisagreementApi.as_view(), name="quality-disagreements"),
    path("prompts/import/", imports.PromptImportApi.as_view(), name="prompt-import"),
    path("rounds/", rounds.RoundListApi.as_view(), name="round-list"),
    path("rounds/<int:round_id>/", rounds.RoundDetailApi.as_view(), name="round-detail"),
    path("rounds/<int:round_id>/close/", rounds.RoundCloseApi.as_view(), name="round-close"),
    path(
        "policies/<int:policy_id>/gate/", training_api.PolicyGateApi.as_view(), name="policy-gate"
    ),
    path(
        "rounds/<int:round_id>/automation/",
        training_api.AutomationApi.as_view(),
        name="round-automation",
    ),
    path(
        "rounds/<int:round_id>/automation/stop/",
        training_api.AutomationStopApi.as_view(),
        name="round-automation-stop",
    ),
    path("gates/<int:gate_id>/", training_api.GateDetailApi.as_view(), name="gate-detail"),
    path("training-runs/", training_api.TrainingRunListApi.as_view(), name="training-run-list"),
    path("snapshots/", snapshot_api.SnapshotListApi.as_view(), name="snapshot-list"),
    path("snapshots/text/", snapshot_api.TextSnapshotApi.as_view(), name="snapshot-text"),
    path(
        "snapshots/<int:snapshot_id>/",
        snapshot_api.SnapshotDetailApi.as_view(),
        name="snapshot-detail",
    ),
    path(
        "snapshots/<int:snapshot_id>/datasheet/",
        snapshot_api.SnapshotDatasheetApi.as_view(),
        name="snapshot-datasheet",
    ),
    path(
        "training-runs/<int:run_id>/",
        training_api.TrainingRunDetailApi.as_view(),
        name="training-run-detail",
    ),
    path(
        "training-runs/<int:run_id>/cancel/",
        training_api.TrainingRunCancelApi.as_view(),
        name="training-run-cancel",
    ),
    path(
        "exports/preferences/",
        exports.PreferenceExportApi.as_view(),
        name="export-preferences",
    ),
    path("exports/", export_jobs.ExportJobListApi.as_view(), name="export-job-list"),
    path(
        "exports/<uuid:job_id>/", export_jobs.ExportJobDetailApi.as_view(), name="export-job-detail"
    ),
    path(
        "exports/<uuid:job_id>/download/",
        export_jobs.ExportJobDownloadApi.as_view(),
        name="export-job-download",
    ),
]

urlpatterns = [
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", api.ApiDocsView.as_view(url_name="schema"), name="api-docs"),
    path("", include("frontend.urls")),
]

handler404 = "frontend.views.not_found"
handler500 = "frontend.views.server_error"
