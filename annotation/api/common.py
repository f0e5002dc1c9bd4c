"""Pieces every annotation route shares: the error shape, strict integers, the rubric."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from rest_framework import serializers
from rest_framework.request import Request

from feedback.platform.errors import error_schema
from feedback.platform.rendering import render_untrusted
from feedback.platform.strict import query_params_strict

from ..models import Rubric

ERROR = error_schema()
# The most completions a task shows (a round's k).
MAX_K = 16


def query_params_checked(request: Request) -> None:
    """Refuse a query string holding NUL: PostgreSQL cannot compare or store it, so it would
    fail deep in a query. (Django has already decoded bad UTF-8 to U+FFFD.) For a view that
    reads its parameters by hand; a ``StrictApiView`` also refuses the ones it does not read."""
    query_params_strict(request, allowed=list(request.query_params))


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: not "5", not 5.0, not true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


@lru_cache(maxsize=32)
def _guidelines_html(guidelines: str) -> str:
    # Every lease carries its rubric: render each version's Markdown once per process.
    return render_untrusted(guidelines)


def rubric_payload(rubric: Rubric) -> dict[str, Any]:
    """What ``RubricSerializer`` gives, built by hand: every lease carries its rubric."""
    return {
        "id": rubric.pk,
        "name": rubric.name,
        "version": rubric.version,
        "label": rubric.label,
        "axes": rubric.axes,
        "flags": rubric.flags,
        "strength_labels": rubric.strength_labels,
        "guidelines": rubric.guidelines,
        "guidelines_html": _guidelines_html(rubric.guidelines),
    }


class RubricSerializer(serializers.ModelSerializer):
    label = serializers.CharField(read_only=True)
    guidelines_html = serializers.SerializerMethodField(
        help_text="The guidelines as sanitized HTML (Markdown)."
    )

    def get_guidelines_html(self, rubric: Rubric) -> str:
        return _guidelines_html(rubric.guidelines)

    class Meta:
        model = Rubric
        fields = [
            "id",
            "name",
            "version",
            "label",
            "axes",
            "flags",
            "strength_labels",
            "guidelines",
            "guidelines_html",
        ]
