"""What every benchmark shares: QUICK mode, the machine, the median and spread of repeated runs,
and writing ``benchmarks/results/<name>.json`` with a PNG chart beside it.

``benchmarks/results_page.py`` turns those files into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def quick() -> bool:
    """``make bench QUICK=1``: each benchmark's short version."""
    return os.environ.get("QUICK", "") not in ("", "0")


def spread(values: Sequence[float]) -> dict[str, Any]:
    """The median, the range, and every run, so a reader can judge the noise."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def machine() -> dict[str, Any]:
    """Where and from what the numbers came."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "system": platform.platform(terse=True),
    }
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        info["memory_gib"] = round(kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown"
    return info


def results_write(
    name: str,
    payload: dict[str, Any],
    *,
    chart: Callable[[Any], None] | None = None,
    command: str,
) -> Path:
    """Write ``results/<name>.json`` (the payload, the machine, the command, the time) and, with
    ``chart(axes_factory)``, ``results/<name>.png``. Returns the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "command": command,
        "quick": quick(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    if chart is not None:
        import logging

        import matplotlib

        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure = chart(plt)
        figure.tight_layout()
        figure.savefig(path.with_suffix(".png"), dpi=110)
        plt.close(figure)
        print(f"wrote {path} and {path.with_suffix('.png')}")
    else:
        print(f"wrote {path}")
    return path


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
