"""WSGI entry point (gunicorn feedback.wsgi).

Each worker loads every view now, as its first request would (the URL map imports them), and
then hands what that built to ``gc.freeze()``: about 120,000 objects (1,500 modules, their
functions and classes) that live as long as the process. Python's full garbage collection
otherwise walks all of them each time, 65-90 ms of CPU during which none of the worker's
request threads runs, a few times a minute under load (docs/benchmarks.md, "Annotation API").
Frozen, they are never collected, which is what they would be anyway.
"""

from __future__ import annotations

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")

application = get_wsgi_application()

get_resolver().url_patterns  # noqa: B018 (imports every view, as the first request would)
gc.collect()
gc.freeze()
