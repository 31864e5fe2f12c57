"""What a radiologist reads about each tracked nodule, beside its measurements: where it is, whether it is a mass,
its Lung-RADS category with the reason and the management it calls for, the NELSON category of a solid nodule,
how it changed (in words), and whether its size sits on a category threshold.

:func:`nodule_reading` gives one :class:`NoduleReading` per nodule and study; :func:`report_rows` adds their
columns to :meth:`TrackingResult.rows`, the table written to tracking.csv, tracking.json and report.html; the SR
writer in :mod:`MedAIExtension.tracking.outputs` reads the same readings, so every output says the same thing.

Conventions (../shared/DOMAIN.md, "Reporting a nodule the way radiologists expect"):

* diameters to 0.1 mm, volumes to whole mm³ where they are shown;
* a lesion with a mean diameter above 30 mm is a **mass**: reported as such and never given a doubling time;
* growth is stated only when the change exceeds the measurement uncertainty (the nodule's ``trend``; without
  one, NELSON's 25 % volume change); otherwise, or without a doubling time, the nodule is "stable within
  measurement error";
* a size is *borderline* when a change within 1.96 measurement standard deviations of its mean diameter (0.5 mm
  when the uncertainty was not measured) gives another Lung-RADS category.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.tracking.location import NoduleLocation, NoduleLocator
from MedAIExtension.tracking.lungrads import (
    LungRadsCategory,
    LungRadsResult,
)
from MedAIExtension.tracking.recommendations import (
    NelsonCategory,
    NelsonResult,
    borderline_note,
    management_recommendation,
    nelson_category,
)
from MedAIExtension.tracking.repeatability import Z_95, MeasurementSpread
from MedAIExtension.tracking.results import StudyResult, TimepointResult, TrackedNodule, TrackingResult
from MedAIExtension.tracking.types import Finding, NoduleTrend

__all__ = [
    "MASS_DIAMETER_MM",
    "NELSON_GROWTH_PERCENT",
    "STABLE_WORDING",
    "NoduleReading",
    "Readings",
    "exam_management",
    "growth_wording",
    "is_mass",
    "nodule_reading",
    "report_readings",
    "report_rows",
]


#: A lesion whose mean diameter exceeds this is a mass, not a nodule (Fleischner Society glossary).
MASS_DIAMETER_MM = 30.0
#: The words for a change that does not exceed the measurement uncertainty.
STABLE_WORDING = "stable within measurement error"
#: Without a measured uncertainty, a volume change below this (%) is within measurement error (NELSON's growth).
NELSON_GROWTH_PERCENT = 25.0
#: Measurement margin for the borderline check when the nodule's uncertainty was not measured (mm).
DEFAULT_MARGIN_MM = 0.5
#: Largest margin the borderline check uses (mm): an unstable measurement has an infinite uncertainty.
_MAX_MARGIN_MM = 3.0
#: NELSON's class for each Lung-RADS category, to say when the two disagree.
_NELSON_LIKE: dict[LungRadsCategory, NelsonCategory] = {
    LungRadsCategory.C1: NelsonCategory.NEGATIVE,
    LungRadsCategory.C2: NelsonCategory.NEGATIVE,
    LungRadsCategory.C3: NelsonCategory.INDETERMINATE,
    LungRadsCategory.C4A: NelsonCategory.POSITIVE,
    LungRadsCategory.C4B: NelsonCategory.POSITIVE,
    LungRadsCategory.C4X: NelsonCategory.POSITIVE,
}


@dataclass(frozen=True)
class NoduleReading:
    """What the report says about one nodule in one study (``timepoint`` ``"baseline"`` or ``"followup"``).

    Attributes:
        location: side, zone and image number of the nodule's centre in that study (None when it is not seen
            there).
        mass: the lesion's mean diameter exceeds 30 mm (or the pipeline marked it a mass).
        lung_rads: its Lung-RADS category in that study, with the reason (None when not seen there).
        management: the Lung-RADS v2022 management of that category.
        nelson: the NELSON category of a solid nodule (None for sub-solid nodules or when not seen).
        nelson_note: one sentence when NELSON and Lung-RADS disagree, saying why.
        growth: how the nodule changed up to this study, in words (None at baseline).
        borderline: a sentence when the size sits within the measurement margin of a category threshold.
    """

    timepoint: str
    location: NoduleLocation | None
    mass: bool
    lung_rads: LungRadsResult | None
    management: str | None
    nelson: NelsonResult | None
    nelson_note: str | None
    growth: str | None
    borderline: str | None

    @property
    def finding(self) -> str:
        """``"mass"`` or ``"nodule"``."""
        return "mass" if self.mass else "nodule"


#: The readings of a result: ``{(nodule number, timepoint): reading}``.
Readings = dict[tuple[int, str], NoduleReading]


def is_mass(finding: Finding | None) -> bool:
    """Whether ``finding`` is a mass: marked so by the pipeline, or mean diameter > 30 mm."""
    if finding is None:
        return False
    marked = getattr(finding, "is_mass", None)
    if marked is None:
        marked = getattr(finding.measurement, "is_mass", None)
    return bool(marked) or finding.measurement.mean_diameter_mm > MASS_DIAMETER_MM


def _finding(nodule: TrackedNodule, timepoint: str) -> Finding | None:
    return nodule.baseline if timepoint == "baseline" else nodule.followup


def _timepoint_result(result: TrackingResult | StudyResult, timepoint: str) -> TimepointResult | None:
    if timepoint == "baseline":
        return result.baseline
    return result.followup if isinstance(result, TrackingResult) else None


def _margin_mm(spread: MeasurementSpread | None) -> float:
    if spread is None:
        return DEFAULT_MARGIN_MM
    margin = Z_95 * spread.mean_diameter_sd_mm
    return min(margin, _MAX_MARGIN_MM) if math.isfinite(margin) else _MAX_MARGIN_MM


def _borderline(nodule: TrackedNodule, timepoint: str) -> str | None:
    """The borderline note of the category given in ``timepoint`` (None without one)."""
    finding = _finding(nodule, timepoint)
    rads = nodule.baseline_lung_rads if timepoint == "baseline" else nodule.lung_rads
    if finding is None or rads is None or rads.input is None:
        return None
    spread = nodule.baseline_spread if timepoint == "baseline" else nodule.followup_spread
    try:  # the very input the pipeline categorised, so the note can never contradict the category
        return borderline_note(rads.input, _margin_mm(spread))
    except (InputError, ArithmeticError):  # a size Lung-RADS cannot take: no note rather than no report
        return None


def _nelson(
    nodule: TrackedNodule, finding: Finding, timepoint: str, mass: bool, rads: LungRadsResult | None
) -> tuple[NelsonResult | None, str | None]:
    m = finding.measurement
    prior = nodule.baseline if timepoint == "followup" else None
    change = nodule.change if timepoint == "followup" else None
    vdt = None if mass or change is None else change.vdt_days
    try:
        nelson = nelson_category(m.kind, m.volume_mm3, prior.measurement.volume_mm3 if prior else None, vdt)
    except InputError:  # a volume NELSON cannot take (zero prior): no NELSON rather than no report
        return None, None
    if nelson is None or rads is None or _NELSON_LIKE[rads.category] is nelson.category:
        return nelson, None
    note = (
        f"NELSON {nelson.category} but Lung-RADS {rads.category}: Lung-RADS grades the mean diameter "
        f"({m.mean_diameter_mm:.1f} mm), NELSON the volume ({m.volume_mm3:.0f} mm³)"
        + (" and, on follow-up, the volume change and doubling time." if prior is not None else ".")
    )
    return nelson, note


def growth_wording(nodule: TrackedNodule, mass: bool) -> str | None:
    """How a nodule seen in both studies changed, in words; ``"new"``/``"resolved"`` otherwise (None at baseline).

    The nodule's ``trend`` (its change judged against its measurement uncertainty) decides: GROWING gives the
    doubling time in days, STABLE (or growth without a positive doubling time) "stable within measurement
    error". Without a trend, NELSON's growth criterion stands in for the uncertainty: a volume change under 25 %
    is within measurement error. A mass is never given a doubling time: its volume change is stated.
    """
    change = nodule.change
    if change is None:
        status = str(nodule.status)
        return status if status in ("new", "resolved") else None
    volume = f"volume {change.volume_change_percent:+.0f} %"
    trend = nodule.trend
    if trend is None:
        if change.volume_change_percent >= NELSON_GROWTH_PERCENT:
            trend = NoduleTrend.GROWING
        elif change.volume_change_percent <= -NELSON_GROWTH_PERCENT:
            trend = NoduleTrend.SHRINKING
        else:
            trend = NoduleTrend.STABLE
    if trend is NoduleTrend.STABLE:
        return f"mass, {STABLE_WORDING}" if mass else STABLE_WORDING
    if mass:
        return f"mass, {volume} in {change.interval_days:g} days (no doubling time for a mass)"
    if trend is NoduleTrend.SHRINKING:
        return f"shrinking, {volume}"
    if change.vdt_days is None or change.vdt_days <= 0:
        return STABLE_WORDING
    return f"growing, VDT {change.vdt_days:.0f} days ({volume})"


def nodule_reading(
    nodule: TrackedNodule,
    result: TrackingResult | StudyResult,
    timepoint: str,
    locator: NoduleLocator | None = None,
) -> NoduleReading:
    """What the report says about ``nodule`` in the study ``timepoint`` (``"baseline"`` or ``"followup"``).

    ``locator``: that study's :class:`NoduleLocator` (made here when not given; pass one for many nodules).
    """
    finding = _finding(nodule, timepoint)
    rads = nodule.baseline_lung_rads if timepoint == "baseline" else nodule.lung_rads
    location = None
    if finding is not None:
        if locator is None:
            study = _timepoint_result(result, timepoint)
            locator = NoduleLocator(study.image, study.lungs) if study is not None else None
        if locator is not None:
            location = locator.locate(finding.measurement.center_ras)
    mass = is_mass(finding)
    nelson: NelsonResult | None = None
    note = None
    if finding is not None:
        nelson, note = _nelson(nodule, finding, timepoint, mass, rads)
    else:
        rads = None
    return NoduleReading(
        timepoint=timepoint,
        location=location,
        mass=mass,
        lung_rads=rads,
        management=management_recommendation(rads.category) if rads is not None else None,
        nelson=nelson,
        nelson_note=note,
        growth=growth_wording(nodule, mass) if timepoint == "followup" else None,
        borderline=_borderline(nodule, timepoint),
    )


def report_readings(result: TrackingResult | StudyResult) -> Readings:
    """Every nodule's reading in every study of ``result`` (each study's lungs measured once)."""
    readings: Readings = {}
    for timepoint in ("baseline", "followup"):
        study = _timepoint_result(result, timepoint)
        if study is None:
            continue
        locator = NoduleLocator(study.image, study.lungs)
        for nodule in result.nodules:
            readings[(nodule.number, timepoint)] = nodule_reading(nodule, result, timepoint, locator)
    return readings


def exam_management(result: TrackingResult | StudyResult, timepoint: str) -> str:
    """The Lung-RADS v2022 management of the exam category of ``timepoint``."""
    return management_recommendation(result.exam_lung_rads[timepoint].category)


def _one_decimal(value: Any) -> Any:
    return round(float(value), 1) if value is not None else None


def report_rows(result: TrackingResult, readings: Readings | None = None) -> list[dict[str, Any]]:
    """:meth:`TrackingResult.rows` with the reading's columns added (diameters to 0.1 mm).

    Added per nodule: ``finding`` (nodule or mass), ``side``, ``lung_zone``, ``location`` (e.g. "right lower
    zone, image 123" in the latest study showing it), ``baseline_image`` / ``followup_image`` (image numbers),
    ``baseline_lung_rads_reason``, ``baseline_management``, ``management`` (of the current category),
    ``growth`` (in words), ``nelson`` / ``nelson_reason`` / ``nelson_note`` (solid nodules, latest study),
    ``baseline_borderline`` and ``borderline``. A mass's ``vdt_days`` is left empty. ``readings``: those of
    :func:`report_readings` when already made.
    """
    readings = readings if readings is not None else report_readings(result)
    rows = result.rows()
    for nodule, row in zip(result.nodules, rows, strict=True):
        first = readings[(nodule.number, "baseline")]
        second = readings[(nodule.number, "followup")]
        latest = second if nodule.followup is not None else first
        for name in ("baseline", "followup"):
            for size in ("long_axis_mm", "short_axis_mm", "mean_diameter_mm", "solid_mean_diameter_mm"):
                row[f"{name}_{size}"] = _one_decimal(row.get(f"{name}_{size}"))
        if row.get("mean_diameter_change_mm") is not None:
            row["mean_diameter_change_mm"] = _one_decimal(row["mean_diameter_change_mm"])
        where = latest.location
        row["finding"] = latest.finding
        row["side"] = str(where.side) if where is not None and where.side is not None else None
        row["lung_zone"] = str(where.zone) if where is not None and where.zone is not None else None
        row["location"] = where.describe() if where is not None else None
        row["baseline_image"] = first.location.image_number if first.location is not None else None
        row["followup_image"] = second.location.image_number if second.location is not None else None
        row["baseline_lung_rads_reason"] = first.lung_rads.reason if first.lung_rads is not None else None
        row["baseline_management"] = first.management
        row["management"] = management_recommendation(nodule.lung_rads.category) if nodule.lung_rads else None
        row["growth"] = second.growth
        if latest.mass:
            row["vdt_days"] = None
        row["nelson"] = str(latest.nelson.category) if latest.nelson is not None else None
        row["nelson_reason"] = latest.nelson.reason if latest.nelson is not None else None
        row["nelson_note"] = latest.nelson_note
        row["baseline_borderline"] = first.borderline
        row["borderline"] = latest.borderline
    return rows
