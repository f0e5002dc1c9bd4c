"""``benchmarks/results_page.py`` rewrites ``docs/benchmarks.md`` after ``make bench``: a new run
replaces a benchmark's numbers, and never what people wrote about it (its notes file), nor the
section of a benchmark that did not run this time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import results_page

EXPORT = {
    "pairs": 1000,
    "at": "2026-12-08T03:00+00:00",
    "machine": {"cpus": 2},
    "results": [
        {
            "format": "trl",
            "file_format": "jsonl",
            "rows": 1000,
            "platform_rows_per_s": {"median": 600.0, "min": 550.0, "max": 650.0},
            "copy_rows_per_s": {"median": 1000.0, "min": 900.0, "max": 1100.0},
            "ratio": 0.6,
            "platform_mb_per_s": 1.5,
            "peak_rss_mb": 90.0,
        }
    ],
}

OLD_PAGE = """# Benchmarks

Old words.

## Export

| old export table |

<!-- notes: docs/benchmarks/notes/export.md, edit it there -->

An old copy of the notes.

## Scaling

| the scaling run of last week |

Run: `python benchmarks/scaling.py`, at last week.
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The page, its charts, its notes and the results, in a folder of their own."""
    docs = tmp_path / "docs"
    (docs / "benchmarks" / "notes").mkdir(parents=True)
    (tmp_path / "results").mkdir()
    monkeypatch.setattr(results_page, "PAGE", docs / "benchmarks.md")
    monkeypatch.setattr(results_page, "CHARTS", docs / "benchmarks")
    monkeypatch.setattr(results_page, "NOTES", docs / "benchmarks" / "notes")
    monkeypatch.setattr(results_page, "RESULTS", tmp_path / "results")
    return tmp_path


def sections(page: str) -> dict[str, str]:
    parts = page.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1].strip() for part in parts}


def test_a_run_replaces_the_numbers_and_keeps_the_notes_and_the_sections_not_run(site: Path):
    page = site / "docs" / "benchmarks.md"
    page.write_text(OLD_PAGE)
    (site / "docs/benchmarks/notes/export.md").write_text("Before and after, by hand.\n")
    (site / "results/export.json").write_text(json.dumps(EXPORT))

    results_page.main()
    written = sections(page.read_text())

    export = written["Export"]
    assert "| old export table |" not in export and "An old copy" not in export
    assert "| trl | jsonl | 1,000 | 600 (550-650) | 1,000 (900-1,100) | 0.60 |" in export
    assert "at least 0.5x COPY's rows/s: **met**" in export
    assert export.endswith(
        "<!-- notes: docs/benchmarks/notes/export.md, edit it there -->\n\n"
        "Before and after, by hand."
    )
    assert written["Scaling"] == (
        "| the scaling run of last week |\n\nRun: `python benchmarks/scaling.py`, at last week."
    )
    assert written["Annotation API"] == "Not run yet."

    # Run again with nothing new: the same page, byte for byte.
    first = page.read_text()
    results_page.main()
    assert page.read_text() == first
