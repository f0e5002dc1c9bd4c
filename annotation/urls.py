"""The annotation API's routes (under /api/v1/, namespace "api"): leasing, submitting and
skipping tasks, one's recent judgments and their corrections, demonstrations, one's own stats,
gold tasks, quality, imports, rounds, exports.

Every view is a ``StrictApiView`` reading its body through a ``StrictSerializer`` (or the strict
judgment validator, or ``body_strict``): a field or query parameter a route does not read is a
400 naming it (``feedback.platform.strict``)."""

from __future__ import annotations

from django.urls import path

from .api import (
    demonstrations,
    export_jobs,
    exports,
    gold,
    imports,
    judgments,
    quality,
    rounds,
    rubrics,
    tasks,
)

urlpatterns = [
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
        "judgments/<uuid:judgment_id>/revise/",
        judgments.JudgmentReviseApi.as_view(),
        name="judgment-revise",
    ),
    path("me/judgments/", judgments.MyJudgmentListApi.as_view(), name="my-judgments"),
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
    path("me/progress/", rounds.MyProgressApi.as_view(), name="me-progress"),
    path("tasks/<int:task_id>/gold/", gold.TaskGoldApi.as_view(), name="task-gold"),
    path("quality/agreement/", quality.AgreementApi.as_view(), name="quality-agreement"),
    path("quality/annotators/", quality.AnnotatorQualityApi.as_view(), name="quality-annotators"),
    path("quality/disagreements/", quality.DisagreementApi.as_view(), name="quality-disagreements"),
    path("prompts/import/", imports.PromptImportApi.as_view(), name="prompt-import"),
    path("rubrics/", rubrics.RubricListApi.as_view(), name="rubric-list"),
    path("rubrics/<int:rubric_id>/", rubrics.RubricDetailApi.as_view(), name="rubric-detail"),
    path("rounds/", rounds.RoundListApi.as_view(), name="round-list"),
    path("rounds/<int:round_id>/", rounds.RoundDetailApi.as_view(), name="round-detail"),
    path("rounds/<int:round_id>/close/", rounds.RoundCloseApi.as_view(), name="round-close"),
    path(
        "rounds/<int:round_id>/leaderboard/",
        rounds.RoundLeaderboardApi.as_view(),
        name="round-leaderboard",
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
