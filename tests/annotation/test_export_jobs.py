"""Export jobs: a researcher queues an export, a real worker writes the file, the job reports
progress and a download link; bad requests are 400s with no job; a job whose worker died is
queued again once and rewritten from the start."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.exports import annotator_pseudonym
from annotation.exports.jobs import export_job_run, export_jobs_recover
from annotation.models import ExportJob, Judgment
from feedback.platform.roles import Role

from ..factories import open_round
from .helpers import lease, submit_url, valid_body


def judge_round(client, *, n: int = 3) -> None:
    open_round(n=n, k=3, overlap=1)
    while (task := lease(client)) is not None:
        assert client.post(
            submit_url(task["assignment"]), valid_body(task), format="json"
        ).status_code in (200, 201)


def wait_done(client, url: str, seconds: float = 600) -> dict:
    """Poll the job until it leaves queued/running (the worker is another process)."""
    deadline = time.monotonic() + seconds
    while True:
        job = client.get(url).json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"the export job did not finish: {job}"
        time.sleep(0.2)


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_worker_writes_the_export_and_the_researcher_downloads_it(
    celery_worker_process, api, researcher, annotator, make_user, admin
):
    import pyarrow.parquet as pq

    judge_round(api(annotator))
    client = api(researcher)
    response = client.post(
        "/api/v1/exports/",
        {"format": "hh_rlhf", "file_format": "parquet", "filters": {"rounds": [1]}},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = response.json()
    assert response["Location"] == job["url"] and job["status"] == "queued"
    assert job["progress_total"] == 3 and job["download"] is None

    done = wait_done(client, job["url"])
    assert done["status"] == "succeeded", done
    assert done["percent"] == 100.0 and done["rows"] == 9  # 3 judgments, C(3,2) pairs each
    download = client.get(done["download"])
    assert download.status_code == 200
    table = pq.read_table(io.BytesIO(b"".join(download.streaming_content)))
    assert table.num_rows == 9
    rows = table.to_pylist()
    assert rows[0]["chosen"].startswith("\n\nHuman: ")
    assert {r["annotator"] for r in rows} == {annotator_pseudonym(annotator.pk)}
    assert {r["judgment_id"] for r in rows} == {
        str(pk) for pk in Judgment.objects.values_list("pk", flat=True)
    }

    # Another researcher cannot see it; an admin can.
    other = make_user(Role.RESEARCHER, username="researcher2")
    assert api(other).get(job["url"]).status_code == 404
    assert api(other).get(done["download"]).status_code == 404
    assert api(admin).get(job["url"]).status_code == 200
    assert [j["id"] for j in client.get("/api/v1/exports/").json()] == [job["id"]]
    assert celery_worker_process.poll() is None


@pytest.mark.django_db
def test_bad_export_requests_are_400s_and_queue_nothing(api, researcher, annotator):
    client = api(researcher)
    cases = [
        ({"format": "nope"}, "format"),
        ({"file_format": "csv"}, "file_format"),
        ({"filters": {"rounds": [42]}}, "rounds"),
        ({"filters": {"min_trust": 2}}, "min_trust"),
        ({"filters": {"colour": "red"}}, "colour"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/exports/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in response.json()["fields"], response.json()
    names = client.post("/api/v1/exports/", {"pseudonymous": False}, format="json")
    assert names.status_code == 403 and "pseudonymous" in names.json()["fields"]
    assert api(annotator).post("/api/v1/exports/", {}, format="json").status_code == 403
    assert not ExportJob.objects.exists()


@pytest.mark.django_db
def test_a_job_whose_worker_died_runs_again_once_from_the_start(settings, tmp_path, annotator, api):
    settings.ARTIFACTS_DIR = tmp_path
    judge_round(api(annotator), n=2)
    long_ago = timezone.now() - timedelta(hours=1)
    job = ExportJob.objects.create(
        format="trl", file_format="jsonl", status=ExportJob.Status.RUNNING, attempts=1,
        heartbeat_at=long_ago, progress_total=2,
    )  # fmt: skip
    # A half-written file from the dead attempt is replaced, not appended to.
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / f"{job.pk}.jsonl.partial").write_text('{"half": ')

    assert export_jobs_recover(stale_after_s=60) == [str(job.pk)]
    job.refresh_from_db()
    assert job.status == ExportJob.Status.QUEUED
    job = export_job_run(job_id=job.pk)
    assert job.status == ExportJob.Status.SUCCEEDED and job.rows == 6 and job.attempts == 2
    lines = (tmp_path / job.path).read_text().splitlines()
    assert len(lines) == 6 and all(line.startswith('{"prompt"') for line in lines)
    assert not (tmp_path / "exports" / f"{job.pk}.jsonl.partial").exists()
    # A second delivery of the same message does nothing.
    assert export_job_run(job_id=job.pk).attempts == 2

    # Dying a second time fails the job, saying why.
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.RUNNING, heartbeat_at=long_ago
    )
    assert export_jobs_recover(stale_after_s=60) == []
    job.refresh_from_db()
    assert job.status == ExportJob.Status.FAILED and "stopped twice" in job.error
