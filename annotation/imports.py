"""Importing prompts (and completions some model already produced) from JSONL.

One JSON object a line::

    {"prompt": "What is 2+3?"}
    {"messages": [{"role": "user", "content": "Hi"}], "tags": ["chat"], "safety": false,
     "completions": [{"text": "Hello!", "model": "gpt-x"}, {"text": "Go away.", "model": "gpt-x"}]}

Every line is checked first; a bad line is reported with its number and the reason, and then
nothing is written unless ``skip_invalid`` is set. The report names the first ``ERRORS_SHOWN``
bad lines and counts the rest (a 64 MB file of bad lines would otherwise be answered with
millions of entries), and a line's lists are refused by their length before any entry is read.
Importing the same file twice adds nothing: prompts are unique by content hash and a completion
already stored for that prompt and model is recognised by its text.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Max

from feedback.models import Completion, PolicyVersion, Prompt, messages_hash
from feedback.platform.errors import DomainError
from feedback.serving.policies import policy_register

LINE_KEYS = ("messages", "prompt", "completions", "tags", "safety", "source")
ROLES = ("system", "user", "assistant")
TEXT_MAX_CHARS = 100_000
DEFAULT_MODEL = "imported"
# A line's lists, refused by their length: more turns, samples or tags than anyone annotates.
MAX_MESSAGES = 200
MAX_COMPLETIONS = 64
MAX_TAGS = 50
# Bad lines a report (or a refusal) lists; the others are counted.
ERRORS_SHOWN = 20


@dataclass
class ParsedLine:
    line: int
    messages: list[dict[str, str]]
    completions: list[tuple[str, str]]  # (model, text)
    tags: list[str]
    safety: bool
    source: str


@dataclass
class ImportReport:
    lines: int = 0
    prompts_created: int = 0
    prompts_existing: int = 0
    completions_created: int = 0
    lines_skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first ERRORS_SHOWN
    errors_not_shown: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "prompts_created": self.prompts_created,
            "prompts_existing": self.prompts_existing,
            "completions_created": self.completions_created,
            "lines_skipped": self.lines_skipped,
            "errors": self.errors,
            "errors_not_shown": self.errors_not_shown,
        }


class _LineError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _not_too_long(value: list[Any], path: str, limit: int) -> None:
    """A list is refused by its length, with one message, before any entry is read."""
    if len(value) > limit:
        raise _LineError(path, f"At most {limit} entries; got {len(value)}.")


def _text(value: object, path: str, *, max_chars: int = TEXT_MAX_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _LineError(path, "Must be a non-empty string.")
    if len(value) > max_chars:
        raise _LineError(path, f"At most {max_chars} characters, got {len(value)}.")
    if "\x00" in value:
        raise _LineError(path, "Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _LineError(path, "Must be valid Unicode (it holds a lone surrogate).") from None
    return value


def _parse_messages(value: object) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _LineError("messages", "Must be a non-empty list of {role, content}.")
    _not_too_long(value, "messages", MAX_MESSAGES)
    messages = []
    for i, message in enumerate(value):
        path = f"messages.{i}"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise _LineError(path, "Must be an object with exactly 'role' and 'content'.")
        if message["role"] not in ROLES:
            raise _LineError(f"{path}.role", f"Must be one of: {', '.join(ROLES)}.")
        if message["role"] == "system" and i != 0:
            raise _LineError(f"{path}.role", "A system message may only come first.")
        messages.append(
            {"role": message["role"], "content": _text(message["content"], f"{path}.content")}
        )
    if messages[-1]["role"] != "user":
        raise _LineError("messages", "The last message must be the user's turn to answer.")
    return messages


def parse_line(number: int, raw: str, default_source: str) -> ParsedLine:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _LineError("", f"Not valid JSON: {exc.msg} at column {exc.colno}.") from None
    except RecursionError:
        raise _LineError("", "JSON nested too deeply.") from None
    if not isinstance(data, dict):
        raise _LineError("", "Must be a JSON object.")
    unknown = [key for key in data if key not in LINE_KEYS]
    if unknown:
        # The name is echoed back, so its unencodable characters (lone surrogates) are escaped.
        name = unknown[0].encode("utf-8", "backslashreplace").decode("utf-8")
        raise _LineError(name, f"Unknown field; allowed: {', '.join(LINE_KEYS)}.")
    if ("messages" in data) == ("prompt" in data):
        raise _LineError("messages", "Give exactly one of 'messages' or 'prompt'.")
    if "prompt" in data:
        messages = [{"role": "user", "content": _text(data["prompt"], "prompt")}]
    else:
        messages = _parse_messages(data["messages"])

    completions: list[tuple[str, str]] = []
    raw_completions = data.get("completions", [])
    if not isinstance(raw_completions, list):
        raise _LineError("completions", "Must be a list of {text, model}.")
    _not_too_long(raw_completions, "completions", MAX_COMPLETIONS)
    for i, item in enumerate(raw_completions):
        path = f"completions.{i}"
        if not isinstance(item, dict) or not set(item) <= {"text", "model"} or "text" not in item:
            raise _LineError(path, "Must be an object with 'text' and optionally 'model'.")
        model = _text(item.get("model", DEFAULT_MODEL), f"{path}.model", max_chars=200).strip()
        completions.append((model, _text(item["text"], f"{path}.text")))

    tags = data.get("tags", [])
    if not isinstance(tags, list):
        raise _LineError("tags", "Must be a list of strings.")
    _not_too_long(tags, "tags", MAX_TAGS)
    clean_tags = [_text(tag, f"tags.{i}", max_chars=100).strip() for i, tag in enumerate(tags)]
    safety = data.get("safety", False)
    if not isinstance(safety, bool):
        raise _LineError("safety", "Must be true or false.")
    source = _text(data["source"], "source", max_chars=200) if "source" in data else default_source
    return ParsedLine(number, messages, completions, sorted(set(clean_tags)), safety, source)


def prompts_parse(
    lines: Iterable[str | bytes], *, source: str = ""
) -> tuple[list[ParsedLine], list[dict[str, Any]], int, int]:
    """The good lines; the first ERRORS_SHOWN bad ones (line, field, message), and how many were
    bad in all (the rest are only counted, so a file of bad lines costs no memory per line); and
    how many lines there were."""
    parsed: list[ParsedLine] = []
    errors: list[dict[str, Any]] = []
    bad = count = 0
    for number, raw in enumerate(lines, start=1):
        count = number
        try:
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _LineError("", "Not valid UTF-8.") from None
            if raw.strip():
                parsed.append(parse_line(number, raw, source))
        except _LineError as exc:
            bad += 1
            if len(errors) < ERRORS_SHOWN:
                errors.append({"line": number, "field": exc.path, "message": exc.message})
    return parsed, errors, bad, count


def prompts_import(
    *, lines: Iterable[str | bytes], source: str = "", skip_invalid: bool = False
) -> ImportReport:
    """Validate every line, then write all good lines in one transaction.

    Raises ``DomainError`` listing the (first ERRORS_SHOWN) bad lines when any line is bad and
    ``skip_invalid`` is off; nothing is written then.
    """
    parsed, errors, bad, count = prompts_parse(lines, source=source)
    report = ImportReport(
        lines=count, errors=errors, lines_skipped=bad, errors_not_shown=bad - len(errors)
    )
    if errors and not skip_invalid:
        fields = {
            f"line {e['line']}{': ' + e['field'] if e['field'] else ''}": [e["message"]]
            for e in errors
        }
        raise DomainError(
            f"{bad} bad line(s); nothing was imported. First: line {errors[0]['line']}: "
            f"{errors[0]['message']}",
            fields=fields,
            extra={"errors": errors, "errors_not_shown": report.errors_not_shown},
        )
    if not parsed:
        return report
    with transaction.atomic():
        _write(parsed, report)
    return report


def _write(parsed: list[ParsedLine], report: ImportReport) -> None:
    """Store the prompts that are new and, for every prompt, the completions it does not hold
    yet; the counts go into ``report``. The caller's transaction makes it all or nothing."""
    by_hash: dict[str, ParsedLine] = {}
    wanted: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item in parsed:
        digest = messages_hash(item.messages)
        by_hash.setdefault(digest, item)
        for pair in item.completions:
            if pair not in wanted[digest]:
                wanted[digest].append(pair)
    existing, prompt_ids = _prompts_write(by_hash, report)
    models = {model for pairs in wanted.values() for model, _ in pairs}
    policies = {p.name: p.pk for p in PolicyVersion.objects.filter(name__in=models)}
    for name in sorted(models - set(policies)):
        policies[name] = policy_register(name=name, status=PolicyVersion.Status.EXTERNAL).pk
    seen, next_index = _completions_stored(list(existing.values()))

    new_completions = []
    for digest, pairs in wanted.items():
        prompt_id = prompt_ids[digest]
        for model, text in pairs:
            policy_id = policies[model]
            if (prompt_id, policy_id, text) in seen:
                continue
            seen.add((prompt_id, policy_id, text))
            index = next_index[(prompt_id, policy_id)]
            next_index[(prompt_id, policy_id)] = index + 1
            new_completions.append(
                Completion(
                    prompt_id=prompt_id,
                    policy_version_id=policy_id,
                    sample_index=index,
                    text=text,
                    finish_reason="imported",
                )
            )
    Completion.objects.bulk_create(new_completions, batch_size=1000)
    report.completions_created = len(new_completions)


def _prompts_write(
    by_hash: dict[str, ParsedLine], report: ImportReport
) -> tuple[dict[str, int], dict[str, int]]:
    """Create the prompts not stored yet. Returns the ids of those that existed before, and of
    every prompt, by content hash."""
    existing = dict(
        Prompt.objects.filter(content_hash__in=list(by_hash)).values_list("content_hash", "pk")
    )
    new_prompts = [
        Prompt(
            messages=item.messages,
            content_hash=digest,
            source=item.source,
            tags=item.tags,
            safety=item.safety,
        )
        for digest, item in by_hash.items()
        if digest not in existing
    ]
    Prompt.objects.bulk_create(new_prompts, batch_size=1000)
    report.prompts_created = len(new_prompts)
    report.prompts_existing = len(existing)
    prompt_ids = dict(
        Prompt.objects.filter(content_hash__in=list(by_hash)).values_list("content_hash", "pk")
    )
    return existing, prompt_ids


def _completions_stored(
    prompt_ids: list[int],
) -> tuple[set[tuple[int, int, str]], dict[tuple[int, int], int]]:
    """What is stored already for prompts that existed: the (prompt, policy, text) to skip, and
    the next free sample index per (prompt, policy)."""
    seen: set[tuple[int, int, str]] = set()
    next_index: dict[tuple[int, int], int] = defaultdict(int)
    if prompt_ids:
        for prompt_id, policy_id, text in Completion.objects.filter(
            prompt_id__in=prompt_ids
        ).values_list("prompt_id", "policy_version_id", "text"):
            seen.add((prompt_id, policy_id, text))
        for row in (
            Completion.objects.filter(prompt_id__in=prompt_ids)
            .values("prompt_id", "policy_version_id")
            .annotate(top=Max("sample_index"))
        ):
            next_index[(row["prompt_id"], row["policy_version_id"])] = row["top"] + 1
    return seen, next_index
