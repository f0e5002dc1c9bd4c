"""Calls released together from several threads, each on its own database connection."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.db import connection


def race(count: int, call: Callable[[], Any]) -> Counter[Any]:
    """``count`` threads make one call each, released together by a barrier; how often each
    result came back."""
    results: Counter[Any] = Counter()
    gate = threading.Barrier(count)

    def one() -> None:
        try:
            gate.wait(timeout=60)
            results[call()] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
