"""How far a nodule measurement would move on a repeat scan, and whether a change exceeds that.

Same-day repeat CT changes a nodule's volume by 13-25 % between software packages (de Hoop et al., Radiology
2009); on one package most of that comes from where the seed falls, from the image noise, and from a boundary that
can take in or leave out a touching vessel. So each measurement is repeated under those perturbations on the same
image:

* the seed moved by a quarter of the nodule's mean diameter (at least one voxel) along each of the image's six
  axis directions;
* fresh noise of the image's own local level added (a stand-in for the repeat scan's different noise);
* the image resampled half a voxel further along each of its axes (a repositioned patient is sampled on another
  grid: thin or small structures, whose partial volume decides what crosses the threshold, change most).

The spread (sample standard deviation) of the repeated volumes and mean diameters is the measurement's
uncertainty, never below 1 % of the volume (the perturbations of a clean phantom nodule scatter by less; real
repeat CT never does). A nodule that cannot be re-segmented in half of the repeats is marked
unstable. :func:`change_exceeds_uncertainty` then calls a change real only when it is larger than
``z * sqrt(sd1² + sd2²)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.models.preprocessing import crop_image
from MedAIExtension.tracking.measurements import measure_nodule
from MedAIExtension.tracking.nodule_segmentation import box_around, robust_std, segment_nodule
from MedAIExtension.tracking.types import Candidate, NoduleMeasurement

__all__ = ["Z_95", "MeasurementSpread", "change_exceeds_uncertainty", "measurement_spread", "minimum_spread"]

#: Two-sided 95 % normal quantile: the default confidence for calling a change real.
Z_95 = 1.96
_SEED_SHIFT_FRACTION = 0.25
_CONTEXT_MM = 8.0
_NOISE_SMOOTH_MM = 1.0
#: Floor of the relative volume SD. Repeat phantom scans scatter by 0.2-0.6 % with this segmentation and real
#: repeat CT by more; the perturbations measure the rest, the floor only keeps a lucky repeat from claiming 0.
_MIN_RELATIVE_SD = 0.01


@dataclass(frozen=True)
class MeasurementSpread:
    """The uncertainty (one standard deviation) of a nodule's volume and mean diameter.

    ``stable`` is False when fewer than half of the repeats found the nodule again; its sizes then carry no
    usable uncertainty (both are infinite) and no change of it should be called growth.
    """

    volume_sd_mm3: float
    mean_diameter_sd_mm: float
    repeats: int
    failed: int

    @property
    def stable(self) -> bool:
        """Whether the nodule was found again in at least half of the repeats."""
        return self.failed * 2 <= self.repeats

    def relative_to(self, volume_mm3: float) -> float:
        """The volume uncertainty as a fraction of ``volume_mm3``."""
        return self.volume_sd_mm3 / volume_mm3 if volume_mm3 > 0 else math.inf


def _local_image(image: Image, center_ras: Sequence[float], half_mm: float) -> tuple[Image, tuple[slice, ...]]:
    centre = (np.linalg.inv(image.ijk_to_ras) @ np.append(np.asarray(center_ras, float), 1.0))[:3][::-1]
    box = box_around(image, centre, half_mm)
    return crop_image(image, box), box


def _noise_level(local: Image, lungs: np.ndarray | None) -> float:
    """The image noise (HU) from the high-pass residual of the lung-side voxels of the local image."""
    hu = local.array.astype(np.float32)
    sigma = _NOISE_SMOOTH_MM / np.asarray(local.spacing, dtype=float)[::-1]
    residual = hu - ndimage.gaussian_filter(hu, sigma=sigma)
    side = lungs if lungs is not None and lungs.any() else hu < -500.0
    return robust_std(residual[side]) if side.any() else robust_std(residual)


def _half_voxel_resampled(local: Image, axis_ijk: int) -> Image:
    """``local`` sampled half a voxel further along ``axis_ijk`` (linear interpolation): the same anatomy at the
    same place in RAS, seen through another grid."""
    offset = np.zeros(3)
    offset[2 - axis_ijk] = 0.5  # array axes are (k, j, i)
    values = ndimage.shift(local.array.astype(np.float32), -offset, order=1, mode="nearest")
    affine = np.array(local.ijk_to_ras, dtype=float)
    affine[:3, 3] += affine[:3, axis_ijk] * 0.5
    return Image(values, affine, modality=local.modality, metadata=local.metadata)


def minimum_spread(measurement: NoduleMeasurement) -> MeasurementSpread:
    """The smallest spread :func:`measurement_spread` can report for ``measurement`` (its floor, no repeats).

    A change within ``z`` combined floors is within the uncertainty whatever the repeats would give, so a caller
    can skip them there.
    """
    volume, diameter = _floor(measurement)
    return MeasurementSpread(volume, diameter, 0, 0)


def _floor(measurement: NoduleMeasurement) -> tuple[float, float]:
    """The smallest volume and mean-diameter SD reported: 1 % of the volume (a third of that for the diameter,
    which goes with the cube root of the volume) and never below the 0.1 mm / 0.1 mm³ rounding of the figures."""
    rounding = 0.1 / math.sqrt(12.0)
    return (
        max(_MIN_RELATIVE_SD * measurement.volume_mm3, rounding),
        max(_MIN_RELATIVE_SD / 3.0 * measurement.mean_diameter_mm, rounding),
    )


def measurement_spread(
    image: Image,
    measurement: NoduleMeasurement,
    lungs: np.ndarray | None = None,
    *,
    noise_repeats: int = 3,
    max_diameter_mm: float = 40.0,
    seed: int = 0,
) -> MeasurementSpread:
    """Re-segment and re-measure the nodule of ``measurement`` under seed and noise perturbations.

    ``image`` and ``lungs`` are those the measurement was made on; ``seed`` makes the added noise reproducible.
    """
    if noise_repeats < 0:
        raise InputError(f"noise_repeats must not be negative (got {noise_repeats}).")
    if lungs is not None and np.shape(lungs) != image.shape:
        raise InputError(f"The lung mask has shape {np.shape(lungs)} but the image has {image.shape} (k, j, i).")
    local, box = _local_image(image, measurement.center_ras, 0.5 * max_diameter_mm + _CONTEXT_MM)
    local_lungs = None if lungs is None else np.asarray(lungs[box], dtype=bool)
    diameter = max(measurement.mean_diameter_mm, 1.0)
    centre = np.asarray(measurement.center_ras, dtype=float)
    directions = np.asarray(image.ijk_to_ras, dtype=float)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0)
    shift = max(_SEED_SHIFT_FRACTION * diameter, float(np.max(image.spacing)))
    runs: list[tuple[Image, np.ndarray]] = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            runs.append((local, centre + sign * shift * directions[:, axis]))
    noise = _noise_level(local, local_lungs)
    rng = np.random.default_rng(seed)
    for _ in range(noise_repeats):
        noisy = local.array + rng.normal(0.0, noise, size=local.shape).astype(np.float32)
        runs.append((local.with_array(noisy), centre))
    for axis in range(3):
        runs.append((_half_voxel_resampled(local, axis), centre))
    volumes, diameters, failed = [measurement.volume_mm3], [measurement.mean_diameter_mm], 0
    for run_image, point in runs:
        candidate = Candidate((float(point[0]), float(point[1]), float(point[2])), diameter, 1.0, "repeat")
        try:
            mask = segment_nodule(run_image, candidate, local_lungs, max_diameter_mm=max_diameter_mm)
            again = None if mask is None else measure_nodule(run_image, mask, local_lungs)
        except InputError:
            again = None  # a seed pushed out of the image or lungs: the nodule was not found from there
        if again is None or np.linalg.norm(np.asarray(again.center_ras) - centre) > diameter:
            failed += 1  # nothing there, or another structure than the nodule
            continue
        volumes.append(again.volume_mm3)
        diameters.append(again.mean_diameter_mm)
    repeats = len(runs)
    if failed * 2 > repeats:
        return MeasurementSpread(math.inf, math.inf, repeats, failed)
    floor_volume, floor_diameter = _floor(measurement)
    return MeasurementSpread(
        volume_sd_mm3=max(float(np.std(volumes, ddof=1)), floor_volume),
        mean_diameter_sd_mm=max(float(np.std(diameters, ddof=1)), floor_diameter),
        repeats=repeats,
        failed=failed,
    )


def change_exceeds_uncertainty(before: float, before_sd: float, after: float, after_sd: float, z: float = Z_95) -> bool:
    """Whether ``after - before`` is larger in size than ``z`` combined standard deviations."""
    if before_sd < 0 or after_sd < 0 or z < 0:
        raise InputError("Uncertainties and the confidence factor must not be negative.")
    combined = math.hypot(before_sd, after_sd)
    return abs(after - before) > z * combined
