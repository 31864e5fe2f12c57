"""What a radiologist reads beside a Lung-RADS category: the management it calls for, whether the size sits on a
threshold, and the NELSON volume criteria for the same nodule.

* Management per category follows Lung-RADS v2022 (ACR; Christensen et al., CHEST 2024).
* A *borderline* size is one where a change within the measurement uncertainty (``margin_mm``) gives another
  category: the category is re-computed with the sizes moved in 0.1 mm steps (the precision Lung-RADS measures
  to), so every rule of :mod:`MedAIExtension.tracking.lungrads` - growth, part-solid components, stepped
  management - is taken into account without a second copy of its table.
* NELSON (van Klaveren et al., NEJM 2009; Horeweg et al., Lancet Oncol 2014) classifies solid nodules by volume:
  < 50 mm³ negative, 50-500 mm³ indeterminate, > 500 mm³ positive; on follow-up a volume change of at least 25 %
  counts as growth and the volume doubling time decides (< 400 days positive, 400-600 indeterminate, > 600
  negative). Lung-RADS works on mean diameters, so the two can disagree; :func:`nelson_category` says why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from MedAIExtension.errors import InputError
from MedAIExtension.tracking.lungrads import (
    LungRadsCategory,
    LungRadsInput,
    Timepoint,
    categorize_nodule,
    follow_up_timepoint,
)
from MedAIExtension.tracking.types import NoduleKind

__all__ = [
    "MANAGEMENT",
    "NelsonCategory",
    "NelsonResult",
    "borderline_note",
    "management_recommendation",
    "nelson_category",
]

#: Lung-RADS v2022 management by category.
MANAGEMENT: dict[LungRadsCategory, str] = {
    LungRadsCategory.C1: "Continue annual screening with LDCT in 12 months.",
    LungRadsCategory.C2: "Continue annual screening with LDCT in 12 months.",
    LungRadsCategory.C3: "6-month LDCT.",
    LungRadsCategory.C4A: "3-month LDCT; PET/CT may be used when there is a solid component ≥ 8 mm.",
    LungRadsCategory.C4B: (
        "Diagnostic chest CT with or without contrast; PET/CT may be used when there is a solid component ≥ 8 mm; "
        "tissue sampling and/or referral for further clinical evaluation, depending on the probability of "
        "malignancy and comorbidities."
    ),
    LungRadsCategory.C4X: (
        "Diagnostic chest CT with or without contrast; PET/CT may be used when there is a solid component ≥ 8 mm; "
        "tissue sampling and/or referral for further clinical evaluation, depending on the probability of "
        "malignancy and comorbidities."
    ),
}

_STEP_MM = Decimal("0.1")


def management_recommendation(category: LungRadsCategory | str) -> str:
    """The Lung-RADS v2022 management of ``category``."""
    return MANAGEMENT[LungRadsCategory.parse(category)]


def _moved(status: LungRadsInput, total: float, solid: float | None) -> LungRadsInput | None:
    """``status`` with other sizes (its time point re-derived when a prior size decides growth); None if invalid."""
    timepoint = status.timepoint
    if status.prior_mean_diameter_mm is not None and status.interval_days is not None:
        margin = status.diameter_uncertainty_mm or 0.0  # growth must exceed the measurement uncertainty ...
        within = status.stable_within_error  # ... and is never claimed for a change judged within error
        timepoint = follow_up_timepoint(status.prior_mean_diameter_mm, total, status.interval_days, margin, within)
        if timepoint is Timepoint.DECREASED and status.timepoint is Timepoint.STABLE:
            timepoint = Timepoint.STABLE  # "decreased" and "stable" categorise alike; keep the reader's word
    if total <= 0 or (solid is not None and not 0 < solid <= total):
        return None
    try:
        return dataclasses.replace(status, mean_diameter_mm=total, solid_mean_diameter_mm=solid, timepoint=timepoint)
    except InputError:
        return None


def borderline_note(status: LungRadsInput, margin_mm: float) -> str | None:
    """A sentence when a size change within ``margin_mm`` changes the category, else None.

    E.g. ``"mean diameter 5.9 mm is within 0.1 mm of a Lung-RADS threshold (6 mm): 0.1 mm more gives category 3
    instead of 2"``. The whole nodule's mean diameter is moved, and for a part-solid nodule its solid component too.
    """
    if margin_mm < 0:
        raise InputError(f"The measurement margin must not be negative (got {margin_mm} mm).")
    current = categorize_nodule(status).category
    steps = int(Decimal(str(margin_mm)) / _STEP_MM)
    part_solid = status.kind is NoduleKind.PART_SOLID and status.solid_mean_diameter_mm is not None
    sizes = [("mean diameter", status.mean_diameter_mm)]
    if part_solid:
        sizes.append(("solid component", float(status.solid_mean_diameter_mm or 0.0)))
    for n in range(1, steps + 1):  # nearest first
        delta = float(n * _STEP_MM)
        for sign in (1, -1):
            for what, value in sizes:
                moved_value = round(value + sign * delta, 1)
                if what == "mean diameter":
                    moved = _moved(status, moved_value, status.solid_mean_diameter_mm if part_solid else None)
                else:
                    moved = _moved(status, status.mean_diameter_mm, moved_value)
                if moved is None:
                    continue
                other = categorize_nodule(moved).category
                if other is not current:
                    direction = "more" if sign > 0 else "less"
                    # the size where the category changes: reached going up, the last one kept going down
                    threshold = moved_value if sign > 0 else round(moved_value + float(_STEP_MM), 1)
                    return (
                        f"{what} {value:.1f} mm is within {delta:.1f} mm of a Lung-RADS threshold ({threshold:g} mm): "
                        f"{delta:.1f} mm {direction} gives category {other} instead of {current}"
                    )
    return None


class NelsonCategory(StrEnum):
    """NELSON result for a solid nodule."""

    NEGATIVE = "negative"
    INDETERMINATE = "indeterminate"
    POSITIVE = "positive"


@dataclass(frozen=True)
class NelsonResult:
    """A NELSON category with the criterion that gave it."""

    category: NelsonCategory
    reason: str


def nelson_category(
    kind: NoduleKind | str,
    volume_mm3: float,
    prior_volume_mm3: float | None = None,
    vdt_days: float | None = None,
) -> NelsonResult | None:
    """The NELSON category of a solid nodule (None for sub-solid nodules, which NELSON does not classify by volume).

    At baseline (no prior volume) the volume class decides; on follow-up, growth (≥ 25 % volume increase) with its
    volume doubling time decides, and a nodule that did not grow keeps the class of its current volume.
    """
    if NoduleKind(str(kind)) is not NoduleKind.SOLID:
        return None
    if volume_mm3 < 0 or (prior_volume_mm3 is not None and prior_volume_mm3 <= 0):
        raise InputError("NELSON needs a non-negative volume and a positive prior volume.")
    if volume_mm3 < 50:
        by_volume = NelsonResult(NelsonCategory.NEGATIVE, f"volume {volume_mm3:.0f} mm³ < 50 mm³")
    elif volume_mm3 <= 500:
        by_volume = NelsonResult(NelsonCategory.INDETERMINATE, f"volume {volume_mm3:.0f} mm³ in 50-500 mm³")
    else:
        by_volume = NelsonResult(NelsonCategory.POSITIVE, f"volume {volume_mm3:.0f} mm³ > 500 mm³")
    if prior_volume_mm3 is None:
        return by_volume
    change = 100.0 * (volume_mm3 - prior_volume_mm3) / prior_volume_mm3
    if change < 25.0:
        no_growth = f"volume change {change:+.0f} % (< 25 %: no growth)"
        return NelsonResult(by_volume.category, f"{by_volume.reason}; {no_growth}")
    if vdt_days is None:  # growth without a doubling time (e.g. a mass, or a change within measurement error)
        growth = f"volume change {change:+.0f} % (≥ 25 %), no doubling time given"
        return NelsonResult(by_volume.category, f"{by_volume.reason}; {growth}")
    growth = f"volume change {change:+.0f} %, VDT {vdt_days:.0f} days"
    if vdt_days < 400:
        return NelsonResult(NelsonCategory.POSITIVE, f"{growth} (< 400 days)")
    if vdt_days <= 600:
        return NelsonResult(NelsonCategory.INDETERMINATE, f"{growth} (400-600 days)")
    return NelsonResult(NelsonCategory.NEGATIVE, f"{growth} (> 600 days)")
