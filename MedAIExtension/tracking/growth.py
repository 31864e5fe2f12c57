"""Change between two time points: volume change, volume doubling time, diameter growth, study interval.

VDT = Δt · ln 2 / ln(V2 / V1) with Δt in days between the study dates (../shared/DOMAIN.md, "Growth rate");
undefined (None, "not growing") when V2 ≤ V1.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image

__all__ = ["NoduleChange", "nodule_change", "parse_dicom_date", "study_interval_days", "volume_doubling_time_days"]


def volume_doubling_time_days(volume1_mm3: float, volume2_mm3: float, interval_days: float) -> float | None:
    """Days for the volume to double at the observed exponential rate; None when the nodule is not growing."""
    if volume1_mm3 <= 0 or volume2_mm3 <= 0:
        raise InputError(f"Volumes must be positive to compute a doubling time, got {volume1_mm3}, {volume2_mm3}.")
    if interval_days <= 0:
        raise InputError(f"The interval between studies must be positive, got {interval_days} days.")
    if volume2_mm3 <= volume1_mm3:
        return None
    return interval_days * math.log(2.0) / math.log(volume2_mm3 / volume1_mm3)


@dataclass(frozen=True)
class NoduleChange:
    """How one nodule changed from baseline to follow-up."""

    interval_days: float
    volume_change_mm3: float
    volume_change_percent: float
    vdt_days: float | None
    mean_diameter_change_mm: float
    vdt_note: str | None = None  # why no VDT is given although the volume rose (e.g. within measurement error)

    @property
    def growth_text(self) -> str:
        """A short phrase for reports, e.g. ``"+35.2 % in 180 days, VDT 410 days"``."""
        text = f"{self.volume_change_percent:+.1f} % in {self.interval_days:g} days"
        if self.vdt_days is not None:
            return text + f", VDT {self.vdt_days:.0f} days"
        return text + (f", {self.vdt_note}" if self.vdt_note else ", not growing")


def nodule_change(
    volume1_mm3: float, volume2_mm3: float, mean_diameter1_mm: float, mean_diameter2_mm: float, interval_days: float
) -> NoduleChange:
    """Absolute and relative volume change, VDT and mean-diameter change of one nodule."""
    vdt = volume_doubling_time_days(volume1_mm3, volume2_mm3, interval_days)
    return NoduleChange(
        interval_days=float(interval_days),
        volume_change_mm3=volume2_mm3 - volume1_mm3,
        volume_change_percent=100.0 * (volume2_mm3 - volume1_mm3) / volume1_mm3,
        vdt_days=vdt,
        mean_diameter_change_mm=round(mean_diameter2_mm - mean_diameter1_mm, 1),
    )


def parse_dicom_date(text: str | None) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD, also the old YYYY.MM.DD) as a date; None when empty."""
    if not text or not str(text).strip():
        return None
    value = str(text).strip().replace(".", "")
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        raise InputError(
            f"Study date {text!r} is not a DICOM date (YYYYMMDD). Fix the header or pass the interval."
        ) from None


def study_interval_days(baseline: Image, followup: Image, interval_days: float | None = None) -> float:
    """Days between the two studies: ``interval_days`` when given, else from their DICOM study dates.

    Raises:
        InputError: dates missing (and no interval given), or the follow-up is dated before or on the baseline.
    """
    if interval_days is not None:
        if not math.isfinite(interval_days) or interval_days <= 0:
            raise InputError(f"--interval-days must be a positive number of days, got {interval_days}.")
        return float(interval_days)
    first = parse_dicom_date(baseline.metadata.get("StudyDate"))
    second = parse_dicom_date(followup.metadata.get("StudyDate"))
    if first is None or second is None:
        which = "baseline" if first is None else "follow-up"
        raise InputError(
            f"The {which} study has no study date, so the interval between the scans is unknown. "
            "Load the studies from DICOM or give the interval with --interval-days."
        )
    days = (second - first).days
    if days <= 0:
        raise InputError(
            f"The follow-up study ({second.isoformat()}) is not dated after the baseline ({first.isoformat()}). "
            "Check that --baseline and --followup are not swapped."
        )
    return float(days)
