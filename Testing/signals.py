"""Signal handlers for tests that send real signals to this process."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from MedAIExtension.interrupts import interrupt_on_termination


@contextlib.contextmanager
def job_signal_handlers() -> Iterator[None]:
    """The handlers ``medai`` installs for a job, restored to pytest's own afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interrupt_on_termination()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
