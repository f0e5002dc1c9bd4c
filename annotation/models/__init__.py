"""Records of the annotation instrument (DESIGN §3).

Business rules live in ``services``; the models hold fields and the constraints the database can
enforce on its own, so that no code path, however wrong, can over-assign a task or store two
current judgments for one assignment.

The models are in two modules: ``rounds`` (the instrument: rubric, round, task,
the completions a task shows) and ``work`` (assignments, judgments, demonstrations, export jobs).
"""

from .rounds import ComparisonTask, Round, Rubric, TaskCompletion
from .work import (
    Assignment,
    CurrentJudgments,
    Demonstration,
    DemonstrationSkip,
    ExportJob,
    Judgment,
)

__all__ = [
    "Assignment",
    "ComparisonTask",
    "CurrentJudgments",
    "Demonstration",
    "DemonstrationSkip",
    "ExportJob",
    "Judgment",
    "Round",
    "Rubric",
    "TaskCompletion",
]
