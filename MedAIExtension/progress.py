"""Progress reporting and cooperative cancellation for long-running work."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Protocol, TypeVar

from MedAIExtension.errors import CancelledError
from MedAIExtension.interrupts import raise_if_interrupted

__all__ = ["CancelToken", "Progress", "ProgressCallback", "null_progress", "run_side_by_side"]

T = TypeVar("T")


class ProgressCallback(Protocol):
    """Receives progress as a fraction in [0, 1] and a short human-readable message."""

    def __call__(self, fraction: float, message: str) -> None: ...


def null_progress(fraction: float, message: str) -> None:
    """A progress callback that ignores everything."""


class CancelToken:
    """A thread-safe flag that long-running work polls to stop early.

    Call :meth:`cancel` from any thread; the worker calls :meth:`raise_if_cancelled` at safe points.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running work to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`CancelledError` if cancellation was requested."""
        if self._event.is_set():
            raise CancelledError("Cancelled by the user; no output was written. Run it again to get results.")


class Progress:
    """Maps the progress of one stage onto a sub-range of the overall job and checks cancellation.

    ``Progress(callback, token).stage(0.2, 0.9)`` returns a reporter whose 0..1 maps to 0.2..0.9 overall.
    """

    def __init__(
        self,
        callback: ProgressCallback | Callable[[float, str], None] | None = None,
        token: CancelToken | None = None,
        start: float = 0.0,
        end: float = 1.0,
    ) -> None:
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"progress range must satisfy 0 <= start <= end <= 1, got {start}..{end}")
        self.callback = callback or null_progress
        self.token = token or CancelToken()
        self.start = start
        self.end = end

    @classmethod
    def of(
        cls,
        progress: Progress | ProgressCallback | Callable[[float, str], None] | None,
        token: CancelToken | None = None,
    ) -> Progress:
        """``progress`` itself when it already is a :class:`Progress`, else a new one around the callback."""
        return progress if isinstance(progress, Progress) else cls(progress, token)

    def __call__(self, fraction: float, message: str) -> None:
        """Report ``fraction`` (0..1 of this stage) with ``message``; raises if cancelled or interrupted."""
        raise_if_interrupted()
        self.token.raise_if_cancelled()
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.callback(self.start + (self.end - self.start) * fraction, message)

    def stage(self, start: float, end: float) -> Progress:
        """A reporter for a sub-range [start, end] (fractions of this reporter's range)."""
        span = self.end - self.start
        return Progress(self.callback, self.token, self.start + span * start, self.start + span * end)

    def check(self) -> None:
        """Raise :class:`CancelledError` if cancellation was requested (:class:`Interrupted` if a signal came)."""
        raise_if_interrupted()
        self.token.raise_if_cancelled()


class _LinkedToken(CancelToken):
    """A token that is cancelled when its parent is, or on its own (to stop sibling jobs after one failed)."""

    def __init__(self, parent: CancelToken) -> None:
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        """Whether this token or its parent was cancelled."""
        return self._event.is_set() or self._parent.cancelled

    def raise_if_cancelled(self) -> None:
        """Raise :class:`CancelledError` if this token or its parent was cancelled."""
        self._parent.raise_if_cancelled()
        super().raise_if_cancelled()


def run_side_by_side(
    jobs: Sequence[Callable[[Progress], T]], progress: Progress, labels: Sequence[str] | None = None
) -> list[T]:
    """Run independent jobs in threads at the same time; their results in ``jobs`` order.

    Each job gets its own :class:`Progress`; ``progress`` receives the mean of their fractions (so it only ever
    grows) and each message prefixed with the job's label, one call at a time. NumPy, SciPy, SimpleITK and ONNX
    Runtime release the GIL in their heavy loops, so two image-analysis jobs overlap well even on two cores.

    When a job raises, the others are cancelled at their next progress report and the error is raised once all
    have stopped; if several jobs fail, the first one's error (in ``jobs`` order) is raised. Cancelling
    ``progress``'s token cancels every job.
    """
    if labels is not None and len(labels) != len(jobs):
        raise ValueError(f"{len(labels)} labels for {len(jobs)} jobs")
    if not jobs:
        return []
    lock = threading.Lock()
    fractions = [0.0] * len(jobs)
    token = _LinkedToken(progress.token)

    def reporter(index: int) -> Progress:
        def report(fraction: float, message: str) -> None:
            with lock:
                fractions[index] = max(fractions[index], fraction)
                text = f"{labels[index]}: {message}" if labels is not None else message
                progress(sum(fractions) / len(fractions), text)

        return Progress(report, token)

    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="medai-job") as pool:
        futures = [pool.submit(job, reporter(index)) for index, job in enumerate(jobs)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(future.exception() is not None for future in done):
            token.cancel()  # the siblings stop at their next progress report
        wait(futures)
    errors = [future.exception() for future in futures]
    if any(error is not None for error in errors):
        stopped_by_sibling = not progress.token.cancelled
        real = [e for e in errors if e is not None and not (stopped_by_sibling and isinstance(e, CancelledError))]
        raise (real or [e for e in errors if e is not None])[0]
    return [future.result() for future in futures]
