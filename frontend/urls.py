from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import (
    hub,
    manage_views,
    research,
    research_snapshots,
    research_tasks,
    rubric_views,
    training_views,
    views,
    webhooks,
)

app_name = "frontend"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("annotate/", views.workspace, name="workspace"),
    path("demonstrate/", views.demonstrate, name="demonstrate"),
    path("progress/", views.my_progress, name="progress"),
    path("manage/", manage_views.manage, name="manage"),
    path("manage/import/", manage_views.manage_import, name="manage-import"),
    path("manage/rounds/open/", manage_views.manage_round_open, name="manage-round-open"),
    path("manage/rounds/<int:round_id>/", manage_views.manage_round, name="manage-round"),
    path(
        "manage/rounds/<int:round_id>/stop/",
        manage_views.manage_round_stop,
        name="manage-round-stop",
    ),
    path(
        "manage/rounds/<int:round_id>/close/",
        manage_views.manage_round_close,
        name="manage-round-close",
    ),
    path(
        "manage/rounds/<int:round_id>/priority/",
        manage_views.manage_round_priority,
        name="manage-round-priority",
    ),
    path(
        "manage/rounds/<int:round_id>/leaderboard/",
        manage_views.manage_round_leaderboard,
        name="manage-round-leaderboard",
    ),
    path("manage/rubrics/", rubric_views.manage_rubrics, name="manage-rubrics"),
    path("manage/rubrics/<int:rubric_id>/", rubric_views.manage_rubric, name="manage-rubric"),
    path(
        "manage/rubrics/<int:rubric_id>/new/",
        rubric_views.manage_rubric_new,
        name="manage-rubric-new",
    ),
    path("manage/audit/", manage_views.manage_audit, name="manage-audit"),
    path("manage/webhooks/", webhooks.manage_webhooks, name="manage-webhooks"),
    path(
        "manage/webhooks/<int:webhook_id>/<str:action>/",
        webhooks.manage_webhook_action,
        name="manage-webhook-action",
    ),
    path("manage/policies/", training_views.manage_policies, name="manage-policies"),
    path(
        "manage/policies/<int:policy_id>/<str:action>/",
        training_views.manage_policy_action,
        name="manage-policy-action",
    ),
    path("manage/training/", training_views.manage_training, name="manage-training"),
    path(
        "manage/training/compare/",
        training_views.manage_training_compare,
        name="manage-training-compare",
    ),
    path(
        "manage/training/<int:run_id>/",
        training_views.manage_training_run,
        name="manage-training-run",
    ),
    path("research/", research.research, name="research"),
    path("research/tasks/<int:task_id>/", research_tasks.research_task, name="research-task"),
    path(
        "research/tasks/<int:task_id>/gold/",
        research_tasks.research_task_gold,
        name="research-task-gold",
    ),
    path(
        "research/snapshots/<int:snapshot_id>/",
        research_snapshots.research_snapshot,
        name="research-snapshot",
    ),
    path(
        "research/snapshots/<int:snapshot_id>/push/",
        hub.research_snapshot_push,
        name="research-snapshot-push",
    ),
]
