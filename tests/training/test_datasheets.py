"""Snapshots with datasheets: any export frozen as a snapshot (researchers too), and every
snapshot's README.md a dataset card that `datasets.load_dataset(folder)` loads, saying what the
data is, the rubric, counts, agreement, annotators, known limits, the filters and how to load it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from annotation.models import Judgment, Rubric

from .test_snapshots import twice_judged_round

pytestmark = pytest.mark.django_db


def snippet_folder(datasheet: str) -> str:
    match = re.search(r"load_dataset\('([^']+)'\)", datasheet)
    assert match, datasheet
    return match.group(1)


def test_a_researcher_freezes_an_export_with_a_datasheet(
    api, researcher, annotator, annotator2, tmp_path
):
    import datasets

    twice_judged_round(api, annotator, annotator2, n=4)
    client = api(researcher)
    response = client.post(
        "/api/v1/snapshots/",
        {"kind": "export", "format": "ultrafeedback", "file_format": "parquet",
         "filters": {"rounds": [1], "min_trust": 0.1}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    snapshot = response.json()
    assert snapshot["kind"] == "export"
    assert snapshot["filters"]["format"] == "ultrafeedback"
    assert snapshot["manifest"]["rows"] == {"train": 8}  # one row per judgment

    sheet = client.get(f"/api/v1/snapshots/{snapshot['id']}/datasheet/")
    assert sheet.status_code == 200 and sheet["Content-Type"].startswith("text/markdown")
    text = sheet.content.decode()
    rubric = Rubric.objects.get()
    for expected in (
        "## What this is", "Cut from 8 judgments of 4 tasks by 2 annotators", "## Rubric",
        rubric.axes[0]["question"], "## Agreement", "## Annotators", "## Known limits",
        '"min_trust": 0.1', "## Load it", snapshot["sha256"],
    ):  # fmt: skip
        assert expected in text, expected
    # One annotator ranks as the oracle does and the other in reverse: alpha on the rankings is
    # negative, and the table says so for round 1.
    assert re.search(r"\| 1 \| 4 \| -", text), text

    # The card's own snippet loads the folder, with no script.
    folder = snippet_folder(text)
    loaded = datasets.load_dataset(folder, cache_dir=str(tmp_path))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 8
    row = loaded["train"][0]
    assert {"instruction", "completions", "annotator"} <= set(row)
    assert {str(row["judgment_id"]) for row in loaded["train"]} == {
        str(pk) for pk in Judgment.objects.values_list("pk", flat=True)
    }


def test_training_snapshots_carry_a_datasheet_that_loads_their_splits(
    api, admin, researcher, annotator, annotator2, tmp_path
):
    import datasets

    twice_judged_round(api, annotator, annotator2, n=6)
    response = api(admin).post(
        "/api/v1/snapshots/", {"kind": "preference", "consensus": "none", "eval_fraction": 0.3},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    snapshot = response.json()
    folder = Path(settings.ARTIFACTS_DIR) / snapshot["path"]
    text = (folder / "README.md").read_text()
    assert text.startswith("---\nconfigs:")
    assert "Tasks judged by several annotators contribute every judgment's pairs" in text
    loaded = datasets.load_dataset(snippet_folder(text), cache_dir=str(tmp_path))
    counts = {split: n for split, n in snapshot["manifest"]["rows"].items() if n}
    assert {split: loaded[split].num_rows for split in loaded} == counts
    assert loaded["train"].column_names == ["prompt", "chosen", "rejected", "margin"]

    # Researchers read datasheets but cut no training snapshots.
    assert api(researcher).get(f"/api/v1/snapshots/{snapshot['id']}/datasheet/").status_code == 200
    refused = api(researcher).post("/api/v1/snapshots/", {"kind": "preference"}, format="json")
    assert refused.status_code == 403
    assert api(annotator).get(f"/api/v1/snapshots/{snapshot['id']}/datasheet/").status_code == 403
    assert api(admin).get("/api/v1/snapshots/99999/datasheet/").status_code == 404


def test_bad_export_snapshots_are_400s_naming_the_field(api, researcher, annotator, annotator2):
    twice_judged_round(api, annotator, annotator2, n=2)
    client = api(researcher)
    for body, field in (
        ({"kind": "export", "format": "nope"}, "format"),
        ({"kind": "export", "filters": {"rounds": [7]}}, "rounds"),
        ({"kind": "export", "filters": {"flags": ["unsafe"]}}, "filters"),  # nothing matches
    ):
        response = client.post("/api/v1/snapshots/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in response.json()["fields"], response.json()
    names = client.post(
        "/api/v1/snapshots/", {"kind": "export", "pseudonymous": False}, format="json"
    )
    assert names.status_code == 403
    assert not list((Path(settings.ARTIFACTS_DIR) / "snapshots").glob("*.partial"))
