"""Fixtures of the annotation tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["in_database", "in_python"])
def hot_path(request, settings):
    """Run the test on each of the two ways a lease and a submit are made: on PostgreSQL one call
    of a database function each (``annotation/lease.py``, ``judgments._judgment_store_fast``),
    and the same steps from Python, which serve SQLite (where both params take them)."""
    settings.HOT_PATH_IN_DATABASE = request.param == "in_database"
    return request.param
