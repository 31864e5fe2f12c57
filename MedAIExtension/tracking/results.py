"""What nodule tracking produces: per-study findings, nodules followed across studies, and the run's result.

Records only (the pipeline in :mod:`MedAIExtension.tracking.pipeline` fills them); the writers in
:mod:`MedAIExtension.tracking.outputs` and the SR read them.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.tracking.growth import NoduleChange
from MedAIExtension.tracking.lungrads import LungRadsResult
from MedAIExtension.tracking.registration import Registration
from MedAIExtension.tracking.repeatability import MeasurementSpread
from MedAIExtension.tracking.types import Finding, NoduleStatus, NoduleTrend

__all__ = ["StudyResult", "TimepointResult", "TrackedNodule", "TrackingResult"]

_NODULE_CATEGORY = CodedTerm("49755003", "SCT", "Morphologically Altered Structure")
_NODULE_TYPE = CodedTerm("27925004", "SCT", "Nodule")


@dataclass
class TimepointResult:
    """Everything found in one study."""

    image: Image
    lungs: np.ndarray
    findings: list[Finding]
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class TrackedNodule:
    """One nodule followed across the two studies."""

    number: int
    tracking_uid: str
    status: NoduleStatus  # PERSISTENT, NEW or RESOLVED; BASELINE for a study assessed alone
    baseline: Finding | None
    followup: Finding | None
    change: NoduleChange | None
    lung_rads: LungRadsResult | None  # of the latest study showing the nodule
    baseline_lung_rads: LungRadsResult | None
    distance_mm: float | None = None
    identifier: str | None = None  # a prior report's Tracking Identifier when it is not ``N<number>``
    baseline_spread: MeasurementSpread | None = None  # measurement uncertainty of the baseline finding
    followup_spread: MeasurementSpread | None = None  # ... and of the follow-up finding
    trend: NoduleTrend | None = None  # for a nodule in both studies: growth judged against the uncertainty

    @property
    def tracking_id(self) -> str:
        """Human-readable tracking identifier, e.g. ``N3`` (or the one a prior report gave this nodule)."""
        return self.identifier or f"N{self.number}"

    @property
    def is_mass(self) -> bool:
        """Whether the lesion is a mass (> 30 mm mean diameter) in the latest study showing it."""
        finding = self.followup if self.followup is not None else self.baseline
        return finding is not None and finding.is_mass

    @property
    def reported_vdt_days(self) -> float | None:
        """The volume doubling time to report: only for a nodule (not a mass) whose growth exceeds its
        measurement uncertainty (trend GROWING); None otherwise ("stable within measurement error" is no VDT)."""
        change = self.change
        if change is None or change.vdt_days is None or self.is_mass:
            return None
        if self.trend is not None and self.trend is not NoduleTrend.GROWING:
            return None
        return change.vdt_days

    @property
    def label(self) -> SegmentLabel:
        """The nodule's segment: same name and colour in both studies."""
        hue = (self.number * 0.618034) % 1.0
        color = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
        return SegmentLabel(self.number, self.tracking_id, color, _NODULE_CATEGORY, _NODULE_TYPE)


@dataclass
class TrackingResult:
    """The outcome of :func:`track_nodules`."""

    baseline: TimepointResult
    followup: TimepointResult
    registration: Registration
    nodules: list[TrackedNodule]
    interval_days: float
    exam_lung_rads: dict[str, LungRadsResult]  # {"baseline": ..., "followup": ...}
    warnings: list[str] = field(default_factory=list)

    @property
    def registered(self) -> bool:
        """False when registration failed and the matching used the scanner coordinates as they are."""
        return bool(self.registration.converged)

    def labels(self) -> list[SegmentLabel]:
        """One segment label per tracked nodule."""
        return [nodule.label for nodule in self.nodules]

    def labelmap(self, timepoint: str) -> Image:
        """A label map of ``"baseline"`` or ``"followup"``: voxel value = tracking number."""
        result = self.baseline if timepoint == "baseline" else self.followup
        return _nodule_labelmap(result.image, self.nodules, timepoint)

    def rows(self) -> list[dict[str, Any]]:
        """The longitudinal table: one row per tracked nodule (JSON/CSV/MRML table)."""
        rows = []
        for nodule in self.nodules:
            row: dict[str, Any] = {"tracking_id": nodule.tracking_id, "tracking_uid": nodule.tracking_uid}
            row["status"] = nodule.status.value
            row["color"] = [round(c, 4) for c in nodule.label.color]
            for name, finding in (("baseline", nodule.baseline), ("followup", nodule.followup)):
                m = finding.measurement if finding is not None else None
                row[f"{name}_kind"] = m.kind.value if m else None
                row[f"{name}_volume_mm3"] = round(m.volume_mm3, 1) if m else None
                row[f"{name}_long_axis_mm"] = m.long_axis_mm if m else None
                row[f"{name}_short_axis_mm"] = m.short_axis_mm if m else None
                row[f"{name}_mean_diameter_mm"] = m.mean_diameter_mm if m else None
                row[f"{name}_solid_mean_diameter_mm"] = m.solid_mean_diameter_mm if m else None
                row[f"{name}_mean_hu"] = round(m.mean_hu, 1) if m else None
                row[f"{name}_center_ras"] = [round(float(v), 2) for v in m.center_ras] if m else None
                row[f"{name}_detection"] = finding.candidate.source if finding is not None else None
                row[f"{name}_confidence"] = round(finding.candidate.confidence, 3) if finding is not None else None
            change = nodule.change
            row["volume_change_mm3"] = round(change.volume_change_mm3, 1) if change else None
            row["volume_change_percent"] = round(change.volume_change_percent, 1) if change else None
            row["vdt_days"] = round(vdt, 1) if (vdt := nodule.reported_vdt_days) is not None else None
            row["mean_diameter_change_mm"] = change.mean_diameter_change_mm if change else None
            row["trend"] = nodule.trend.value if nodule.trend is not None else None
            row["is_mass"] = nodule.is_mass
            for name, spread in (("baseline", nodule.baseline_spread), ("followup", nodule.followup_spread)):
                sd = spread.volume_sd_mm3 if spread is not None and spread.stable else None
                row[f"{name}_volume_sd_mm3"] = round(sd, 1) if sd is not None else None
            row["match_distance_mm"] = round(nodule.distance_mm, 2) if nodule.distance_mm is not None else None
            row["lung_rads"] = str(nodule.lung_rads.category) if nodule.lung_rads else None
            row["lung_rads_reason"] = nodule.lung_rads.reason if nodule.lung_rads else None
            row["baseline_lung_rads"] = str(nodule.baseline_lung_rads.category) if nodule.baseline_lung_rads else None
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the run (without the per-nodule rows)."""
        reg = self.registration
        return {
            "interval_days": self.interval_days,
            "registered": self.registered,
            "registration": {
                "converged": bool(reg.converged),
                "deformable": bool(getattr(reg, "deformable", False)),
                "message": reg.message,
                "metric": float(reg.metric) if reg.metric is not None else None,
                "followup_to_baseline_ras": np.asarray(reg.followup_to_baseline_ras).round(6).tolist(),
            },
            "exam_lung_rads": {
                key: {"category": str(value.category), "reason": value.reason}
                for key, value in self.exam_lung_rads.items()
            },
            "counts": {
                status.value: sum(1 for n in self.nodules if n.status is status)
                for status in (NoduleStatus.PERSISTENT, NoduleStatus.NEW, NoduleStatus.RESOLVED)
            },
            "warnings": list(self.warnings),
            "seconds": {"baseline": self.baseline.seconds, "followup": self.followup.seconds},
        }


@dataclass
class StudyResult:
    """The nodules of one chest CT assessed without a prior study (a first screening, or no prior available).

    Shaped like the baseline half of a :class:`TrackingResult` (``nodules[i].baseline`` is the finding, status
    ``"baseline"``) so the same writers produce its SEG and SR.
    """

    baseline: TimepointResult
    nodules: list[TrackedNodule]
    exam_lung_rads: dict[str, LungRadsResult]  # {"baseline": ...}
    warnings: list[str] = field(default_factory=list)

    def labels(self) -> list[SegmentLabel]:
        """One segment label per nodule."""
        return [nodule.label for nodule in self.nodules]

    def labelmap(self, timepoint: str = "baseline") -> Image:
        """The nodule label map of the study: voxel value = tracking number."""
        return _nodule_labelmap(self.baseline.image, self.nodules, timepoint)


def _nodule_labelmap(image: Image, nodules: Sequence[TrackedNodule], timepoint: str) -> Image:
    array = np.zeros(image.shape, dtype=np.uint8 if max((n.number for n in nodules), default=0) <= 255 else np.uint16)
    for nodule in nodules:
        finding = nodule.baseline if timepoint == "baseline" else nodule.followup
        if finding is not None:
            region = array[finding.mask.box]
            region[finding.mask.mask & (region == 0)] = nodule.number
    return image.with_array(array, modality="SEG")
