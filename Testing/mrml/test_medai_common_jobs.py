"""The job lifecycle shared by the MedAI modules (``MedAICommonLib.jobs``) with real child processes.

Real: the worker (``python -m MedAIExtension.worker``), ``WorkerProcess``, its process group and the files it
leaves. Only Slicer's ScriptedLoadableModuleLogic base class is a stand-in (it exists in the GUI application alone).
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from MedAIExtension.errors import MedAIError
from MedAIExtension.runner import WorkerEvent, WorkerProcess, format_event, review_worker_args
from Testing.mrml.module_import import import_module_code


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``MedAICommonLib.jobs`` imported as Slicer does (with a stand-in for ScriptedLoadableModuleLogic)."""
    return import_module_code(monkeypatch, "MedAICommonLib.jobs")


def _work(tmp_path: Path, name: str = "work") -> Path:
    work = tmp_path / name
    (work / "inputs").mkdir(parents=True)
    (work / "inputs" / "input.nrrd").write_bytes(b"staged")
    return work


def _printing(events: list[WorkerEvent], code: int = 0, sleep: float = 0.0) -> list[str]:
    """A command line that prints ``events`` as the worker does (``sleep`` s apart) and exits with ``code``."""
    lines = [format_event(event) for event in events]
    script = f"import sys, time\nfor line in {lines!r}:\n    print(line, flush=True)\n    time.sleep({sleep})\n"
    return [sys.executable, "-c", script + f"sys.exit({code})"]


def _finish(logic: Any, job: Any, seconds: float = 60) -> list[WorkerEvent]:
    events, deadline = [], time.time() + seconds
    while not job.finished and time.time() < deadline:
        events += logic.poll(job)
        time.sleep(0.02)
    assert job.finished, "the job did not finish"
    return events


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Loading:
    """A logic whose result hook records what it loaded (the modules load nodes into the scene here)."""

    def __init__(self, jobs: types.ModuleType, scene: Any, **kwargs: Any) -> None:
        class Logic(jobs.JobLogic):
            processName, resultName = "test", "test"

            def loadResult(inner, job: Any, data: dict[str, Any]) -> None:
                if data.get("broken"):
                    raise MedAIError("The result folder is damaged: run it again.")
                job.result = {"loaded": data}

        self.logic = Logic(scene, **kwargs)


def test_a_job_runs_to_its_result_keeping_outputs_but_not_inputs(jobs, scene, tmp_path) -> None:
    logic = Loading(jobs, scene).logic
    work = _work(tmp_path)
    (work / "results").mkdir()
    events = [WorkerEvent("progress", 0.5, "half way"), WorkerEvent("result", 1.0, "done", {"answer": 42})]
    job = logic.startJob(jobs.WorkerJob(None, work), _printing(events))
    assert isinstance(job.process, WorkerProcess) and job.startTime > 0

    seen = _finish(logic, job)

    assert [(e.kind, e.message) for e in seen] == [("progress", "half way"), ("result", "done")]
    assert job.resultLoaded and not job.error and not job.cancelled
    assert job.result == {"loaded": {"answer": 42}}
    assert (work / "results").is_dir() and not (work / "inputs").exists()


def test_the_process_factory_is_injectable(jobs, scene, tmp_path) -> None:
    made: list[list[str]] = []

    def factory(args: list[str]) -> WorkerProcess:
        made.append(list(args))
        return WorkerProcess(args)

    logic = Loading(jobs, scene, processFactory=factory).logic
    args = _printing([WorkerEvent("result", data={"n": 1})])
    job = logic.wait(logic.startJob(jobs.WorkerJob(None, _work(tmp_path)), args), timeoutSeconds=60)
    assert made == [args] and job.result == {"loaded": {"n": 1}}


def test_cancel_kills_the_worker_and_its_children_and_removes_the_work_folder(jobs, scene, tmp_path) -> None:
    logic = Loading(jobs, scene).logic
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        f"print({format_event(WorkerEvent('progress', 0.1, 'working'))!r}, flush=True)\n"
        "time.sleep(120)\n"
    )
    job = logic.startJob(jobs.WorkerJob(None, _work(tmp_path)), [sys.executable, "-c", script])
    deadline = time.time() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.02)
    grandchild = int(pid_file.read_text())
    assert _alive(job.process.pid) and _alive(grandchild)

    started = time.time()
    logic.cancel(job)
    _finish(logic, job, 10)

    assert time.time() - started < 10, "cancel must not wait for the work to end"
    assert job.cancelled and not job.error and not job.resultLoaded
    assert job.process.returncode is not None and job.process.returncode != 0
    deadline = time.time() + 5
    while _alive(grandchild) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the worker's own child survived the cancel"
    assert not job.workDir.exists(), "temporary files were left behind"


def test_a_failing_real_worker_gives_its_error_message(jobs, scene, tmp_path) -> None:
    logic = jobs.JobLogic(scene)
    missing = tmp_path / "no-such-project.medai-review"
    job = logic.startJob(jobs.WorkerJob(None, _work(tmp_path)), review_worker_args("metrics", missing))
    _finish(logic, job)
    assert job.finished and not job.resultLoaded and job.process.returncode != 0
    assert "no-such-project.medai-review" in job.error
    assert not job.workDir.exists()
    with pytest.raises(MedAIError, match="no-such-project"):
        logic.runJob(lambda: logic.startJob(jobs.WorkerJob(None, _work(tmp_path, "again")), job.process.args), 60)


@pytest.mark.parametrize(
    ("events", "code", "expected"),
    [
        ([WorkerEvent("log", message="Segmentation fault")], 139, "The test process stopped (exit code 139)"),
        ([WorkerEvent("result", data={"broken": True})], 0, "The result folder is damaged"),
        ([WorkerEvent("error", message="CUDA is not available; use cpu.")], 2, "CUDA is not available; use cpu."),
    ],
    ids=["silent exit", "result not loadable", "error event"],
)
def test_failures_become_the_job_error(jobs, scene, tmp_path, events, code, expected) -> None:
    logic = Loading(jobs, scene).logic
    job = logic.startJob(jobs.WorkerJob(None, _work(tmp_path)), _printing(events, code))
    _finish(logic, job)
    assert job.error.startswith(expected) and not job.resultLoaded and not job.workDir.exists()


def test_wait_cancels_a_job_that_runs_past_its_timeout(jobs, scene, tmp_path) -> None:
    logic = Loading(jobs, scene).logic
    job = logic.startJob(jobs.WorkerJob(None, _work(tmp_path)), [sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.time()
    with pytest.raises(MedAIError, match=r"The test did not finish within 1 s and was cancelled"):
        logic.wait(job, timeoutSeconds=1)
    assert time.time() - started < 15 and job.cancelled and not _alive(job.process.pid)


def test_a_start_that_fails_removes_the_work_folder(jobs, scene, tmp_path) -> None:
    logic = jobs.JobLogic(scene)
    work = _work(tmp_path)
    with pytest.raises(OSError):
        logic.startJob(jobs.WorkerJob(None, work), [str(tmp_path / "no-such-program")])
    assert not work.exists()
