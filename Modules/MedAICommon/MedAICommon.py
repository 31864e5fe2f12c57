"""MedAI Common: a hidden module holding the Slicer-side code the MedAI modules share (``MedAICommonLib``).

The other MedAI modules declare it as a dependency, so Slicer loads it first and ``MedAICommonLib`` (dependency
installer, input staging, DICOM database store, the worker-job logic base and widget mixin) is importable to them.
"""

from __future__ import annotations

import time
from typing import Any

from MedAICommonLib import MedAIError
from MedAICommonLib.jobs import JobLogic, WorkerJob
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class MedAICommon(ScriptedLoadableModule):
    """Module metadata: hidden, it has no panel of its own."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Common"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = []
        self.parent.hidden = True
        self.parent.contributors = ["MedAI contributors"]
        self.parent.helpText = "Shared code of the MedAI modules (no user interface)."
        self.parent.acknowledgementText = "Built on 3D Slicer."


class MedAICommonWidget(ScriptedLoadableModuleWidget):
    """No panel: the module is hidden."""


class MedAICommonLogic(ScriptedLoadableModuleLogic):
    """Nothing of its own: the shared logic is ``MedAICommonLib.jobs.JobLogic``."""


class MedAICommonTest(ScriptedLoadableModuleTest):
    """Runs real child processes through the job logic inside Slicer: a result, a failure and a cancel."""

    def runTest(self) -> None:
        self.test_ResultFailureAndCancel()

    def test_ResultFailureAndCancel(self) -> None:
        import sys
        import tempfile
        from pathlib import Path

        from MedAIExtension.runner import WorkerEvent, format_event

        def job(code: str) -> WorkerJob:
            return logic.startJob(WorkerJob(None, Path(tempfile.mkdtemp())), [sys.executable, "-c", code])

        logic = JobLogic()
        line = format_event(WorkerEvent("result", 1.0, "done", {"answer": 42}))
        done = logic.wait(job(f"print({line!r})"), timeoutSeconds=60)
        self.assertEqual(done.result, {"answer": 42})
        with self.assertRaises(MedAIError):
            logic.wait(job("import sys; sys.exit(3)"), timeoutSeconds=60)
        slow = job("import time; time.sleep(60)")
        logic.cancel(slow)
        while not slow.finished:
            logic.poll(slow)
            time.sleep(0.05)
        self.assertTrue(slow.cancelled and not slow.error and not slow.workDir.exists())
