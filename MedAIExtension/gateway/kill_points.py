"""Named points where tests kill the gateway with SIGKILL, to prove a restart resumes without loss or duplicates.

Only tests and the soak benchmark set ``MEDAI_TEST_KILL_AT``; without it :func:`kill_point` does nothing. The
value is ``<point>`` or ``<point>@<n>`` (die the n-th time the point is reached in this process):

* ``retrieve`` — the input series is on disk, the pipeline has not run;
* ``run`` — the pipeline wrote its result files, the journal does not list them yet;
* ``commit`` — the journal committed the results, nothing is stored yet;
* ``store`` — the first result series is in the PACS, the others are not.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["KILL_ENV_VAR", "KILL_POINTS", "kill_point"]

#: The environment variable that arms a kill point (tests only).
KILL_ENV_VAR = "MEDAI_TEST_KILL_AT"
#: The points the gateway passes, in the order a job passes them.
KILL_POINTS = ("retrieve", "run", "commit", "store")

_reached: dict[str, int] = {}
_lock = threading.Lock()


def kill_point(name: str) -> None:
    """SIGKILL this process if ``MEDAI_TEST_KILL_AT`` names ``name`` (and this is the n-th time it is reached)."""
    armed = os.environ.get(KILL_ENV_VAR)
    if not armed:
        return
    point, _, nth = armed.partition("@")
    if point != name:
        return
    with _lock:
        _reached[name] = _reached.get(name, 0) + 1
        count = _reached[name]
    if count >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
