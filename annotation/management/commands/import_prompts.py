"""``manage.py import_prompts FILE [--skip-invalid]``: the API's import, from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotation.imports import prompts_import
from feedback.platform.errors import DomainError


class Command(BaseCommand):
    help = "Import prompts (and optional completions) from a JSONL file; '-' reads stdin."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="Import the good lines even if some are bad.",
        )
        parser.add_argument("--source", default="", help="Recorded as each prompt's source.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        with (
            path.open("rb") as handle,
            tqdm(
                total=path.stat().st_size,
                unit="B",
                unit_scale=True,
                desc="reading",
                disable=not self.stderr.isatty() if hasattr(self.stderr, "isatty") else True,
            ) as bar,
        ):

            def lines() -> Any:
                for line in handle:
                    bar.update(len(line))
                    yield line.rstrip(b"\r\n")

            try:
                report = prompts_import(
                    lines=lines(),
                    source=options["source"] or path.name,
                    skip_invalid=options["skip_invalid"],
                )
            except DomainError as exc:
                for error in exc.extra.get("errors", []):
                    where = f" ({error['field']})" if error["field"] else ""
                    self.stderr.write(f"line {error['line']}{where}: {error['message']}")
                if more := exc.extra.get("errors_not_shown"):
                    self.stderr.write(f"… and {more} more bad line(s)")
                raise CommandError(exc.detail) from None
        for error in report.errors:
            self.stderr.write(f"skipped line {error['line']}: {error['message']}")
        if report.errors_not_shown:
            self.stderr.write(f"… and {report.errors_not_shown} more skipped line(s)")
        self.stdout.write(json.dumps({k: v for k, v in report.as_dict().items() if k != "errors"}))
