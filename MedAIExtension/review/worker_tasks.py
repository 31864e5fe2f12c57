"""The review steps that run in the worker process (``python -m MedAIExtension.worker review ...``).

Metrics and the memorization check take seconds to minutes, so the Slicer module runs them in a child process like
every other long job: the worker opens the project file, runs the same :mod:`~MedAIExtension.review.workflow` step
as ``medai review metrics`` / ``medai review memorization`` (which saves its result in the project) and reports the
result; the module then shows what the project holds. Killing the worker leaves the project as it was: a step
saves its result in one transaction at its end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.review.store import ReviewStore
from MedAIExtension.review.workflow import run_memorization, run_metrics

__all__ = ["REVIEW_TASKS", "run_review_task"]

#: The review steps the worker runs, by name.
REVIEW_TASKS = ("metrics", "memorization")


def run_review_task(
    task: str,
    project: str | os.PathLike[str],
    threshold: float | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
    token: CancelToken | None = None,
) -> dict[str, Any]:
    """Run one review step on the project file ``project`` and return its result (as saved in the project).

    Args:
        task: ``"metrics"`` or ``"memorization"``.
        project: the review project file.
        threshold: similarity above which the memorization check flags a near-copy (None: its default).
        progress: called with (fraction, message).
        token: cancels the step at its next progress report.

    Raises:
        InputError: an unknown task, or the project cannot be opened.
    """
    if task not in REVIEW_TASKS:
        raise InputError(f"Unknown review task {task!r}; choose one of: {', '.join(REVIEW_TASKS)}.")
    with ReviewStore.open(project) as store:
        if task == "metrics":
            return run_metrics(store, progress, token)
        return run_memorization(store, threshold, progress, token)
