"""What the GPU script found, printed as it happens and kept as JSON.

A lent GPU machine runs the script once, under a time limit, with whatever libraries it has. So
each part runs on its own: a part that cannot run here is recorded as skipped with the reason, a
part that raises is recorded as failed with its traceback, and the parts after it still run. The
JSON is rewritten after every record, so a run cut off by its time limit still leaves what it
measured. The exit status is 0 only when no check failed and no part raised.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Skipped(Exception):
    """A part that cannot run on this machine; the message says why (and what would fix it)."""


class Outcome:
    def __init__(
        self,
        *,
        budget_s: float,
        paths: list[Path],
        header: dict[str, Any],
        timings_count: bool = True,
    ) -> None:
        self.began = time.monotonic()
        self.budget_s = budget_s
        self.paths = paths
        self.timings_count = timings_count
        self.data: dict[str, Any] = {
            **header,
            "checks": [],
            "skipped": [],
            "failed": [],
            "measurements": {},
            "timing_targets": [],
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def left(self) -> float:
        """Seconds left of the time budget."""
        return self.budget_s - self.elapsed()

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def measure(self, key: str, value: Any) -> None:
        self.data["measurements"][key] = value
        self.save()

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.data["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        self.say(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
        self.save()
        return passed

    def target(self, name: str, met: bool, detail: str) -> None:
        """A timing target: a check on the GPU; on a shared CPU (the smoke test) the figures are
        noise, so they are shown and kept but pass or fail nothing."""
        if self.timings_count:
            self.check(name, met, detail)
            return
        self.data["timing_targets"].append({"name": name, "met": bool(met), "detail": detail})
        self.say(f"INFO  {name} (not a check on CPU): {detail}")
        self.save()

    def skip(self, part: str, reason: str) -> None:
        self.data["skipped"].append({"part": part, "reason": reason})
        self.say(f"SKIP  {part}: {reason}")
        self.save()

    def part(self, name: str, run: Callable[[], Any], *, needs_s: float = 0) -> Any:
        """``run()``'s result; None when it was skipped (``Skipped``, or too little time left
        for ``needs_s`` seconds of work) or raised (recorded as a failure, and the script goes
        on with the next part)."""
        left = self.left()
        if left < needs_s:
            self.skip(name, f"{left:.0f} s left of the time budget; this part needs ~{needs_s:.0f}")
            return None
        self.say(f"---- {name}")
        try:
            return run()
        except Skipped as reason:
            self.skip(name, str(reason))
        except Exception as exc:  # every failure is reported, and the next part still runs
            trace = traceback.format_exc()
            print(trace, flush=True)
            self.data["failed"].append({"part": name, "error": repr(exc), "traceback": trace})
            self.say(f"FAIL  {name} raised {exc!r}")
            self.save()
        return None

    def save(self) -> None:
        self.data["seconds"] = round(self.elapsed(), 1)
        text = json.dumps(self.data, indent=2, default=str)
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def summary(self) -> int:
        """Print what passed, failed and was skipped; the exit status."""
        checks, failed = self.data["checks"], self.data["failed"]
        print("\n==== summary", flush=True)
        for row in checks:
            print(f"{'PASS' if row['passed'] else 'FAIL'}  {row['name']}: {row['detail']}")
        for row in self.data["skipped"]:
            print(f"SKIP  {row['part']}: {row['reason']}")
        for row in failed:
            print(f"ERROR {row['part']}: {row['error']}")
        bad = sum(not row["passed"] for row in checks) + len(failed)
        print(
            f"{len(checks) - sum(not r['passed'] for r in checks)} checks passed, "
            f"{sum(not r['passed'] for r in checks)} failed, {len(failed)} parts raised, "
            f"{len(self.data['skipped'])} skipped, in {self.elapsed():.0f} s",
            flush=True,
        )
        self.save()
        for path in self.paths:
            print(f"results: {path}", flush=True)
        return 1 if bad else 0
