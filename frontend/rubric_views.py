"""Admin pages for rubrics: every version, one version as annotators read it, and a form that
makes a new version from an old one (its fields copied in, to change what is needed)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from annotation.rubric_versions import rubric_version_create
from annotation.rubrics import rubric_detail, rubric_list
from feedback.platform.errors import DomainError
from feedback.platform.roles import Role

from .views import role_required

# The form's JSON fields, in the order they are shown; the rest are plain text.
JSON_FIELDS = ("axes", "flags", "strength_labels")


@role_required(Role.ADMIN)
def manage_rubrics(request: HttpRequest) -> HttpResponse:
    """Every version, newest first within each name, with the rounds judged under it."""
    rubrics = list(rubric_list().prefetch_related("rounds"))
    rubrics.sort(key=lambda r: (r.name, -r.version))
    return render(request, "frontend/rubrics.html", {"rubrics": rubrics})


@role_required(Role.ADMIN)
def manage_rubric(request: HttpRequest, rubric_id: int) -> HttpResponse:
    """A rubric as annotators read it: its axes and scale labels, guidelines, flags, strengths."""
    try:
        rubric, rounds, versions = rubric_detail(rubric_id=rubric_id)
    except DomainError:
        raise Http404("No such rubric.") from None
    return render(
        request,
        "frontend/rubric.html",
        {
            "rubric": rubric,
            "rounds": rounds,
            "other_versions": [v for v in versions if v.pk != rubric.pk],
        },
    )


def _form_values(rubric: Any) -> dict[str, str]:
    values = {name: json.dumps(getattr(rubric, name), indent=2) for name in JSON_FIELDS}
    return values | {"name": rubric.name, "guidelines": rubric.guidelines}


def _posted_body(request: HttpRequest, errors: dict[str, list[str]]) -> dict[str, Any]:
    """The posted form as the API's body; a JSON field that does not parse is an error."""
    body: dict[str, Any] = {
        "name": request.POST.get("name", "").strip(),
        "guidelines": request.POST.get("guidelines", "").replace("\r\n", "\n"),
    }
    for name in JSON_FIELDS:
        try:
            body[name] = json.loads(request.POST.get(name) or "[]")
        except json.JSONDecodeError as exc:
            errors[name] = [f"Not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."]
    return body


@role_required(Role.ADMIN)
def manage_rubric_new(request: HttpRequest, rubric_id: int) -> HttpResponse:
    """A new version of rubric ``rubric_id``'s name, starting from that version's fields. The
    errors name the field at fault as the API does (``axes.0.guidelines.3``)."""
    try:
        base, _, versions = rubric_detail(rubric_id=rubric_id)
    except DomainError:
        raise Http404("No such rubric.") from None
    errors: dict[str, list[str]] = {}
    values = _form_values(base)
    if request.method == "POST":
        values = {name: request.POST.get(name, "") for name in values}
        body = _posted_body(request, errors)
        if not errors:
            try:
                made = rubric_version_create(body=body)
            except DomainError as exc:
                errors = exc.fields or {"": [exc.detail]}
            else:
                messages.success(request, f"Made {made.label}; new rounds may be opened under it.")
                return redirect("frontend:manage-rubric", rubric_id=made.pk)
    return render(
        request,
        "frontend/rubric_new.html",
        {
            "base": base,
            "next_version": max(v.version for v in versions) + 1,
            "values": values,
            "errors": sorted(errors.items()),
            "field_errors": {path.split(".")[0]: True for path in errors},
        },
        status=400 if errors else 200,
    )
