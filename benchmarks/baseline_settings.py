"""The platform's settings plus the benchmark's baseline routes (``benchmarks/baseline_urls.py``).

Only ``benchmarks/annotation_api.py`` serves with these, so the baseline never exists in a
deployment; everything else (middleware, database, connection reuse) is the platform's own.
"""

from __future__ import annotations

from feedback.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.baseline_urls"
