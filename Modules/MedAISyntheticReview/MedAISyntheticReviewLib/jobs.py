"""The long review steps (metrics, memorization check) as worker jobs: they run in a child process
(``python -m MedAIExtension.worker review ...``) that the module polls, so Slicer stays responsive and the step's
button turns into Cancel. The worker saves the result in the project file; the module then shows what it holds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MedAICommonLib.dependencies import workerPython
from MedAICommonLib.jobs import JobLogic, ProcessFactory, WorkerJob
from MedAICommonLib.staging import temporaryFolder

from MedAIExtension.errors import InputError
from MedAIExtension.review.worker_tasks import REVIEW_TASKS
from MedAIExtension.runner import review_worker_args
from MedAISyntheticReviewLib.logic import ReviewLogic

__all__ = ["ReviewJob", "ReviewJobLogic"]


@dataclass
class ReviewJob(WorkerJob):
    """One review step run by the worker on a project file (``result``: what it saved in the project)."""

    task: str = ""
    projectPath: Path | None = None


class ReviewJobLogic(JobLogic, ReviewLogic):
    """A review project in the scene (:class:`ReviewLogic`) whose long steps run as worker jobs."""

    processName = resultName = "review"
    keepOutputs = False

    def __init__(self, scene: Any = None, processFactory: ProcessFactory | None = None) -> None:
        JobLogic.__init__(self, scene, processFactory)
        ReviewLogic.__init__(self, self.scene)

    def startTask(self, task: str, threshold: float | None = None) -> ReviewJob:
        """Start ``task`` (``"metrics"`` or ``"memorization"``) on the open project in the worker.

        Raises:
            InputError: no project is open, or an unknown task.
        """
        if task not in REVIEW_TASKS:
            raise InputError(f"Unknown review task {task!r}; choose one of: {', '.join(REVIEW_TASKS)}.")
        path = Path(self.project.path)
        workDir = Path(tempfile.mkdtemp(prefix=f"MedAI-review-{task}-", dir=temporaryFolder()))
        args = review_worker_args(task, path, threshold, python=workerPython())
        return self.startJob(ReviewJob(None, workDir, task, path), args)

    def runTask(self, task: str, threshold: float | None = None, timeoutSeconds: float = 1800) -> ReviewJob:
        """Blocking :meth:`startTask` + poll, for scripts and tests. Raises MedAIError when the step fails."""
        return self.runJob(lambda: self.startTask(task, threshold), timeoutSeconds)
