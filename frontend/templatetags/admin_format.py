"""Template filters of the admin pages: durations people read ("9.0 s", not "8953 ms"), and
Markdown an admin wrote (rubric guidelines) through the same sanitizer as model output."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils.safestring import SafeString, mark_safe

from feedback.platform.rendering import render_untrusted

register = template.Library()


def seconds_text(seconds: float) -> str:
    """9.0 s under a minute; 12 min 5 s under an hour; 2 h 3 min beyond."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def ms_as_seconds(milliseconds: float | None) -> str:
    """A count of milliseconds as a duration: 8953 → "9.0 s"."""
    if milliseconds is None or milliseconds == "":
        return "—"
    return seconds_text(float(milliseconds) / 1000)


@register.filter
def duration(value: timedelta | float | None) -> str:
    """A timedelta (or a number of seconds) as a duration: "9.0 s"."""
    if value is None or value == "":
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return seconds_text(max(0.0, seconds))


@register.filter
def took(start: datetime | None, end: datetime | None) -> str:
    """The time from ``start`` to ``end``: ``{{ gate.created_at|took:gate.finished_at }}``."""
    if start is None or end is None:
        return "—"
    return duration(end - start)


@register.filter
def markdown(text: str | None) -> SafeString:
    """Markdown to sanitized HTML (``feedback.platform.rendering``): raw HTML off, then an
    allow-list."""
    return mark_safe(render_untrusted(text or ""))  # sanitized by render_untrusted
