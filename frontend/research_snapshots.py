"""A dataset snapshot's page: its datasheet (the README.md the snapshot service wrote), or its
manifest when there is none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe

from feedback.platform.rendering import render_untrusted
from feedback.platform.roles import Role
from training.models import DatasetSnapshot
from training.snapshots import snapshot_datasheet_path

from .views import role_required


def _datasheet_file(snapshot: DatasetSnapshot) -> Path | None:
    """The snapshot's README.md, if it is there and its path stays under the artifacts root (a
    snapshot's path is data, not to be trusted with ``..``)."""
    root = Path(settings.ARTIFACTS_DIR).resolve()
    path = snapshot_datasheet_path(snapshot).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _strip_front_matter(text: str) -> str:
    """Drop a leading YAML front-matter block (``---`` … ``---``): it is the dataset card's
    metadata for the Hub, not prose for the page."""
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return text
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            return "".join(lines[i + 1 :])
    return text


def _manifest_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for key, value in manifest.items()
    ]


@role_required(Role.RESEARCHER, Role.ADMIN)
def research_snapshot(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
    readme = _datasheet_file(snapshot)
    datasheet = None
    if readme is not None:
        text = _strip_front_matter(readme.read_text(encoding="utf-8", errors="replace"))
        # The datasheet quotes prompts and answers: rendered like any other untrusted text.
        datasheet = mark_safe(render_untrusted(text))
    return render(
        request,
        "frontend/research_snapshot.html",
        {
            "snapshot": snapshot,
            "datasheet": datasheet,
            "manifest": _manifest_rows(snapshot.manifest),
        },
    )
