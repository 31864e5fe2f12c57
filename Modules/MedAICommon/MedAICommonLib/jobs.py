"""The job lifecycle shared by the MedAI modules: one long step in a child process, polled, cancellable.

A module's logic derives from :class:`JobLogic` and its job record from :class:`WorkerJob`. The logic builds the
worker's command line and calls :meth:`JobLogic.startJob`; :meth:`JobLogic.poll` hands out the worker's events,
loads the ``result`` event through the module's :meth:`JobLogic.loadResult` hook, records ``error`` events and
marks the job finished when the process ends; :meth:`JobLogic.cancel` kills the process tree; :meth:`JobLogic.run`
is the blocking start + poll of scripts and tests. The process comes from an injectable factory (by default
``MedAIExtension.runner.WorkerProcess``), so tests can run any real command in its place. No widgets, no dialogs.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from MedAIExtension.errors import MedAIError
from MedAIExtension.runner import WorkerEvent, WorkerProcess, apply_result_events

__all__ = ["JobLogic", "ProcessFactory", "WorkerJob", "WorkerProcessLike"]

logger = logging.getLogger(__name__)


class WorkerProcessLike(Protocol):
    """What a job needs of its process (``MedAIExtension.runner.WorkerProcess`` is the real one)."""

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def poll(self) -> list[WorkerEvent]: ...

    def cancel(self) -> None: ...


#: Makes the (not yet started) process of a job from the worker's command line.
ProcessFactory = Callable[[Sequence[str]], WorkerProcessLike]


@dataclass
class WorkerJob:
    """One run of a worker process: the process, its temporary folder and how it ended.

    Modules add their own fields (inputs, the nodes loaded from the result) in a subclass; the fields here are
    keyword-only so those can follow positionally.
    """

    process: Any
    workDir: Path
    error: str = field(default="", kw_only=True)
    cancelled: bool = field(default=False, kw_only=True)
    finished: bool = field(default=False, kw_only=True)
    startTime: float = field(default=0.0, kw_only=True)
    #: The worker's result data (files, counts, warnings) once :meth:`JobLogic.loadResult` accepted it.
    result: dict[str, Any] = field(default_factory=dict, kw_only=True)
    resultLoaded: bool = field(default=False, kw_only=True)

    @property
    def outputDir(self) -> Path:
        """Where the worker writes its result files."""
        return self.workDir / "results"

    @property
    def seconds(self) -> float:
        """Seconds since the job started."""
        return time.time() - self.startTime


class JobLogic(ScriptedLoadableModuleLogic):
    """Start, poll, cancel and run worker jobs; the module loads the result (:meth:`loadResult`).

    Args:
        scene: the MRML scene results go to (default: the application's).
        processFactory: makes a job's process from its command line (default: ``WorkerProcess``).
    """

    #: Names used in messages: "The <processName> process stopped …", "The <resultName> result could not be loaded".
    processName: ClassVar[str] = "worker"
    resultName: ClassVar[str] = "worker"
    #: Whether a successful job keeps its output folder (the inputs folder always goes).
    keepOutputs: ClassVar[bool] = True

    def __init__(self, scene: Any = None, processFactory: ProcessFactory | None = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.processFactory: ProcessFactory = processFactory or WorkerProcess

    # ---- the module's hook ---------------------------------------------------------------------------------------
    def loadResult(self, job: WorkerJob, data: dict[str, Any]) -> None:
        """Load the worker's ``result`` event into the scene (a MedAIError here becomes the job's error)."""
        job.result = dict(data)

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    def startJob(self, job: WorkerJob, args: Sequence[str]) -> WorkerJob:
        """Make ``job``'s process from ``args`` and start it; its work folder goes if that fails."""
        try:
            job.process = self.processFactory(list(args))
            job.startTime = time.time()
            job.process.start()
        except BaseException:
            shutil.rmtree(job.workDir, ignore_errors=True)
            raise
        return job

    def poll(self, job: WorkerJob) -> list[WorkerEvent]:
        """Return the worker's new events; load the result when it comes; mark the job finished when it ends."""
        try:
            events = list(job.process.poll())
        except Exception as exc:  # the worker's output cannot be read: stop it and report
            logger.exception("Polling the MedAI %s process failed", self.processName)
            self.cancel(job)
            job.error, events = f"Lost contact with the {self.processName} process: {exc}", []
        apply_result_events(events, job, lambda data: self._load(job, data), self.resultName)
        if not job.process.running and not job.finished:
            job.finished = True
            if not job.resultLoaded and not job.error and not job.cancelled:
                code = getattr(job.process, "returncode", None)
                job.error = f"The {self.processName} process stopped (exit code {code}) without a result."
            failed = not job.resultLoaded or bool(job.error)
            keep = self.keepOutputs and not failed
            shutil.rmtree(job.workDir / "inputs" if keep else job.workDir, ignore_errors=True)
        return events

    def _load(self, job: WorkerJob, data: dict[str, Any]) -> None:
        self.loadResult(job, data)
        job.resultLoaded = True

    def cancel(self, job: WorkerJob) -> None:
        """Kill the worker (and whatever it started); nothing is loaded and the temporary files go."""
        job.cancelled = True
        job.process.cancel()

    def wait(self, job: WorkerJob, timeoutSeconds: float = 1800, interval: float = 0.1) -> WorkerJob:
        """Poll ``job`` until it ends (blocking, for scripts and tests).

        Raises:
            MedAIError: the job failed (its message), or it did not finish within ``timeoutSeconds`` (then it is
                cancelled).
        """
        while not job.finished:
            self.poll(job)
            if not job.finished and time.time() - job.startTime > timeoutSeconds:
                self.cancel(job)
                self.poll(job)
                raise MedAIError(
                    f"The {self.processName} did not finish within {timeoutSeconds:.0f} s and was cancelled."
                )
            time.sleep(interval)
        if job.error:
            raise MedAIError(job.error)
        return job

    def runJob(self, start: Callable[[], WorkerJob], timeoutSeconds: float = 1800) -> WorkerJob:
        """``start()`` a job and :meth:`wait` for it."""
        return self.wait(start(), timeoutSeconds)
