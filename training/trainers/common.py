"""What every trainer shares: the snapshot's splits, progress and cancel hooks, and resuming.

TRL's trainers are Hugging Face ``Trainer``s, so these pieces fit all of them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def snapshot_splits(snapshot_dir: Path, *, drop: tuple[str, ...] = ()) -> Any:
    """The snapshot's train split and, when it has rows, its eval split, as a DatasetDict."""
    from datasets import load_dataset

    files = {"train": str(snapshot_dir / "train.jsonl")}
    if (snapshot_dir / "eval.jsonl").stat().st_size > 0:
        files["eval"] = str(snapshot_dir / "eval.jsonl")
    data = load_dataset("json", data_files=files)
    present = [column for column in drop if column in data["train"].column_names]
    return data.remove_columns(present) if present else data


def progress_callback(
    on_log: Callable[[int, int, dict[str, float]], None], should_stop: Callable[[], bool]
) -> Any:
    """A TrainerCallback that reports each log line and stops at the next step when cancelled."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            on_log(state.global_step, state.max_steps, dict(logs or {}))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if should_stop():
                control.should_training_stop = True

    return Progress()


def quiet(trainer: Any) -> Any:
    """No log lines on stdout (the Trainer prints every log dict when tqdm is off): progress
    goes to the run's row instead, and stdout stays the caller's."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing, or None.

    ``transformers.trainer_utils.get_last_checkpoint`` returns the newest folder even when the
    worker died while writing it. The Trainer writes ``trainer_state.json`` last, so a folder
    without it is incomplete: it is removed, and the one before it is used.
    """
    if not folder.is_dir():
        return None
    found = {}
    for child in folder.iterdir():
        if child.is_dir() and (match := _CHECKPOINT.match(child.name)):
            found[int(match.group(1))] = child
    for step in sorted(found, reverse=True):
        if (found[step] / "trainer_state.json").is_file():
            return str(found[step])
        shutil.rmtree(found[step], ignore_errors=True)
    return None
