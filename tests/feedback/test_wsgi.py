"""The WSGI entry point as gunicorn's worker imports it (``feedback/wsgi.py``): every view is
loaded before the first request, and what that built is out of the garbage collector's sight,
so a full collection walks only what requests leave behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a worker does on start, in a fresh interpreter (freezing is per process), and what a full
# collection then walks.
WORKER = """
import gc, json, sys
import feedback.wsgi
walked = len(gc.get_objects())
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "walked": walked,
    "views": [m in sys.modules for m in ("annotation.api.tasks", "training.api", "frontend.views")],
}))
"""


def test_a_worker_loads_every_view_and_freezes_them_before_its_first_request() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "feedback.settings"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    worker = json.loads(done.stdout.strip().splitlines()[-1])
    assert worker["views"] == [True, True, True]
    # The URL map's modules are over 100,000 objects; a full collection walks only what was
    # made since.
    assert worker["frozen"] > 100_000
    assert worker["walked"] < worker["frozen"] // 20
