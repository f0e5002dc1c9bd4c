"""ASGI entry point: ``uvicorn feedback.asgi:application`` (the wiring, like wsgi.py)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")

application = get_asgi_application()
