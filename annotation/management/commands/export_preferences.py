"""``manage.py export_preferences [--round N] [-o FILE]``: TRL preference pairs as JSONL."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotation.exports import FORMATS, jsonl_lines, judgments_for_export, preference_rows
from annotation.models import Judgment, Round


class Command(BaseCommand):
    help = "Export preference pairs (TRL explicit-prompt conversational format) as JSONL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", default="trl", choices=FORMATS)
        parser.add_argument("--round", type=int, action="append", dest="rounds", default=[])
        parser.add_argument("-o", "--output", default="-", help="File to write; '-' is stdout.")

    def handle(self, *args: Any, **options: Any) -> None:
        rounds = options["rounds"]
        known = set(Round.objects.filter(number__in=rounds).values_list("number", flat=True))
        if set(rounds) - known:
            raise CommandError(f"No round number {sorted(set(rounds) - known)[0]}.")
        judgments = Judgment.objects.all()
        if rounds:
            judgments = judgments.filter(task__round__number__in=rounds)
        bar = tqdm(
            judgments_for_export(rounds=rounds or None),
            total=judgments.count(),
            unit="judgment",
            disable=options["output"] == "-" or not sys.stderr.isatty(),
            file=sys.stderr,
        )
        rows = 0
        with contextlib.ExitStack() as stack:
            out = (
                sys.stdout
                if options["output"] == "-"
                else stack.enter_context(open(options["output"], "w", encoding="utf-8"))
            )
            for line in jsonl_lines(preference_rows(bar)):
                out.write(line)
                rows += 1
        self.stderr.write(f"{rows} pairs")
