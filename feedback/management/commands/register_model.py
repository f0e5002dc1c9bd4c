"""``manage.py register_model SOURCE``: register a model you bring (a local folder, a GGUF file, or
a hub id already in the local Hugging Face cache) as a policy version, and say what its files
hold beside what its name says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback.models import PolicyVersion
from feedback.platform.errors import DomainError
from feedback.serving.guidance import policy_registry_info
from feedback.serving.model_files import model_info_summary
from feedback.serving.policies import policy_register_model

SERVE_ONLY = "yes (GGUF: serve it with a llama.cpp server and the openai backend)"


class Command(BaseCommand):
    help = (
        "Register a model as a candidate policy version: SOURCE is a folder (or .gguf file) under "
        "ARTIFACTS_DIR or a folder of MODEL_DIRS, or a hub id in the local Hugging Face cache."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="A local folder or .gguf file, or a hub id (org/name).")
        parser.add_argument("--name", help="The version's name (default: the hub id or folder).")
        parser.add_argument("--revision", help="A hub branch, tag or commit (hub ids only).")
        parser.add_argument("--adapter", help="A PEFT adapter folder to serve on top of it.")
        parser.add_argument(
            "--activate",
            action="store_true",
            help="Deploy it: a generation worker checks it answers, then it serves.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            policy = policy_register_model(
                source=typed_path(options["source"]), name=options["name"],
                revision=options["revision"],
                adapter=typed_path(options["adapter"]) if options["adapter"] else None,
                activate=options["activate"],
            )  # fmt: skip
        except DomainError as exc:
            raise CommandError(exc.detail) from None
        info = policy_registry_info(policy)
        for line in registration_report(policy, info):
            self.stdout.write(line)
        for line in (info.get("reading") or {}).get("disagreements", []):
            self.stdout.write(self.style.NOTICE(f"name and files disagree: {line}"))
        for warning in info["warnings"]:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))


def typed_path(source: str) -> str:
    """A path typed at a shell means the current directory's; the service (like the API and the
    page) reads a relative path as under ARTIFACTS_DIR. An absolute path is then checked
    against the allowed roots as any other."""
    here = Path(source).expanduser()
    if here.is_absolute() or not here.exists():
        return source
    if (Path(settings.ARTIFACTS_DIR) / source).exists():
        return source  # under the artifacts root too: the platform's meaning wins
    return str(here.resolve())


def registration_report(policy: PolicyVersion, info: dict[str, Any]) -> list[str]:
    """What the command prints: the version, what its name says, what its files say."""
    files = model_info_summary(policy.model_info) or {}
    parsed = info["parsed"]
    name_says = ", ".join(
        str(part)
        for part in (
            f"{parsed['family']} {parsed['version'] or ''}".strip(),
            parsed["size"],
            parsed["variant"],
            parsed["quantization"],
        )
        if part
    )
    deployed = policy.deployments.order_by("-id").first()
    status = policy.status
    if deployed is not None:
        status += f"; deployment {deployed.pk} requested (it switches once the backend answers)"
    lines = [
        f"registered:     {policy.name} (id {policy.pk}): {status}",
        f"weights:        {policy.base_model}"
        + (f" + adapter {policy.adapter_path}" if policy.adapter_path else "")
        + (f" @ {policy.revision}" if policy.revision else ""),
        f"family:         {parsed['family']} (the name says: {name_says})",
        f"parameters:     {files.get('parameters')}",
        f"dtype:          {files.get('dtype')}",
        f"quantization:   {files.get('quantization')}",
        f"chat template:  {files.get('chat_template')}",
        f"context length: {files.get('context_length') or 'unknown'}",
        f"serve-only:     {SERVE_ONLY if files.get('serve_only') else 'no'}",
    ]
    if files.get("adapter"):
        adapter = files["adapter"]
        lines.append(f"adapter:        rank {adapter['r']}, trained on {adapter['base_model']}")
    return lines
