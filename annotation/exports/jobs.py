"""Export jobs: an export too large for one request is written to a file by a worker.

The request records the job (its format and filters, validated up front so a bad filter is a 400
and not a failed job) and returns 202 with the job's link; the worker streams the export into
``ARTIFACTS_DIR/exports/<id>.<ext>`` (``writers.export_write``, constant memory, renamed into
place only when complete) and reports progress on the row; the file is then downloaded from the
job. A worker that dies mid-export leaves a stale heartbeat: ``export_jobs_recover`` queues the
job again once, and the rerun rewrites the file from the start (an export is a pure function of
the database, so a rerun cannot duplicate anything).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from feedback.platform.outbox import outbox_enqueue
from feedback.platform.signals import export_ready

from ..models import ExportJob
from .filters import export_filters_parse
from .formats import export_format
from .plan import export_source_count
from .writers import export_write, file_format_check

# Progress and heartbeat go to the database at most this often.
PROGRESS_EVERY_S = 1.0


def export_job_create(
    *, fmt: str, file_format: str, filters: dict[str, Any], pseudonymous: bool = True,
    created_by: AbstractBaseUser | None = None,
) -> ExportJob:  # fmt: skip
    """Validate the export and queue it; the worker starts once this transaction commits."""
    export_format(fmt)
    file_format_check(file_format)
    parsed = export_filters_parse(filters)
    with transaction.atomic():
        job = ExportJob.objects.create(
            format=fmt, file_format=file_format, filters=parsed.to_params(),
            pseudonymous=pseudonymous,
            progress_total=export_source_count(fmt=fmt, filters=parsed), created_by=created_by,
        )  # fmt: skip
        _enqueue(job.pk)
    return job


def _enqueue(job_id: Any) -> None:
    outbox_enqueue(task="annotation.tasks.export_job_run", args=[str(job_id)], queue="default")


def export_job_path(job: ExportJob) -> Path:
    return Path(settings.ARTIFACTS_DIR) / job.path


def export_job_run(*, job_id: Any) -> ExportJob:
    """Claim a queued job and write its file. Safe to call twice: only one call claims it."""
    now = timezone.now()
    claimed = ExportJob.objects.filter(pk=job_id, status=ExportJob.Status.QUEUED).update(
        status=ExportJob.Status.RUNNING, started_at=now, heartbeat_at=now,
        attempts=F("attempts") + 1, progress_done=0,
    )  # fmt: skip
    job = ExportJob.objects.get(pk=job_id)
    if not claimed:
        return job
    name = f"exports/{job.pk}.{job.file_format}"
    last = {"write": 0.0}

    def progress(done: int) -> None:
        if time.monotonic() - last["write"] >= PROGRESS_EVERY_S:
            last["write"] = time.monotonic()
            ExportJob.objects.filter(pk=job.pk).update(
                progress_done=done, heartbeat_at=timezone.now()
            )

    try:
        out = Path(settings.ARTIFACTS_DIR) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        result = export_write(
            fmt=job.format, file_format=job.file_format,
            filters=export_filters_parse(job.filters), out=out,
            pseudonymous=job.pseudonymous, progress=progress,
        )  # fmt: skip
    except Exception as error:  # the job records why; the worker stays up for the next one
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.FAILED, error=f"{type(error).__name__}: {error}"[:2000],
            finished_at=timezone.now(),
        )  # fmt: skip
        job.refresh_from_db()
        return job
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.SUCCEEDED, path=name, rows=result.rows,
        size_bytes=result.size_bytes, sha256=result.sha256, progress_done=job.progress_total,
        finished_at=timezone.now(), heartbeat_at=timezone.now(),
    )  # fmt: skip
    # Webhooks subscribed to export.ready hear of it (feedback/platform/webhooks/events.py).
    transaction.on_commit(
        lambda: export_ready.send(sender=ExportJob, export_job_id=job.pk), robust=True
    )
    job.refresh_from_db()
    return job


def export_jobs_recover(*, stale_after_s: int | None = None) -> list[str]:
    """Queue again, once, the running jobs whose worker stopped reporting; fail them the second
    time. Returns the requeued ids."""
    stale_after_s = settings.TRAINING_STALE_SECONDS if stale_after_s is None else stale_after_s
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    requeued = []
    for job in ExportJob.objects.filter(status=ExportJob.Status.RUNNING, heartbeat_at__lt=cutoff):
        running = ExportJob.objects.filter(
            pk=job.pk, status=ExportJob.Status.RUNNING, heartbeat_at__lt=cutoff
        )
        if job.attempts >= 2:
            running.update(
                status=ExportJob.Status.FAILED, finished_at=timezone.now(),
                error=f"Its worker stopped twice (no progress since {job.heartbeat_at:%H:%M:%S}"
                " UTC).",
            )  # fmt: skip
        elif running.update(status=ExportJob.Status.QUEUED):
            requeued.append(str(job.pk))
            _enqueue(job.pk)
    return requeued
