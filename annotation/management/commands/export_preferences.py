"""``manage.py export_preferences --format trl --out FILE [filters]``: any export, JSONL or
Parquet, with the streamed API's filters; ``--out -`` streams JSONL to stdout;
``--push-to-hub REPO`` pushes it to a Hugging Face dataset repo instead (``datasets``'
``push_to_hub``), failing at once when the Hub is offline."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotation.exports import (
    FILE_FORMATS,
    FORMATS,
    export_filters_parse,
    export_format,
    export_prepare,
    export_source_count,
    export_write,
    file_format_for,
)
from feedback.platform.errors import DomainError
from feedback.platform.hub import hub_push_dataset, hub_push_ready

# Options named after ExportFilters' fields; the repeatable ones collect a list.
FILTER_OPTIONS = (
    "rounds", "policies", "rubric", "min_agreement", "min_trust", "flags", "exclude_flags",
    "axis", "since", "until", "consensus", "weighting", "include_none_acceptable",
)  # fmt: skip


def _command_error(exc: DomainError) -> CommandError:
    reasons = "; ".join(f"{field}: {' '.join(why)}" for field, why in exc.fields.items())
    return CommandError(reasons or exc.detail)


class Command(BaseCommand):
    help = "Export a dataset (any format of annotation.exports.FORMATS) as JSONL or Parquet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", default="trl", choices=list(FORMATS))
        parser.add_argument(
            "-o", "--out", "--output", dest="out", default="-",
            help="File to write ('-', the default, streams JSONL to stdout).",
        )  # fmt: skip
        parser.add_argument(
            "--file-format", choices=FILE_FORMATS, help="Default: from --out's extension."
        )
        parser.add_argument("--round", action="append", dest="rounds", default=[])
        parser.add_argument("--policy", action="append", dest="policies", default=[])
        parser.add_argument("--rubric", help="Rubric label, e.g. 3H@1.")
        parser.add_argument("--min-agreement", help="0..1: tasks whose annotators agree this much.")
        parser.add_argument("--min-trust", help="0..1: annotators with at least this trust.")
        parser.add_argument("--flag", action="append", dest="flags", default=[])
        parser.add_argument("--exclude-flag", action="append", dest="exclude_flags", default=[])
        parser.add_argument("--axis", help="Pairs from this rubric axis's scores.")
        parser.add_argument("--since", help="ISO date or datetime, from (inclusive).")
        parser.add_argument("--until", help="ISO date or datetime, before (exclusive).")
        parser.add_argument("--consensus", help="none (default) or bradley_terry.")
        parser.add_argument("--weighting", help="equal (default) or trust.")
        parser.add_argument(
            "--include-none-acceptable", action="store_true",
            help="Pair formats and ultrafeedback: also what found no answer acceptable.",
        )  # fmt: skip
        parser.add_argument(
            "--push-to-hub", metavar="REPO",
            help="Push the export to this Hugging Face dataset repo (private) instead of "
            "writing --out; a snapshot's page pushes one with its full datasheet.",
        )  # fmt: skip
        parser.add_argument(
            "--names", action="store_true",
            help="Usernames instead of pseudonyms in the annotator columns.",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        fmt, out = options["format"], options["out"]
        given = {name: options[name] for name in FILTER_OPTIONS if options[name] not in (None, [])}
        try:
            if options["push_to_hub"]:
                hub_push_ready(options["push_to_hub"])  # offline: at once, before the export
            spec = export_format(fmt)
            filters = export_filters_parse(given)
            total = export_source_count(fmt=fmt, filters=filters)
            if options["push_to_hub"]:
                return self._push(options["push_to_hub"], fmt, filters, not options["names"])
        except DomainError as exc:
            raise _command_error(exc) from None
        pseudonymous = not options["names"]
        bar = tqdm(
            total=total, unit=spec.reads, file=sys.stderr,
            disable=out == "-" or not sys.stderr.isatty(),
        )  # fmt: skip

        def progress(read: int) -> None:
            bar.update(read - bar.n)

        try:
            if out == "-":
                if options["file_format"] == "parquet":
                    raise CommandError("Parquet cannot be streamed to stdout: give --out FILE.")
                rows = 0
                plan = export_prepare(fmt=fmt, filters=filters, pseudonymous=pseudonymous)
                for batch in plan.batches():
                    self.stdout.write(batch.jsonl().decode(), ending="")
                    rows += len(batch)
                self.stderr.write(f"{rows} {spec.unit}s")
                return
            path = Path(out)
            result = export_write(
                fmt=fmt, file_format=options["file_format"] or file_format_for(path),
                filters=filters, out=path, pseudonymous=pseudonymous, progress=progress,
            )  # fmt: skip
        except DomainError as exc:
            raise _command_error(exc) from None
        finally:
            bar.close()
        self.stdout.write(f"{result.rows} {spec.unit}s written to {path} (sha256 {result.sha256})")

    def _push(self, repo_id: str, fmt: str, filters: Any, pseudonymous: bool) -> None:
        """Write the export to a Parquet file, read it with ``datasets`` and push it, with a
        card saying what it is and the exact filters (the full datasheet, with the rubric and
        agreement, belongs to snapshots: a snapshot's page pushes that one)."""
        from datasets import Dataset

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "train.parquet"
            result = export_write(
                fmt=fmt, file_format="parquet", filters=filters, out=path,
                pseudonymous=pseudonymous,
            )  # fmt: skip
            dataset = Dataset.from_parquet(str(path), keep_in_memory=True)
        spec = export_format(fmt)
        card = "\n".join([
            f"# Feedback Loop export ({fmt})", "", spec.description, "",
            f"{result.rows} {spec.unit}s; sha256 of the exported file `{result.sha256}`; "
            f"annotators {'pseudonymous' if pseudonymous else 'named'}.", "",
            "## Exact filters", "", "```json",
            json.dumps(filters.to_params(), indent=2, sort_keys=True, default=str),
            "```", "",
        ])  # fmt: skip
        url = hub_push_dataset(dataset=dataset, repo_id=repo_id, card_text=card)
        self.stdout.write(f"{result.rows} {spec.unit}s pushed to {url}")
