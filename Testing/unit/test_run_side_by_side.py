"""``run_side_by_side``: independent jobs in threads, one combined progress, errors and cancellation kept."""

from __future__ import annotations

import threading
import time

import pytest

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.progress import CancelToken, Progress, run_side_by_side


def _steps(result: str, steps: int = 5, pause: float = 0.01):
    def job(report: Progress) -> str:
        for step in range(steps + 1):
            report(step / steps, f"step {step}")
            time.sleep(pause)
        return result

    return job


def test_results_in_job_order_and_progress_only_grows() -> None:
    seen: list[tuple[float, str]] = []
    threads: set[str] = set()

    def callback(fraction: float, message: str) -> None:
        seen.append((fraction, message))
        threads.add(threading.current_thread().name)

    results = run_side_by_side([_steps("a", pause=0.02), _steps("b")], Progress(callback), labels=("one", "two"))
    assert results == ["a", "b"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {m.split(":")[0] for _, m in seen} == {"one", "two"}
    assert len(threads) == 2  # the jobs really ran in two threads


def test_a_failing_job_stops_the_other_and_its_error_is_raised() -> None:
    stopped = threading.Event()

    def endless(report: Progress) -> str:
        try:
            while True:
                report(0.1, "working")
                time.sleep(0.005)
        except CancelledError:
            stopped.set()
            raise

    def failing(report: Progress) -> str:
        time.sleep(0.05)
        raise InputError("the follow-up holds no lungs")

    started = time.perf_counter()
    with pytest.raises(InputError, match="no lungs"):
        run_side_by_side([endless, failing], Progress())
    assert stopped.is_set() and time.perf_counter() - started < 5.0


def test_the_first_jobs_error_wins_when_both_fail() -> None:
    def fail(message: str, pause: float):
        def job(report: Progress) -> None:
            time.sleep(pause)
            raise InputError(message)

        return job

    with pytest.raises(InputError, match="baseline"):
        run_side_by_side([fail("baseline", 0.05), fail("follow-up", 0.0)], Progress())


def test_cancelling_the_callers_token_cancels_every_job() -> None:
    token = CancelToken()

    def cancel_soon(report: Progress) -> str:
        report(0.5, "half")
        token.cancel()
        time.sleep(0.02)
        report(0.6, "more")
        return "never"

    with pytest.raises(CancelledError):
        run_side_by_side([cancel_soon, _steps("b", steps=50)], Progress(None, token))


def test_labels_must_match_jobs() -> None:
    with pytest.raises(ValueError):
        run_side_by_side([_steps("a")], Progress(), labels=("one", "two"))
    assert run_side_by_side([], Progress()) == []
