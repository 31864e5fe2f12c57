"""Growth only when it is real: a tracked nodule's change judged against its measurement uncertainty.

A nodule seen in both studies is called GROWING or SHRINKING only when its volume change exceeds
``1.96 * sqrt(sd1² + sd2²)``, the two SDs from re-segmenting each finding under seed shifts and fresh noise
(:func:`~MedAIExtension.tracking.repeatability.measurement_spread`); otherwise it is "stable within measurement
error" (:class:`~MedAIExtension.tracking.types.NoduleTrend`). A finding that cannot be re-segmented in half of
the repeats (a vessel junction, a boundary that jumps) has no usable uncertainty: no growth is claimed for it and
a warning names it.

The repeats perturb one image on its own grid; a repeat *scan* also samples the nodule on a moved grid (the
patient lies differently), which moves the partial-volume boundary by a fraction of a voxel. That part is added
to each spread: a boundary placed to within ``0.1`` of the RMS voxel spacing (``sigma_b``) gives a volume SD of
``3 sigma_b / r`` of the volume and a mean-diameter SD of ``2 sigma_b`` (:func:`sampling_spread`). On the
no-change phantom pairs at 1.7-2 mm voxels the volumes of 7-12 mm nodules differ by up to ~12 % between the
scans while the repeats on one image scatter by 1-3 %; at 0.7-0.9 mm voxels the term is 2-3 times smaller, so
+30 % over six months is still growth for an 8 mm nodule. The spreads stored on the nodule include this term.

Cost: the repeats (eight segmentations per finding: six seed shifts, two fresh noises) are only run where the
decision needs them.

* A change within ``1.96`` combined *floors* of the spread (1 % of each volume,
  :func:`~MedAIExtension.tracking.repeatability.minimum_spread`, with the grid-sampling term) can never exceed
  the uncertainty, so a nodule whose volume changed that little and whose mean diameter does not meet the
  Lung-RADS 1.5 mm growth definition is STABLE without repeats (its spreads are the floors, ``repeats == 0``).
* A volume decrease beyond the floors (without a 1.5 mm mean-diameter increase) is SHRINKING without repeats:
  it is never growth, so no growth decision hangs on it (a shrinking call may then rest on the floors alone).
* The two findings' repeats run side by side (two threads), each in a box of twice the nodule's size plus
  12 mm (at most 40 mm) rather than the largest nodule's.
* A mass (> 30 mm) is segmented by the mass detector, not by the seed-grown nodule segmentation the repeats use;
  its uncertainty is taken as 5 % of the volume (same-software repeat volumetry; de Hoop et al. 2009 report
  13-25 % *between* packages), and no VDT is reported for it in any case.

The VDT is kept only for a GROWING nodule that is not a mass; the Lung-RADS "growing" rules apply only when the
trend is GROWING and the mean-diameter increase also exceeds its own uncertainty.

:func:`limit_warnings` states the limits of the method where a result runs into them: a lesion at the edge of the
sizes the detectors look for, and slices too thick for small nodules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from MedAIExtension.io.image import Image
from MedAIExtension.progress import Progress, run_side_by_side
from MedAIExtension.tracking import lungrads
from MedAIExtension.tracking.attenuation_mass import compare_attenuation_mass
from MedAIExtension.tracking.blob_detector import DetectionOptions
from MedAIExtension.tracking.growth import NoduleChange
from MedAIExtension.tracking.measurements import THICK_SLICE_MM
from MedAIExtension.tracking.registration import Registration
from MedAIExtension.tracking.repeatability import (
    Z_95,
    MeasurementSpread,
    change_exceeds_uncertainty,
    measurement_spread,
    minimum_spread,
)
from MedAIExtension.tracking.results import TimepointResult, TrackedNodule
from MedAIExtension.tracking.types import MASS_DIAMETER_MM, Finding, NoduleMeasurement, NoduleTrend

__all__ = ["MASS_RELATIVE_SD", "ChangeJudgement", "judge_change", "limit_warnings", "sampling_spread"]

#: Relative volume SD assumed for a mass (see the module docstring).
MASS_RELATIVE_SD = 0.05
#: How well a partial-volume boundary is placed between two scans, in RMS voxel spacings.
_BOUNDARY_VOXELS = 0.1
#: Fresh-noise repeats per finding (besides the six seed shifts).
_NOISE_REPEATS = 2
#: Largest lesion the repeats look for (mm); nodules are at most 30 mm, the rest are masses.
_REPEAT_MAX_DIAMETER_MM = 40.0


@dataclass(frozen=True)
class ChangeJudgement:
    """The trend of one nodule seen in both studies, with what it rests on.

    Attributes:
        trend: GROWING / SHRINKING beyond the uncertainty, else STABLE.
        change: the nodule's change; ``vdt_days`` None (with ``vdt_note``) unless the VDT may be reported.
        baseline_spread, followup_spread: the measurement uncertainties (None where the repeats were skipped).
        diameter_uncertainty_mm: ``1.96 * sqrt(sd1² + sd2²)`` of the mean diameters (None without spreads).
        warnings: sentences naming the nodule (an unstable measurement).
    """

    trend: NoduleTrend
    change: NoduleChange
    baseline_spread: MeasurementSpread | None = None
    followup_spread: MeasurementSpread | None = None
    diameter_uncertainty_mm: float | None = None
    warnings: list[str] = field(default_factory=list)


def sampling_spread(measurement: NoduleMeasurement, image: Image) -> MeasurementSpread:
    """The spread of a measurement from where the scanner grid falls on the nodule (see the module docstring)."""
    spacing = np.asarray(image.spacing, dtype=float)
    boundary = _BOUNDARY_VOXELS * float(np.sqrt(np.mean(spacing**2)))
    radius = max(measurement.mean_diameter_mm / 2.0, 0.5)
    return MeasurementSpread(3.0 * boundary / radius * measurement.volume_mm3, 2.0 * boundary, 0, 0)


def _combined(first: MeasurementSpread, second: MeasurementSpread) -> MeasurementSpread:
    return MeasurementSpread(
        math.hypot(first.volume_sd_mm3, second.volume_sd_mm3),
        math.hypot(first.mean_diameter_sd_mm, second.mean_diameter_sd_mm),
        first.repeats + second.repeats,
        first.failed + second.failed,
    )


def _floor(result: TimepointResult, finding: Finding) -> MeasurementSpread:
    return _combined(minimum_spread(finding.measurement), sampling_spread(finding.measurement, result.image))


def _spread(result: TimepointResult, finding: Finding, seed: int) -> MeasurementSpread:
    """The finding's repeat spread (or a mass's assumed one), with the grid-sampling term added."""
    return _combined(_repeat_spread(result, finding, seed), sampling_spread(finding.measurement, result.image))


def _repeat_spread(result: TimepointResult, finding: Finding, seed: int) -> MeasurementSpread:
    measurement = finding.measurement
    if finding.is_mass:
        floor = minimum_spread(measurement)
        return MeasurementSpread(
            max(MASS_RELATIVE_SD * measurement.volume_mm3, floor.volume_sd_mm3),
            max(MASS_RELATIVE_SD / 3.0 * measurement.mean_diameter_mm, floor.mean_diameter_sd_mm),
            0,
            0,
        )
    # the repeats look no further than the nodule needs (twice its size and some context, at most a 40 mm
    # nodule): a smaller box makes each of the nine segmentations several times cheaper
    reach = min(max(2.0 * measurement.mean_diameter_mm + 12.0, 20.0), _REPEAT_MAX_DIAMETER_MM)
    return measurement_spread(
        result.image, measurement, result.lungs, noise_repeats=_NOISE_REPEATS, max_diameter_mm=reach, seed=seed
    )


def _without_vdt(change: NoduleChange, note: str) -> NoduleChange:
    return change if change.vdt_days is None else replace(change, vdt_days=None, vdt_note=note)


def judge_change(
    tracking_id: str,
    baseline: Finding,
    followup: Finding,
    base: TimepointResult,
    follow: TimepointResult,
    change: NoduleChange,
    interval_days: float,
    progress: Progress | None = None,
    registration: Registration | None = None,
) -> ChangeJudgement:
    """The trend of a nodule from ``baseline`` (a finding of ``base``) to ``followup`` (of ``follow``).

    ``progress`` carries cancellation into the repeats. With a converged ``registration``, growth beyond the
    measurement uncertainty must also show in the image: the attenuation mass of the findings' place
    (:mod:`~MedAIExtension.tracking.attenuation_mass`) must rise, else the nodule is stable with a warning.
    """
    judged = _judge(tracking_id, baseline, followup, base, follow, change, interval_days, progress)
    if judged.trend is NoduleTrend.GROWING and registration is not None and registration.converged:
        mass = compare_attenuation_mass(
            base.image,
            follow.image,
            baseline.mask,
            followup.mask,
            registration.followup_to_baseline_ras,
            registration.baseline_to_followup_ras,
        )
        if not mass.confirms_growth:
            volume_change = 100.0 * (followup.measurement.volume_mm3 / baseline.measurement.volume_mm3 - 1.0)
            note = (
                f"{tracking_id}: the segmented volume changed by {volume_change:+.0f} % but the attenuation mass at "
                f"its place by only {100.0 * mass.relative_change:+.1f} %: a boundary drawn differently, not growth "
                "(stable within measurement error)."
            )
            judged = replace(judged, trend=NoduleTrend.STABLE, warnings=[*judged.warnings, note])
    if baseline.is_mass or followup.is_mass:
        return replace(judged, change=_without_vdt(judged.change, "no VDT for a mass"))
    if judged.trend is not NoduleTrend.GROWING:
        return replace(judged, change=_without_vdt(judged.change, str(NoduleTrend.STABLE)))
    return judged


def _judge(
    tracking_id: str,
    baseline: Finding,
    followup: Finding,
    base: TimepointResult,
    follow: TimepointResult,
    change: NoduleChange,
    interval_days: float,
    progress: Progress | None,
) -> ChangeJudgement:
    first, second = baseline.measurement, followup.measurement
    v1, v2 = first.volume_mm3, second.volume_mm3
    floors = _floor(base, baseline), _floor(follow, followup)
    grown = lungrads.is_growing(first.mean_diameter_mm, second.mean_diameter_mm, interval_days)
    if not grown and not change_exceeds_uncertainty(v1, floors[0].volume_sd_mm3, v2, floors[1].volume_sd_mm3):
        return ChangeJudgement(NoduleTrend.STABLE, change, *floors)  # within the floors: no repeats make it real
    if v2 < v1 and not grown:
        return ChangeJudgement(NoduleTrend.SHRINKING, change, *floors)  # a decrease is never growth: no repeats
    # the two studies' repeats at the same time (threads; the heavy loops release the GIL)
    spread1, spread2 = run_side_by_side(
        [lambda _: _spread(base, baseline, seed=1), lambda _: _spread(follow, followup, seed=2)],
        progress or Progress(None),
    )
    unstable = [
        _unstable(tracking_id, s, x) for s, x in (("baseline", spread1), ("follow-up", spread2)) if not x.stable
    ]
    if unstable:
        return ChangeJudgement(NoduleTrend.STABLE, change, spread1, spread2, None, unstable)
    trend = NoduleTrend.STABLE
    if change_exceeds_uncertainty(v1, spread1.volume_sd_mm3, v2, spread2.volume_sd_mm3):
        trend = NoduleTrend.GROWING if v2 > v1 else NoduleTrend.SHRINKING
    diameter = Z_95 * math.hypot(spread1.mean_diameter_sd_mm, spread2.mean_diameter_sd_mm)
    return ChangeJudgement(trend, change, spread1, spread2, round(diameter, 2))


def _unstable(tracking_id: str, study: str, spread: MeasurementSpread) -> str:
    return (
        f"{tracking_id}: its {study} measurement is not repeatable (re-segmentation lost it in {spread.failed} of "
        f"{spread.repeats} perturbed repeats, e.g. a vessel junction or an unclear boundary); no growth is claimed "
        f"({NoduleTrend.STABLE})."
    )


#: How close (mm) to a size limit of the detectors a lesion is said to be "at the edge" of it.
_EDGE_MM = 1.0
_NODULE_MASS_EDGE_MM = 3.0


def limit_warnings(
    nodules: Sequence[TrackedNodule], images: Mapping[str, Image], min_mean_diameter_mm: float
) -> list[str]:
    """The method's limits that apply to this result, one sentence each.

    * a lesion within 1 mm above the smallest size reported (it may drop below it, or be missed, on another
      scan);
    * a lesion within 3 mm of 30 mm, where the nodule detector (up to 30 mm) hands over to the mass detector
      (from 30 mm);
    * per study with slices thicker than 2.5 mm: nodules under about twice the slice thickness are measured
      unreliably (and small ones can be missed).

    ``images`` names each study (``{"baseline": ..., "follow-up": ...}``).
    """
    out: list[str] = []
    largest_nodule = DetectionOptions().max_diameter_mm
    for nodule in nodules:
        for finding in (nodule.followup, nodule.baseline):
            if finding is None:
                continue
            size = finding.measurement.mean_diameter_mm
            if size < min_mean_diameter_mm + _EDGE_MM:
                out.append(
                    f"{nodule.tracking_id} ({size:.1f} mm) is at the lower edge of the sizes reported "
                    f"(≥ {min_mean_diameter_mm:g} mm): on another scan it may be missed or measured below it."
                )
            elif abs(size - MASS_DIAMETER_MM) <= _NODULE_MASS_EDGE_MM:
                what = "a mass" if finding.is_mass else "a nodule"
                out.append(
                    f"{nodule.tracking_id} ({size:.1f} mm, {what}) is at the edge of the detectors' size ranges: "
                    f"nodules are looked for up to {largest_nodule:g} mm and masses from {MASS_DIAMETER_MM:g} mm; "
                    "check that it is reported once and with its whole extent."
                )
            else:
                continue
            break  # one size warning per nodule
    for name, image in images.items():
        thickness = float(image.spacing[2])
        if thickness > THICK_SLICE_MM:
            out.append(
                f"The {name} has {thickness:.2g} mm slices (thicker than {THICK_SLICE_MM:g} mm): nodules under "
                f"~{2 * thickness:.0f} mm (twice the slice thickness) are measured unreliably and small ones can be "
                "missed; use thin-slice reconstructions for volumetry."
            )
    return out
