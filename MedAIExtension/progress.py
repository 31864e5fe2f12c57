"""Progress reporting and cooperative cancellation for long-running work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from MedAIExtension.errors import CancelledError

__all__ = ["CancelToken", "Progress", "ProgressCallback", "null_progress"]


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

    def __call__(self, fraction: float, message: str) -> None:
        """Report ``fraction`` (0..1 of this stage) with ``message``; raises if cancelled."""
        self.token.raise_if_cancelled()
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.callback(self.start + (self.end - self.start) * fraction, message)

    def stage(self, start: float, end: float) -> Progress:
        """A reporter for a sub-range [start, end] (fractions of this reporter's range)."""
        span = self.end - self.start
        return Progress(self.callback, self.token, self.start + span * start, self.start + span * end)

    def check(self) -> None:
        """Raise :class:`CancelledError` if cancellation was requested."""
        self.token.raise_if_cancelled()
