"""The widget side of the shared job lifecycle: apply-or-cancel, QTimer polling, progress, finish, errors, and the
parameter node's GUI connection. Slicer application code (Qt), kept out of the Qt-free logic.

A module widget derives from ``JobWidgetMixin`` first (so its ``cleanup``/``enter``/``exit`` are used), then from
``ScriptedLoadableModuleWidget`` and ``VTKObservationMixin``. Its .ui has the widgets named in :data:`JOB_WIDGETS`;
it sets ``self.logic`` (a :class:`~MedAICommonLib.jobs.JobLogic` with ``getParameterNode``), calls
:meth:`JobWidgetMixin.setupJobWidget` in ``setup()``, starts jobs with :meth:`JobWidgetMixin.startOrCancel` and
shows a finished job in :meth:`JobWidgetMixin.onJobDone`; ``_updateGui`` refreshes its own widgets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import qt
import slicer
import vtk

from MedAICommonLib.dependencies import ensureDependencies
from MedAICommonLib.jobs import WorkerJob
from MedAIExtension.errors import MedAIError

__all__ = ["JOB_WIDGETS", "JobWidgetMixin", "showErrors"]

logger = logging.getLogger(__name__)
#: Widgets of the module's .ui that the mixin drives.
JOB_WIDGETS = ("progressBar", "statusLabel")
POLL_MILLISECONDS = 200


@contextlib.contextmanager
def showErrors(what: str, statusLabel: Any = None) -> Iterator[None]:
    """Show an error by its message (a MedAIError names the fix); anything unexpected also goes to the log."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, MedAIError):
            logger.exception("%s failed", what)
        if statusLabel is not None:
            statusLabel.text = f"{what} failed."
        slicer.util.errorDisplay(str(exc), windowTitle=f"MedAI - {what}")


class JobWidgetMixin:
    """Runs one worker job at a time for a module widget and binds its parameter node to the .ui."""

    ui: Any
    logic: Any
    parent: Any
    _job: WorkerJob | None = None
    _jobTitle: str = ""
    _parameterNode: Any = None
    _guiTag: Any = None

    def setupJobWidget(self) -> None:
        """Hide the progress bar, make the poll timer and observe the scene closing (call in ``setup()``)."""
        self._job, self._parameterNode, self._guiTag = None, None, None
        self.ui.progressBar.hide()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MILLISECONDS)
        self._timer.timeout.connect(self._onPoll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    # ---- hooks of the module -------------------------------------------------------------------------------------
    def _updateGui(self, caller: Any = None, event: Any = None) -> None:
        """Refresh the module's widgets from the parameter node and the running job."""

    def defaultParameters(self, node: Any) -> None:
        """Fill empty parameters of a freshly connected parameter node (e.g. the first volume of the scene)."""

    def onJobDone(self, job: WorkerJob) -> None:
        """Show a job that finished with a result."""
        self.ui.statusLabel.text = f"Done in {job.seconds:.1f} s."

    def onJobCancelled(self, job: WorkerJob) -> None:
        """Show a cancelled job."""
        self.ui.statusLabel.text = "Cancelled; nothing was changed."

    # ---- the module's lifecycle ----------------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.cancelJob()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectGui()  # keep the node: a running job still reports into it

    def onSceneStartClose(self, caller: Any = None, event: Any = None) -> None:
        self.cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any = None, event: Any = None) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---- parameter node ------------------------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        """Connect the logic's parameter node and fill its empty parameters (:meth:`defaultParameters`)."""
        self.setParameterNode(self.logic.getParameterNode())
        self.defaultParameters(self._parameterNode)

    def _disconnectGui(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._guiTag = None

    def setParameterNode(self, parameterNode: Any) -> None:
        """Bind the .ui to ``parameterNode`` (None: to nothing)."""
        self._disconnectGui()
        self._parameterNode = parameterNode
        if parameterNode:
            self._guiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    # ---- the job -------------------------------------------------------------------------------------------------
    @property
    def jobRunning(self) -> bool:
        """Whether a job is running (its button shows Cancel)."""
        return self._job is not None

    def showErrors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Context manager: an exception becomes an error dialog and "<what> failed." in the status label."""
        return showErrors(what, self.ui.statusLabel)

    def startOrCancel(self, what: str, start: Callable[[], WorkerJob | None], message: str = "Starting…") -> None:
        """Cancel the running job, or install missing packages and ``start()`` a job and poll it."""
        if self._job is not None:
            self.cancelJob()
            self.ui.statusLabel.text = "Cancelling…"
            return
        with self.showErrors(what):
            if not ensureDependencies():
                self.ui.statusLabel.text = "Python packages are missing; nothing was run."
                return
            job = start()
            if job is None:
                return
            self._job, self._jobTitle = job, what
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = message
            self._timer.start()
        self._updateGui()

    def cancelJob(self) -> None:
        """Kill the running job's process (its poll then finishes it as cancelled)."""
        if self._job is not None:
            self.logic.cancel(self._job)

    def _onPoll(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        try:
            events = self.logic.poll(job)
        except Exception as exc:  # the result cannot be handled: stop the worker and report
            logger.exception("Polling the MedAI worker failed")
            self.logic.cancel(job)
            job.finished, job.error, events = True, f"Lost contact with the {self.logic.processName} process: {exc}", []
        for event in events:
            if event.kind == "progress":
                self.ui.progressBar.value = round(100 * (event.fraction or 0.0))
                self.ui.statusLabel.text = event.message or self.ui.statusLabel.text
            elif event.kind == "log":
                logger.info("worker: %s", event.message)
        if job.finished:
            self._finish(job)

    def _finish(self, job: WorkerJob) -> None:
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        if job.error:
            self.ui.statusLabel.text = f"{self._jobTitle} failed."
            slicer.util.errorDisplay(job.error, windowTitle=f"MedAI - {self._jobTitle}")
        elif job.cancelled:
            self.onJobCancelled(job)
        else:
            with self.showErrors(self._jobTitle):
                self.onJobDone(job)
        self._updateGui()
