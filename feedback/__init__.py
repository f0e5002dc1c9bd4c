"""Feedback Loop: the project package (settings, URLs, the Celery app) and the core records."""

from __future__ import annotations

from feedback.celery import app as celery_app

__all__ = ["celery_app"]
