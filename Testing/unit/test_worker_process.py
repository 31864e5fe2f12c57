"""The child-process runner: progress lines stream while it runs, cancel kills the whole process tree."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from MedAIExtension.runner import WorkerEvent, WorkerProcess, format_event, parse_event

CHILD = r"""
import subprocess, sys, time
from MedAIExtension.runner import WorkerEvent, format_event
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(format_event(WorkerEvent("log", message=f"grandchild {grandchild.pid}")), flush=True)
for i in range(1000):
    print(format_event(WorkerEvent("progress", i / 1000, f"step {i}")), flush=True)
    time.sleep(0.05)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_event_lines_round_trip_and_plain_lines_become_logs() -> None:
    event = WorkerEvent("progress", 0.25, "window 3/12", {"a": 1})
    assert parse_event(format_event(event)) == event
    assert parse_event("some library printed this\n") == WorkerEvent("log", message="some library printed this")


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")
def test_cancel_kills_the_process_tree_and_poll_never_blocks() -> None:
    proc = WorkerProcess([sys.executable, "-c", CHILD])
    proc.start()
    events: list[WorkerEvent] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(e.kind == "progress" for e in events) < 3:
        started = time.monotonic()
        events += proc.poll()
        assert time.monotonic() - started < 0.1
        time.sleep(0.05)
    assert proc.running
    grandchild = int(next(e.message.split()[1] for e in events if e.message.startswith("grandchild")))
    assert _alive(grandchild)
    fractions = [e.fraction for e in events if e.kind == "progress"]
    assert fractions == sorted(fractions) and len(fractions) >= 3
    proc.cancel(grace_seconds=2)
    assert proc.returncode is not None and proc.returncode != 0
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild survived the cancel"
    assert proc.cancelled


def test_worker_reports_a_clear_error_event_and_exit_code(tmp_path: Path) -> None:
    from MedAIExtension.runner import segmentation_worker_args

    proc = WorkerProcess(
        segmentation_worker_args(tmp_path / "missing.nii.gz", "chest-ct-lung-nodule", tmp_path / "out")
    )
    proc.start()
    code = proc.wait(timeout=120)
    events = proc.poll()
    errors = [e for e in events if e.kind == "error"]
    assert code == 2
    assert len(errors) == 1 and "does not exist" in errors[0].message
    assert not (tmp_path / "out").exists()
