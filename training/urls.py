"""The training API's routes (under /api/v1/, namespace "api"): training runs, snapshots, the
promotion gate and automatic rounds."""

from __future__ import annotations

from django.urls import path

from . import api as training_api
from . import snapshot_api

urlpatterns = [
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
]
