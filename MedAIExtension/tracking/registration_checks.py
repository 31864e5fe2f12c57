"""The plausibility checks of the follow-up registration: lung overlap (Dice), lung intensity correlation,
scale, mirror and Jacobian limits, and the motion summary of a transform.

Helpers of :func:`MedAIExtension.tracking.registration.register_followup`. SimpleITK is imported lazily.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.tracking.registration_stages import _Level

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__: list[str] = []  # private helpers of tracking.registration

#: Plausibility limits.
MIN_LUNG_DICE = 0.7
MIN_LUNG_CORRELATION = 0.4
#: A stage may lose this much lung Dice (nearest-neighbour noise) and still count as no worse.
DICE_TOLERANCE = 0.01
SCALE_LIMITS = (0.8, 1.25)
#: The deformable stage is dropped when its Jacobian determinant falls below this (near-folding).
MIN_JACOBIAN = 0.3


def _dice(fixed_lungs: sitk.Image, moving_lungs: sitk.Image, transform: sitk.Transform) -> float:
    """Dice of the baseline lungs and the follow-up lungs mapped onto the baseline grid, in the common field of view.

    Baseline voxels that map outside the follow-up scan do not count, so a follow-up that covers only part of
    the lungs is not penalised.
    """
    import SimpleITK as sitk

    outside = 2
    mapped = sitk.Resample(moving_lungs, fixed_lungs, transform, sitk.sitkNearestNeighbor, outside, sitk.sitkUInt8)
    mapped_array = sitk.GetArrayViewFromImage(mapped)
    common = mapped_array != outside
    a = (sitk.GetArrayViewFromImage(fixed_lungs) > 0) & common
    b = mapped_array == 1
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else 0.0


def _lung_correlation(level: _Level, transform: sitk.Transform) -> float:
    """Pearson correlation of the clipped HU inside the (dilated) baseline lungs after registration."""
    import SimpleITK as sitk

    mapped = sitk.Resample(level.moving, level.fixed, transform, sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    inside = sitk.GetArrayViewFromImage(level.region) > 0
    a = sitk.GetArrayViewFromImage(level.fixed)[inside].astype(float)
    b = sitk.GetArrayViewFromImage(mapped)[inside].astype(float)
    valid = np.isfinite(b)
    if np.count_nonzero(valid) < 100:
        return 0.0
    a, b = a[valid], b[valid]
    spread = a.std() * b.std()
    return float(np.mean((a - a.mean()) * (b - b.mean())) / spread) if spread > 0 else 0.0


def _unrelated(level: _Level, transform: Any, details: dict[str, Any]) -> str:
    """A failure message when the lung intensities do not correlate after ``transform`` (else ""); records it."""
    correlation = _lung_correlation(level, transform)
    details["lung_correlation"] = correlation
    if correlation >= MIN_LUNG_CORRELATION:
        return ""
    return (
        f"After registration the lung intensities hardly correlate ({correlation:.2f} < {MIN_LUNG_CORRELATION}): "
        "the scans look unrelated (another patient or body region?). The scans are left unregistered."
    )


def _implausible(transform: Any, info: dict[str, Any], dice_before: float) -> str:
    """Why a stage's result cannot be trusted, or ``""``."""
    if not info.get("optimizer_converged", True):
        return f"the optimiser did not converge ({info['stop']})"
    if not math.isfinite(info["metric"]):
        return "the similarity metric is not finite"
    if info.get("min_jacobian", 1.0) < MIN_JACOBIAN:
        return f"the deformation nearly folds (Jacobian determinant {info['min_jacobian']:.2f} < {MIN_JACOBIAN})"
    linear = transform.GetNthTransform(0) if transform.GetName() == "CompositeTransform" else transform
    matrix = np.array(linear.GetMatrix(), dtype=float).reshape(3, 3)
    if np.linalg.det(matrix) <= 0:
        return "the transform mirrors the patient"
    singular = np.linalg.svd(matrix, compute_uv=False)
    if singular.min() < SCALE_LIMITS[0] or singular.max() > SCALE_LIMITS[1]:
        return f"scale {singular.min():.2f}..{singular.max():.2f} is far from 1"
    dice = info["lung_dice"]
    if dice < dice_before - DICE_TOLERANCE:
        return f"the lungs overlap less afterwards (Dice {dice:.3f} < {dice_before:.3f})"
    if dice < MIN_LUNG_DICE:
        return f"the lungs hardly overlap (Dice {dice:.3f} < {MIN_LUNG_DICE})"
    return ""


def _matrix_lps(transform: Any) -> np.ndarray:  # an Euler3D or affine sitk transform
    """4x4 matrix of a linear SimpleITK transform (Euler, affine: x -> A (x - c) + t + c)."""
    matrix = np.array(transform.GetMatrix(), dtype=float).reshape(3, 3)
    center = np.array(transform.GetCenter(), dtype=float)
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = np.array(transform.GetTranslation(), dtype=float) + center - matrix @ center
    return out


def _motion_summary(baseline_to_followup_ras: np.ndarray) -> dict[str, float]:
    linear = baseline_to_followup_ras[:3, :3]
    u, singular, vt = np.linalg.svd(linear)
    rotation = u @ vt
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(rotation) - 1.0) / 2.0))))
    return {
        "rotation_deg": angle,
        "scale_min": float(singular.min()),
        "scale_max": float(singular.max()),
        "translation_mm": float(np.linalg.norm(baseline_to_followup_ras[:3, 3])),
    }
