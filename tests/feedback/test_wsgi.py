"""The WSGI entry point gunicorn serves: the application loaded, every view imported, and the
objects of startup frozen out of the garbage collector's full collections (feedback/wsgi.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import gc, json, sys
before = gc.get_freeze_count()
import feedback.wsgi
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "views": "annotation.api.tasks" in sys.modules,
                  "app": type(feedback.wsgi.application).__name__}))
"""


def test_the_served_application_is_loaded_with_its_views_and_frozen():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "feedback.settings"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["app"] == "WSGIHandler"
    assert probe["views"], "the views were left to the first request, after the freeze"
    # Django, DRF, the apps and their views: tens of thousands of objects out of reach.
    assert probe["before"] == 0 and probe["frozen"] > 20_000, probe
