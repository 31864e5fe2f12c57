"""Progress.of: one way to accept either a reporter or a plain callback."""

from __future__ import annotations

import pytest

from MedAIExtension.errors import CancelledError
from MedAIExtension.progress import CancelToken, Progress


def test_of_keeps_a_reporter_and_wraps_a_callback() -> None:
    seen: list[tuple[float, str]] = []
    stage = Progress(lambda f, m: seen.append((f, m))).stage(0.5, 1.0)
    assert Progress.of(stage) is stage  # a stage keeps its sub-range
    Progress.of(stage)(0.5, "half of the second half")
    wrapped = Progress.of(lambda f, m: seen.append((f, m)))
    wrapped(0.25, "a quarter")
    assert seen == [(0.75, "half of the second half"), (0.25, "a quarter")]
    Progress.of(None)(1.0, "nobody listens")  # no callback: nothing happens


def test_of_passes_the_cancel_token_to_a_new_reporter() -> None:
    token = CancelToken()
    reporter = Progress.of(print, token)
    token.cancel()
    with pytest.raises(CancelledError):
        reporter(0.1, "too late")
