"""Cohort figures over a batch's :class:`StudyRecord` s: cohort means with bootstrap CIs and the subgroup audit.

The audit groups the finished studies by sex, age band, manufacturer, scanner model, slice-thickness band,
reconstruction kernel and contrast (unknown attributes form an ``"unknown"`` group), and for every label and
metric gives each group's mean with its 95 % CI, its gap to the whole cohort's mean with the gap's CI, and a flag:

* ``"too small to judge"`` — fewer than ``min_n`` finite values in the group;
* ``"worse"`` / ``"better"`` — the gap's CI excludes 0 on the bad / good side (lower Dice, IoU, NSD or higher
  HD95 is worse);
* ``"higher"`` / ``"lower"`` — for volumes (no good side), the gap's CI excludes 0;
* ``"no evidence of a difference"`` — otherwise.

Metrics are those of the records (``dice``, ``iou``, ``hd95_mm``, ``nsd`` per label); volumes (``volume_ml``) are
audited when no record has metrics (no references), or always with ``include_volumes=True``. Every row is one
comparison at the chosen confidence: with many rows, some will be flagged by chance (about 1 in 20 at 95 %).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from MedAIExtension.batch.bootstrap import DEFAULT_RESAMPLES, Estimate, gap_ci, mean_ci
from MedAIExtension.batch.records import Acquisition, StudyRecord
from MedAIExtension.errors import InputError

__all__ = [
    "BETTER",
    "GROUPINGS",
    "HIGHER",
    "HIGHER_IS_BETTER",
    "LOWER",
    "NO_EVIDENCE",
    "TOO_SMALL",
    "UNKNOWN",
    "VOLUME",
    "WORSE",
    "CohortMean",
    "SubgroupRow",
    "age_band",
    "audit_subgroups",
    "cohort_means",
    "done_records",
    "metric_names",
    "thickness_band",
]

TOO_SMALL = "too small to judge"
WORSE = "worse"
BETTER = "better"
HIGHER = "higher"
LOWER = "lower"
NO_EVIDENCE = "no evidence of a difference"
UNKNOWN = "unknown"
VOLUME = "volume_ml"

HIGHER_IS_BETTER: dict[str, bool] = {"dice": True, "iou": True, "nsd": True, "hd95_mm": False}
"""Which way is better for each metric the records carry; metrics not listed (volumes) have no good side."""

_METRIC_ORDER = ("dice", "iou", "hd95_mm", "nsd")


def age_band(age: float | None) -> str:
    """``"<40"``, ``"40-59"``, ``"60-74"``, ``">=75"`` (years), or ``"unknown"``."""
    if age is None:
        return UNKNOWN
    if age < 40:
        return "<40"
    if age < 60:
        return "40-59"
    if age < 75:
        return "60-74"
    return ">=75"


def thickness_band(thickness_mm: float | None) -> str:
    """``"<=1.5 mm"``, ``"1.5-3 mm"`` (above 1.5, up to 3), ``">3 mm"``, or ``"unknown"``."""
    if thickness_mm is None:
        return UNKNOWN
    if thickness_mm <= 1.5:
        return "<=1.5 mm"
    if thickness_mm <= 3.0:
        return "1.5-3 mm"
    return ">3 mm"


def _text(value: str | None) -> str:
    return value.strip() if value and value.strip() else UNKNOWN


def _contrast(value: bool | None) -> str:
    return UNKNOWN if value is None else ("with contrast" if value else "without contrast")


GROUPINGS: dict[str, Callable[[Acquisition], str]] = {
    "sex": lambda a: _text(a.sex),
    "age band": lambda a: age_band(a.age_years),
    "manufacturer": lambda a: _text(a.manufacturer),
    "scanner model": lambda a: _text(a.scanner_model),
    "slice thickness": lambda a: thickness_band(a.slice_thickness_mm),
    "kernel": lambda a: _text(a.kernel),
    "contrast": lambda a: _contrast(a.contrast),
}
"""Grouping name -> the group a study's acquisition falls in."""


@dataclass(frozen=True)
class CohortMean:
    """The whole cohort's mean of one metric of one label, with its bootstrap CI (see :class:`Estimate`)."""

    label: str
    metric: str
    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    excluded: int
    note: str

    def to_dict(self) -> dict[str, Any]:
        """CSV-ready."""
        return asdict(self)


@dataclass(frozen=True)
class SubgroupRow:
    """One group of one grouping, for one label and metric: its mean, its gap to the cohort and the flag.

    Attributes:
        grouping, group: e.g. ``"manufacturer"``, ``"B"``.
        label, metric: e.g. ``"liver"``, ``"dice"``.
        n: finite values in the group; excluded: non-finite ones dropped.
        mean, ci_low, ci_high: the group's mean and CI.
        cohort_mean: the whole cohort's mean of the metric and label.
        gap, gap_low, gap_high: group mean minus cohort mean, and its CI.
        flag: see the module docstring.
        note: why an interval is missing or degenerate.
    """

    grouping: str
    group: str
    label: str
    metric: str
    n: int
    excluded: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    cohort_mean: float | None
    gap: float | None
    gap_low: float | None
    gap_high: float | None
    flag: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        """CSV-ready."""
        return asdict(self)


def done_records(records: Iterable[StudyRecord]) -> list[StudyRecord]:
    """The finished studies of ``records``, checked.

    Raises:
        InputError: a record whose status is neither ``"done"`` nor ``"failed"``, or two records with one key.
    """
    seen: set[str] = set()
    done = []
    for record in records:
        if record.status not in ("done", "failed"):
            raise InputError(
                f"Study {record.key} has the status {record.status!r}; a batch record is 'done' or 'failed'. "
                "Re-run the batch to finish it."
            )
        if record.key in seen:
            raise InputError(f"Study {record.key} appears twice in the records; give each study once.")
        seen.add(record.key)
        if record.status == "done":
            done.append(record)
    return done


def metric_names(records: Sequence[StudyRecord], include_volumes: bool | None = None) -> list[tuple[str, str]]:
    """The ``(label, metric)`` pairs found in ``records``, labels in first-seen order.

    ``include_volumes`` None: volumes only when no record carries metrics.
    """
    labels: dict[str, None] = {}
    metrics: dict[str, dict[str, None]] = {}
    for record in records:
        for label, values in record.metrics.items():
            labels.setdefault(label)
            metrics.setdefault(label, {}).update(dict.fromkeys(values))
        for label in record.volumes_ml:
            labels.setdefault(label)
    has_metrics = any(metrics.values())
    volumes = (not has_metrics) if include_volumes is None else include_volumes
    pairs: list[tuple[str, str]] = []
    for label in labels:
        found = metrics.get(label, {})
        ordered = [m for m in _METRIC_ORDER if m in found] + sorted(m for m in found if m not in _METRIC_ORDER)
        pairs.extend((label, m) for m in ordered)
        if volumes and any(label in r.volumes_ml for r in records):
            pairs.append((label, VOLUME))
    return pairs


def _value(record: StudyRecord, label: str, metric: str) -> Any:
    if metric == VOLUME:
        return record.volumes_ml.get(label)
    return record.metrics.get(label, {}).get(metric)


def cohort_means(
    records: Iterable[StudyRecord],
    *,
    include_volumes: bool | None = None,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[CohortMean]:
    """Mean and bootstrap CI of every label's metrics (and volumes, see :func:`metric_names`) over finished studies."""
    done = done_records(records)
    rows = []
    for label, metric in metric_names(done, include_volumes):
        est = mean_ci(
            [_value(r, label, metric) for r in done], confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        rows.append(CohortMean(label, metric, est.n, est.value, est.low, est.high, est.excluded, est.note))
    return rows


def _flag(metric: str, n: int, min_n: int, gap: Estimate) -> str:
    if n < min_n:
        return TOO_SMALL
    if gap.low is None or gap.high is None or not gap.excludes(0.0):
        return NO_EVIDENCE
    above = gap.low > 0.0
    direction = HIGHER_IS_BETTER.get(metric)
    if direction is None:
        return HIGHER if above else LOWER
    return BETTER if above == direction else WORSE


def audit_subgroups(
    records: Iterable[StudyRecord],
    *,
    min_n: int = 5,
    groupings: Sequence[str] | None = None,
    include_volumes: bool | None = None,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[SubgroupRow]:
    """The subgroup audit of the finished studies of ``records`` (see the module docstring for the flags).

    Args:
        records: the batch's records (failed ones are skipped).
        min_n: groups with fewer finite values are "too small to judge" (their figures are still given).
        groupings: names from :data:`GROUPINGS` (default: all).
        include_volumes: audit volumes too (None: only when no record has metrics).
        confidence, n_resamples, seed: of the bootstrap intervals.

    Returns:
        One row per grouping, group (sorted, ``"unknown"`` last), label and metric.

    Raises:
        InputError: an unknown grouping, ``min_n`` below 2, or bad records (see :func:`done_records`).
    """
    if min_n < 2:
        raise InputError(f"The minimum group size {min_n} is below 2; a group needs two studies for an interval.")
    names = list(GROUPINGS) if groupings is None else list(groupings)
    for name in names:
        if name not in GROUPINGS:
            raise InputError(f"Unknown subgroup grouping {name!r}; choose from {', '.join(GROUPINGS)}.")
    done = done_records(records)
    pairs = metric_names(done, include_volumes)
    options: dict[str, Any] = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    whole = {pair: mean_ci([_value(r, *pair) for r in done], **options) for pair in pairs}
    rows = []
    for name in names:
        members: dict[str, list[StudyRecord]] = {}
        for record in done:
            members.setdefault(GROUPINGS[name](record.acquisition), []).append(record)
        for group in sorted(members, key=lambda g: (g == UNKNOWN, g)):
            inside = members[group]
            keys = {r.key for r in inside}
            outside = [r for r in done if r.key not in keys]
            for label, metric in pairs:
                values = [_value(r, label, metric) for r in inside]
                est = mean_ci(values, **options)
                gap = gap_ci(values, [_value(r, label, metric) for r in outside], **options)
                rows.append(
                    SubgroupRow(
                        grouping=name,
                        group=group,
                        label=label,
                        metric=metric,
                        n=est.n,
                        excluded=est.excluded,
                        mean=est.value,
                        ci_low=est.low,
                        ci_high=est.high,
                        cohort_mean=whole[(label, metric)].value,
                        gap=gap.value,
                        gap_low=gap.low,
                        gap_high=gap.high,
                        flag=_flag(metric, est.n, min_n, gap),
                        note="; ".join(dict.fromkeys(n for n in (est.note, gap.note) if n)),
                    )
                )
    return rows
