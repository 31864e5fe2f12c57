"""Running long work in a child process that streams progress as JSON lines and is cancelled by killing it.

The Slicer module starts a :class:`WorkerProcess`, polls it from a QTimer (``poll()`` never blocks) and calls
``cancel()`` to kill the whole process tree. The same class works in any headless program.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.errors import MedAIError

__all__ = [
    "WorkerEvent",
    "WorkerProcess",
    "apply_result_events",
    "explanation_worker_args",
    "format_event",
    "parse_event",
    "review_worker_args",
    "segmentation_worker_args",
    "tracking_worker_args",
]

_PREFIX = "@medai "


@dataclass(frozen=True)
class WorkerEvent:
    """One message from the worker: ``progress``, ``log``, ``result`` or ``error``."""

    kind: str
    fraction: float = 0.0
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def format_event(event: WorkerEvent) -> str:
    """Serialise an event as one line (what the worker prints)."""
    payload = {"kind": event.kind, "fraction": event.fraction, "message": event.message, "data": event.data}
    return _PREFIX + json.dumps(payload, default=str)


def parse_event(line: str) -> WorkerEvent:
    """Parse a worker line; anything that is not an event becomes a ``log`` event."""
    line = line.rstrip("\n")
    if line.startswith(_PREFIX):
        try:
            payload = json.loads(line[len(_PREFIX) :])
            return WorkerEvent(
                str(payload.get("kind", "log")),
                float(payload.get("fraction", 0.0)),
                str(payload.get("message", "")),
                dict(payload.get("data") or {}),
            )
        except (ValueError, TypeError):
            pass
    return WorkerEvent("log", message=line)


def segmentation_worker_args(
    input_path: str | os.PathLike[str],
    model_name: str,
    output_dir: str | os.PathLike[str],
    device: str = "auto",
    formats: str = "nii.gz",
    python: str | None = None,
) -> list[str]:
    """The command line that segments ``input_path`` in a child process."""
    return [
        python or sys.executable,
        "-m",
        "MedAIExtension.worker",
        "segment",
        "--input",
        str(input_path),
        "--model",
        model_name,
        "--output",
        str(output_dir),
        "--device",
        device,
        "--format",
        formats,
    ]


def tracking_worker_args(
    baseline_path: str | os.PathLike[str],
    followup_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    model_name: str | None = "chest-ct-lung-nodule",
    device: str = "auto",
    deformable: bool = False,
    force: bool = False,
    interval_days: float | None = None,
    python: str | None = None,
) -> list[str]:
    """The command line that tracks lung nodules from ``baseline_path`` to ``followup_path`` in a child process.

    Each path is a DICOM series folder or a volume file. ``model_name`` None runs the classical detector alone;
    ``interval_days`` None takes the interval from the DICOM study dates.
    """
    args = [python or sys.executable, "-m", "MedAIExtension.worker", "track"]
    args += ["--baseline", str(baseline_path), "--followup", str(followup_path), "--output", str(output_dir)]
    args += ["--no-model"] if model_name is None else ["--model", model_name]
    args += ["--device", device]
    if deformable:
        args.append("--deformable")
    if force:
        args.append("--force")
    if interval_days is not None:
        args += ["--interval-days", repr(float(interval_days))]
    return args


def explanation_worker_args(request: Any, python: str | None = None) -> list[str]:
    """The command line that runs the explanation ``request`` in a child process.

    Args:
        request: a :class:`~MedAIExtension.explain.request.ExplainRequest`; its options come from
            ``request.to_arguments()``, so the worker rebuilds exactly the same request.
        python: the Python that runs the worker (default: this one).
    """
    return [python or sys.executable, "-m", "MedAIExtension.worker", "explain", *request.to_arguments()]


def review_worker_args(
    task: str,
    project: str | os.PathLike[str],
    threshold: float | None = None,
    python: str | None = None,
) -> list[str]:
    """The command line that runs a review step (``metrics`` or ``memorization``) on a project file in a child
    process (see :mod:`MedAIExtension.review.worker_tasks`); ``threshold`` None keeps the memorization default."""
    args = [python or sys.executable, "-m", "MedAIExtension.worker", "review", task, "--project", str(project)]
    if threshold is not None:
        args += ["--threshold", repr(float(threshold))]
    return args


class WorkerProcess:
    """A child process whose output lines are read on a thread and handed out by :meth:`poll`."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self._process: subprocess.Popen[str] | None = None
        self._events: queue.Queue[WorkerEvent] = queue.Queue()
        self._reader: threading.Thread | None = None
        self.cancelled = False

    def start(self) -> None:
        """Start the child in its own process group (so cancel can kill grandchildren too)."""
        env = dict(os.environ if self.env is None else self.env)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        self._process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
            cwd=self.cwd,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._events.put(parse_event(line))
        self._process.stdout.close()

    def poll(self) -> list[WorkerEvent]:
        """Events received since the last call (never blocks)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    @property
    def running(self) -> bool:
        """Whether the child is still running (or its output is still being read)."""
        if self._process is None:
            return False
        return self._process.poll() is None or bool(self._reader and self._reader.is_alive())

    @property
    def returncode(self) -> int | None:
        """Exit status once finished, else None."""
        return None if self._process is None else self._process.poll()

    @property
    def pid(self) -> int | None:
        """Process id of the child."""
        return None if self._process is None else self._process.pid

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to finish and its output to be read; returns the exit status."""
        assert self._process is not None, "start() first"
        code = self._process.wait(timeout)
        if self._reader:
            self._reader.join(timeout)
        return code

    def cancel(self, grace_seconds: float = 3.0) -> None:
        """Kill the child and everything it started: SIGTERM to the group, SIGKILL after ``grace_seconds``."""
        if self._process is None or self._process.poll() is not None:
            return
        self.cancelled = True
        if os.name == "posix":
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            except ProcessLookupError:
                pass
        else:  # pragma: no cover - Windows
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], capture_output=True, check=False)
            self._process.wait()


def apply_result_events(
    events: Sequence[WorkerEvent],
    job: Any,
    load_result: Callable[[dict[str, Any]], None],
    what: str,
) -> None:
    """Feed a job's new worker events: load the ``result`` event, record ``error`` events in ``job.error``.

    ``job`` needs ``cancelled`` and ``error`` attributes (the Slicer modules' job objects); a cancelled job
    ignores both kinds. A MedAIError while loading becomes the error message as it is (it names the fix); any
    other exception is logged with its traceback and reported as ``"The <what> result could not be loaded"``.
    """
    for event in events:
        if job.cancelled:
            continue
        if event.kind == "result":
            try:
                load_result(event.data)
            except MedAIError as exc:
                job.error = str(exc)
            except Exception as exc:
                logging.getLogger(__name__).exception("Loading the MedAI %s result failed", what)
                job.error = f"The {what} result could not be loaded into Slicer: {exc}"
        elif event.kind == "error":
            job.error = event.message
