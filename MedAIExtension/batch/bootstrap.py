"""Bootstrap confidence intervals of a mean and of a subgroup's gap to its whole cohort (``scipy.stats.bootstrap``).

Both functions are seeded (the same inputs give the same interval), drop non-finite values (an infinite HD95 of a
missed structure, or a missing value) and say so in the estimate's ``note``, and never fail on tiny or constant
samples: one value has no interval (``low``/``high`` None), and constant data has the degenerate interval at its
value. BCa is used up to 1000 values (percentile above, where BCa's jackknife is slow and the two agree); where BCa
cannot be computed (a degenerate jackknife) the percentile interval is used. An interval over 10,000 values takes
about 0.25 s with 2000 resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from MedAIExtension.errors import InputError

__all__ = ["DEFAULT_RESAMPLES", "Estimate", "finite_values", "gap_ci", "mean_ci"]

DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples per interval unless told otherwise."""

_BATCH_VALUES = 4_000_000
_BCA_MAX = 1000  # above this many values BCa's jackknife costs more than it corrects: percentile intervals


@dataclass(frozen=True)
class Estimate:
    """A mean (or a gap of means) with its bootstrap confidence interval.

    Attributes:
        value: the estimate; None when there are no finite values.
        low, high: the interval's ends; None when it cannot be estimated (fewer than two values).
        n: how many finite values went into it (for a gap: the group's).
        excluded: how many values were dropped because they were not finite (None, NaN, infinite).
        method: ``"BCa"``, ``"percentile"``, ``"exact"`` (constant data) or ``""`` (no interval).
        note: why the interval is missing or special, else empty.
    """

    value: float | None
    low: float | None
    high: float | None
    n: int
    excluded: int = 0
    method: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON/CSV-ready."""
        return asdict(self)

    def excludes(self, point: float = 0.0) -> bool:
        """Whether the interval exists and lies strictly on one side of ``point``."""
        if self.low is None or self.high is None:
            return False
        return self.low > point or self.high < point


def finite_values(values: Iterable[Any]) -> tuple[np.ndarray, int]:
    """The finite values of ``values`` as a float array, and how many others (None, NaN, infinite) were dropped."""
    kept: list[float] = []
    dropped = 0
    for value in values:
        if value is None or isinstance(value, bool):
            dropped += 1
            continue
        number = float(value)
        if math.isfinite(number):
            kept.append(number)
        else:
            dropped += 1
    return np.asarray(kept, dtype=float), dropped


def _check(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise InputError(f"The confidence level {confidence} is not between 0 and 1; give e.g. 0.95.")
    if n_resamples < 100:
        raise InputError(f"{n_resamples} bootstrap resamples are too few for an interval; give at least 100.")


def _interval(
    samples: tuple[np.ndarray, ...], statistic: Any, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float, str]:
    """The bootstrap interval of ``statistic`` over ``samples`` (each resampled on its own): BCa, else percentile."""
    size = max(sample.size for sample in samples)
    batch = max(1, _BATCH_VALUES // size)  # bounds memory: BCa's jackknife holds batch x size values at once
    methods = ("BCa", "percentile") if size <= _BCA_MAX else ("percentile",)
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning / RuntimeWarning when BCa cannot be computed
            result = stats.bootstrap(
                samples,
                statistic,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                vectorized=True,
                batch=batch,
                rng=np.random.default_rng(seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high, method
    return math.nan, math.nan, ""


def _mean(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(sample, axis=axis)


def mean_ci(
    values: Iterable[Any],
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """The mean of ``values`` (non-finite ones dropped) with its bootstrap ``confidence`` interval.

    Raises:
        InputError: ``confidence`` outside (0, 1) or fewer than 100 resamples.
    """
    _check(confidence, n_resamples)
    data, dropped = finite_values(values)
    n = int(data.size)
    if n == 0:
        return Estimate(None, None, None, 0, dropped, "", "no finite values")
    mean = float(data.mean())
    if n == 1:
        return Estimate(mean, None, None, 1, dropped, "", "one value: no interval")
    if np.all(data == data[0]):
        return Estimate(mean, mean, mean, n, dropped, "exact", "all values equal")
    low, high, method = _interval((data,), _mean, confidence, n_resamples, seed)
    if not method:
        return Estimate(mean, None, None, n, dropped, "", "the bootstrap gave no interval")
    return Estimate(mean, low, high, n, dropped, method, "")


def _gap(group: np.ndarray, rest: np.ndarray, axis: int = -1) -> np.ndarray:
    """Group mean minus the mean of group and rest together."""
    total = np.sum(group, axis=axis) + np.sum(rest, axis=axis)
    return np.mean(group, axis=axis) - total / (group.shape[axis] + rest.shape[axis])


def gap_ci(
    group: Iterable[Any],
    rest: Iterable[Any],
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """A group's mean minus the whole cohort's mean (group and ``rest`` together), with its bootstrap interval.

    The group and the rest of the cohort are resampled independently (a stratified bootstrap of the cohort), so
    the interval accounts for the group being part of the cohort it is compared with. A group that is the whole
    cohort has a gap of exactly 0.

    Raises:
        InputError: ``confidence`` outside (0, 1) or fewer than 100 resamples.
    """
    _check(confidence, n_resamples)
    g, dropped = finite_values(group)
    r, _ = finite_values(rest)
    n = int(g.size)
    if n == 0:
        return Estimate(None, None, None, 0, dropped, "", "no finite values in the group")
    value = float(_gap(g, r))
    if r.size == 0:
        return Estimate(value, value, value, n, dropped, "exact", "the group is the whole cohort")
    if n == 1 or r.size == 1:
        return Estimate(value, None, None, n, dropped, "", "one value on a side: no interval")
    if np.all(g == g[0]) and np.all(r == r[0]):
        return Estimate(value, value, value, n, dropped, "exact", "all values equal within group and rest")
    low, high, method = _interval((g, r), _gap, confidence, n_resamples, seed)
    if not method:
        return Estimate(value, None, None, n, dropped, "", "the bootstrap gave no interval")
    return Estimate(value, low, high, n, dropped, method, "")
