"""The preference export: TRL rows with margins, scores and provenance; filters; roles; flat memory."""

from __future__ import annotations

import json
import re
import tracemalloc
from math import comb
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from annotation.exports import (
    ExportFilters,
    annotator_pseudonym,
    export_prepare,
    export_write,
    records,
)
from annotation.models import Assignment, ComparisonTask, Judgment, TaskCompletion

from ..factories import open_round
from .helpers import lease, submit_url, valid_body

pytestmark = pytest.mark.django_db
URL = "/api/v1/exports/preferences/"


def judge_all(client, *, tie_last=False):
    while (task := lease(client)) is not None:
        response = client.post(
            submit_url(task["assignment"]), valid_body(task, tie_last=tie_last), format="json"
        )
        assert response.status_code == 200


def rows_of(response):
    assert response.status_code == 200, getattr(response, "content", b"")
    assert response["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_export_expands_rankings_into_trl_pairs_with_provenance(api, annotator, researcher):
    round_ = open_round(n=2, k=3, overlap=1)
    judge_all(api(annotator), tie_last=True)
    rows = rows_of(api(researcher).get(URL, {"format": "trl", "round": round_.number}))
    # K=3 with the last two tied: C(3,2) - 1 = 2 pairs per judgment.
    assert len(rows) == 2 * (comb(3, 2) - 1)
    row = rows[0]
    judgment = Judgment.objects.get(pk=row["judgment_id"])
    assert row["prompt"] == judgment.task.prompt.messages
    assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    assert row["margin"] == 0.6667  # "better", best vs the next
    assert row["chosen_scores"] == {"helpful": 7, "honest": 7, "harmless": 7}
    assert row["round"] == round_.number and row["rubric"] == "3H@1"
    assert row["chosen_policy"] == "test-model"
    assert row["annotator"] == annotator_pseudonym(annotator.pk)
    assert re.fullmatch(r"ann_[0-9a-f]{16}", row["annotator"])
    assert annotator.username not in json.dumps(rows)
    assert all(r["chosen_completion_id"] != r["rejected_completion_id"] for r in rows)


def test_round_filter_and_download_name(api, annotator, admin):
    open_round(n=1, overlap=1)
    judge_all(api(annotator))
    response = api(admin).get(URL, {"round": "1"})
    assert response["Content-Disposition"] == 'attachment; filename="preferences-trl-round-1.jsonl"'
    assert len(rows_of(response)) == 3


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        (
            {"format": "csv"},
            {
                "format": [
                    "Must be one of: trl, trl_implicit, hh_rlhf, ultrafeedback, kto, sft, "
                    "judgments."
                ]
            },
        ),
        ({"round": "x"}, {"round": ["'x' is not a round number."]}),
        ({"round": "99"}, {"round": ["No round number 99."]}),
    ],
)
def test_bad_filters_are_field_errors(api, researcher, params, fields):
    response = api(researcher).get(URL, params)
    assert response.status_code == 400
    assert response.json()["fields"] == fields


@pytest.mark.parametrize(("persona", "status"), [("annotator", 403), ("outsider", 403)])
def test_annotators_cannot_export(api, persona, status, request):
    assert api(request.getfixturevalue(persona)).get(URL).status_code == status


def test_export_command_writes_the_same_rows(api, annotator, researcher, tmp_path):
    open_round(n=2, overlap=1)
    judge_all(api(annotator))
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", "--round", "1", "-o", str(out))
    from_api = rows_of(api(researcher).get(URL))
    assert [json.loads(line) for line in out.read_text().splitlines()] == from_api


def bulk_judgments(n_tasks: int) -> None:
    """Write judgments straight to the tables: setup for the memory test, not a code path."""
    round_ = open_round(n=n_tasks, k=3, overlap=1, seed=n_tasks)
    from ..factories import UserFactory

    user = UserFactory()
    now = timezone.now()
    tasks = list(ComparisonTask.objects.filter(round=round_))
    slots: dict[int, list[int]] = {}
    for slot in TaskCompletion.objects.filter(task__round=round_).order_by("position"):
        slots.setdefault(slot.task_id, []).append(slot.completion_id)
    assignments = Assignment.objects.bulk_create(
        [
            Assignment(
                task=t, annotator=user, status="submitted", leased_at=now, lease_expires_at=now
            )
            for t in tasks
        ]
    )
    Judgment.objects.bulk_create(
        [
            Judgment(
                assignment=a,
                task_id=a.task_id,
                annotator=user,
                rubric=round_.rubric,
                ranking=[[cid] for cid in slots[a.task_id]],
                scores={
                    str(cid): {"helpful": 4, "honest": 4, "harmless": 4} for cid in slots[a.task_id]
                },
                strength="better",
                time_spent_ms=1,
                body_sha256="x" * 64,
            )
            for a in assignments
        ],
        batch_size=1000,
    )


def peak_bytes_of_export(tmp_path: Path) -> tuple[int, int]:
    import pyarrow.parquet  # noqa: F401  (imported before tracing: its import is not the export)

    tracemalloc.start()
    rows = 0
    for batch in export_prepare(fmt="trl", filters=ExportFilters()).batches():
        batch.jsonl()  # what the streamed API sends
        rows += len(batch)
    result = export_write(
        fmt="trl", file_format="parquet", filters=ExportFilters(), out=tmp_path / "p.parquet"
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.rows == rows
    return rows, peak


@override_settings(EXPORT_BATCH_ROWS=150)
def test_export_memory_stays_flat_as_the_table_grows(monkeypatch, tmp_path):
    # Judgments are read CHUNK_SIZE at a time and Parquet rows written EXPORT_BATCH_ROWS at a
    # time; both are small here so that a few thousand rows span many chunks and stay quick
    # under tracemalloc.
    monkeypatch.setattr(records, "CHUNK_SIZE", 50)
    bulk_judgments(150)
    rows_small, peak_small = peak_bytes_of_export(tmp_path)
    bulk_judgments(450)
    rows_large, peak_large = peak_bytes_of_export(tmp_path)
    assert (rows_small, rows_large) == (450, 1800)
    # Four times the rows, fetched a chunk at a time: the peak must not grow with them.
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)
