"""The shared job widget mixin (``MedAICommonLib.widget``) driving a real job logic and real worker processes.

Qt exists only in the Slicer application, so the GUI is a stand-in: a timer the test fires by hand, widgets that
keep their ``text``/``value``/visibility, and the error dialog recorded instead of shown. Everything else is real:
the MRML scene and Slicer's VTKObservationMixin from slicer-core, the job logic, the child processes.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import slicer
from slicer.util import VTKObservationMixin

from MedAIExtension.errors import InputError
from MedAIExtension.runner import WorkerEvent, format_event
from Testing.mrml.module_import import import_module_code


class Timer:
    """qt.QTimer, fired by the test."""

    def __init__(self) -> None:
        self.active, self.interval, self.slots = False, 0, []
        self.timeout = types.SimpleNamespace(connect=self.slots.append)

    def setInterval(self, milliseconds: int) -> None:
        self.interval = milliseconds

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


class Widget:
    """A label, button or progress bar: what the mixin reads and writes."""

    def __init__(self) -> None:
        self.text, self.value, self.visible = "", 0, True

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False


@pytest.fixture
def gui(monkeypatch: pytest.MonkeyPatch, scene: Any) -> types.SimpleNamespace:
    """``MedAICommonLib.widget`` and ``.jobs`` with the Qt stand-ins; records the error dialogs."""
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=Timer))
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    dialogs: list[tuple[str, str]] = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, windowTitle="": dialogs.append((windowTitle, text)))
    widget_module = import_module_code(monkeypatch, "MedAICommonLib.widget")
    jobs = sys.modules["MedAICommonLib.jobs"]
    monkeypatch.setattr(widget_module, "ensureDependencies", lambda: True)  # pip installs: the application's
    return types.SimpleNamespace(widget=widget_module, jobs=jobs, dialogs=dialogs, scene=scene)


@pytest.fixture
def panels(gui: types.SimpleNamespace) -> Any:
    """The panels a test made; their scene observers are removed when it ends (as Slicer calls cleanup())."""
    made: list[Any] = []
    yield made
    for panel in made:
        panel.cleanup()


def _panel(gui: types.SimpleNamespace, tmp_path: Path, panels: list[Any]) -> Any:
    class Logic(gui.jobs.JobLogic):
        processName = resultName = "test"

    class Panel(gui.widget.JobWidgetMixin, VTKObservationMixin):
        def __init__(self) -> None:
            VTKObservationMixin.__init__(self)
            self.ui = types.SimpleNamespace(progressBar=Widget(), statusLabel=Widget())
            self.logic, self.parent, self.done = Logic(gui.scene), types.SimpleNamespace(isEntered=False), []
            self.setupJobWidget()

        def onJobDone(self, job: Any) -> None:
            self.done.append(job.result)
            super().onJobDone(job)

    panel = Panel()
    panel.work = tmp_path
    panels.append(panel)
    return panel


def _start(panel: Any, args: list[str]) -> Any:
    work = panel.work / f"job-{time.monotonic_ns()}"
    work.mkdir()
    return panel.logic.startJob(sys.modules["MedAICommonLib.jobs"].WorkerJob(None, work), args)


def _run_until_done(panel: Any, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while panel.jobRunning and time.time() < deadline:
        assert panel._timer.active, "a running job must be polled"
        for slot in panel._timer.slots:
            slot()
        time.sleep(0.02)
    assert not panel.jobRunning and not panel._timer.active


def _command(events: list[WorkerEvent], code: int = 0) -> list[str]:
    lines = "\n".join(format_event(event) for event in events)
    return [sys.executable, "-c", f"import sys, time; print({lines!r}, flush=True); time.sleep(0.3); sys.exit({code})"]


def test_apply_runs_the_job_shows_progress_and_finishes(gui, panels, tmp_path) -> None:
    panel = _panel(gui, tmp_path, panels)
    assert not panel.ui.progressBar.visible and panel._timer.interval == gui.widget.POLL_MILLISECONDS
    events = [WorkerEvent("progress", 0.5, "half way"), WorkerEvent("result", 1.0, "done", {"answer": 42})]
    panel.startOrCancel("Test run", lambda: _start(panel, _command(events)), "Starting the test…")
    assert panel.jobRunning and panel.ui.progressBar.visible and panel.ui.statusLabel.text == "Starting the test…"

    _run_until_done(panel)

    assert panel.done == [{"answer": 42}] and panel.ui.progressBar.value == 50
    assert panel.ui.statusLabel.text.startswith("Done in ") and not panel.ui.progressBar.visible
    assert gui.dialogs == []


def test_apply_again_cancels_and_a_cancelled_job_is_not_an_error(gui, panels, tmp_path) -> None:
    panel = _panel(gui, tmp_path, panels)
    panel.startOrCancel("Test run", lambda: _start(panel, [sys.executable, "-c", "import time; time.sleep(60)"]))
    job = panel._job
    started = time.time()
    panel.startOrCancel("Test run", lambda: pytest.fail("a second job must not start while one runs"))
    assert panel.ui.statusLabel.text == "Cancelling…" and job.cancelled
    _run_until_done(panel, 15)
    assert time.time() - started < 15 and job.process.returncode != 0
    assert panel.ui.statusLabel.text == "Cancelled; nothing was changed." and panel.done == [] and gui.dialogs == []


def test_a_failing_worker_and_a_start_that_raises_show_their_message(gui, panels, tmp_path) -> None:
    panel = _panel(gui, tmp_path, panels)
    message = "Model file x.onnx is missing; reinstall the extension."
    panel.startOrCancel("Test run", lambda: _start(panel, _command([WorkerEvent("error", message=message)], 2)))
    _run_until_done(panel)
    assert gui.dialogs == [("MedAI - Test run", message)] and panel.ui.statusLabel.text == "Test run failed."

    def refuse() -> Any:
        raise InputError("Select an input volume that holds an image.")

    panel.startOrCancel("Other run", refuse)
    assert gui.dialogs[-1] == ("MedAI - Other run", "Select an input volume that holds an image.")
    assert not panel.jobRunning and not panel._timer.active and panel.ui.statusLabel.text == "Other run failed."


def test_closing_the_scene_cancels_the_running_job(gui, panels, tmp_path) -> None:
    panel = _panel(gui, tmp_path, panels)
    panel.startOrCancel("Test run", lambda: _start(panel, [sys.executable, "-c", "import time; time.sleep(60)"]))
    job = panel._job
    gui.scene.Clear(0)  # StartCloseEvent: the observer the mixin added cancels the job
    assert job.cancelled
    _run_until_done(panel, 15)
    assert panel.ui.statusLabel.text == "Cancelled; nothing was changed."
