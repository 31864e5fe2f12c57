"""A terminating signal whose exception a finaliser swallowed still stops the job (real signals, this process).

CPython runs a Python signal handler between bytecodes of the main thread; inside a ``__del__`` it prints
"Exception ignored" and drops the exception. ``medai segment`` once finished and exited 0 after such a SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from MedAIExtension.atomic import staged_output
from MedAIExtension.interrupts import Interrupted, raise_if_interrupted
from MedAIExtension.progress import Progress
from Testing.signals import job_signal_handlers


class _SignalledWhileFinalised:
    """An object whose finaliser receives SIGTERM: the handler's exception is reported and dropped by CPython."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # bytecodes for the interpreter to run the pending handler in here
            pass


def _swallow_a_sigterm() -> list[BaseException | None]:
    """SIGTERM inside a finaliser; returns the exceptions CPython dropped ("Exception ignored in ...")."""
    dropped: list[BaseException | None] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: dropped.append(unraisable.exc_value)
    try:
        _SignalledWhileFinalised()  # created and finalised at once; the exception never leaves __del__
    finally:
        sys.unraisablehook = previous
    return dropped


def test_a_swallowed_signal_is_raised_at_the_next_progress_report() -> None:
    with job_signal_handlers():
        dropped = _swallow_a_sigterm()  # no exception here: the signal was lost to the finaliser ...
        assert [type(e) for e in dropped] == [Interrupted]
        with pytest.raises(Interrupted) as caught:
            Progress(None)(0.5, "next window")  # ... and comes back at the job's next progress report
    assert caught.value.signum == signal.SIGTERM


def test_a_swallowed_signal_stops_results_from_being_committed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with job_signal_handlers(), pytest.raises(Interrupted), staged_output(out) as staged:
        (staged.folder / "labels.nrrd").write_text("result")
        _swallow_a_sigterm()
        staged.commit(["labels.nrrd"])
    assert not out.exists()


def test_a_stale_signal_does_not_stop_later_work() -> None:
    """Once other handlers are installed (or the job's are installed anew), an old signal is forgotten."""
    with job_signal_handlers():
        _swallow_a_sigterm()
    raise_if_interrupted()  # pytest's handlers again: nothing raised
    Progress(None)(1.0, "done")
    with job_signal_handlers():
        raise_if_interrupted()  # a new job: nothing pending
