"""Interrupts (SIGINT, SIGTERM, SIGHUP) that unwind like Ctrl-C, so every clean-up runs.

By default SIGTERM (systemd, ``docker stop``, ``timeout``) and SIGHUP (a closed terminal) end a Python process at
once, skipping the ``finally`` blocks that remove staging folders and temporary files. A job process calls
:func:`interrupt_on_termination` first: those signals then raise :class:`Interrupted`, a ``KeyboardInterrupt``,
which unwinds through every clean-up. :func:`deferred_interrupts` holds signals back for the few instructions
that move finished results into place, so an interrupt never leaves half of them behind.

Python runs a signal handler between two bytecodes of the main thread, wherever that thread is. When that is
inside a finaliser (``__del__``, a ``weakref`` callback, a garbage-collection pass during an import), CPython prints
"Exception ignored" and drops the exception: the job would go on and finish as if no signal had come. So the
handler also remembers the signal, and :func:`raise_if_interrupted` — called at every progress report and before
results are moved into place — raises it again while these handlers are installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "TERMINATING_SIGNALS",
    "Interrupted",
    "deferred_interrupts",
    "interrupt_on_termination",
    "raise_if_interrupted",
]

#: Signals that ask a job to stop (Ctrl-C, a service manager, a closed terminal).
TERMINATING_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A terminating signal arrived; ``signum`` says which (exit status ``128 + signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)


#: The terminating signals :func:`_raise_interrupted` received since the handlers were installed (first one first).
_received: list[int] = []


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    _received.append(int(signum))
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` again if a terminating signal arrived while the job's handlers are installed.

    A no-op without such a signal, and once other handlers replaced these (a test restoring its own, the
    block of :func:`deferred_interrupts`), so a stale signal never stops later work.
    """
    if _received and any(signal.getsignal(sig) is _raise_interrupted for sig in TERMINATING_SIGNALS):
        raise Interrupted(_received[0])


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def interrupt_on_termination() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in this (main-thread) process."""
    if not _in_main_thread():
        return
    _received.clear()
    for sig in TERMINATING_SIGNALS:
        signal.signal(sig, _raise_interrupted)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold terminating signals back inside the block; the first one that arrived is raised right after it.

    Outside the main thread (where Python runs no signal handler) this is a plain block.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, remember) for sig in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            handler = previous.get(signal.Signals(pending[0]))
            if callable(handler):
                handler(pending[0], None)
            elif pending[0] == signal.SIGINT:
                raise KeyboardInterrupt
            else:
                signal.raise_signal(pending[0])
