"""Register a follow-up chest CT to its baseline: rigid, then affine, optionally B-spline inside the lungs.

The registration runs on a coarse working copy of both scans (block averages of about 2 mm, HU clipped to the
lung/soft-tissue range), with a lung-masked Mattes mutual-information metric on random samples and a
multi-resolution pyramid, so two 512x512x300 CTs register in a few seconds on two cores. A result that did not
converge or is implausible (lungs overlap less than before or hardly at all, a scale far from 1, a mirror, lung
intensities that do not correlate) comes back as the identity with ``converged=False`` and a message; it never
raises for that. Without lung masks, air-filled regions inside the body stand in for the lungs.

Conventions: points are RAS millimetres (Slicer); :attr:`Registration.sitk_transform` follows ITK and maps baseline
LPS points to follow-up LPS points, which is what ``SimpleITK.Resample`` needs to bring the follow-up onto the
baseline grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_parts
from MedAIExtension.io.image import Image
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.tracking.registration_checks import _dice, _implausible, _matrix_lps, _motion_summary, _unrelated
from MedAIExtension.tracking.registration_stages import (
    AFFINE,
    MASK_MARGIN_MM,
    PYRAMID_MM,
    RIGID,
    WORKING_SPACING_MM,
    _bounding_box,
    _bspline_stage,
    _centroid_lps,
    _check_mask,
    _crop,
    _dilate,
    _grown_box,
    _optimise,
    _pyramid,
    _voxels,
    _working_image,
    _working_mask,
)

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["Registration", "register_followup"]

#: Lung overlap is measured within the baseline lungs' bounding box grown by this margin.
DICE_MARGIN_MM = 40.0
#: The affine stage must improve the mutual information by this much over rigid (else rigid is kept: same patient,
#: same breath-hold, and no shear from sampling noise).
AFFINE_MIN_GAIN = 0.01
_INVERSE_TOLERANCE_MM = 1e-4


@dataclass
class Registration:
    """The result of :func:`register_followup`.

    Attributes:
        followup_to_baseline_ras: 4x4; maps a follow-up RAS point to the same anatomical point in baseline RAS
            (for a deformable result: the inverse of the linear part; use :meth:`map_to_baseline` for exact points).
        baseline_to_followup_ras: 4x4; its inverse (the linear part for a deformable result).
        sitk_transform: SimpleITK transform mapping baseline LPS points to follow-up LPS points (ITK convention,
            what ``SimpleITK.Resample`` needs); a composite of affine and B-spline when deformable.
        converged: False when the registration failed or was implausible; the transform is then the identity.
        metric: final Mattes mutual information (lower is better; NaN when no registration ran).
        stages: the stages that contributed to the transform, e.g. ``["initialise: lung centroids", "rigid"]``.
        message: what happened, in words (lung overlap before/after, why a stage was dropped or why it failed).
        deformable: whether a B-spline stage is part of the transform.
        details: figures for logs: lung Dice before/after, lung correlation, scale, rotation, per-stage stops.
    """

    followup_to_baseline_ras: np.ndarray
    baseline_to_followup_ras: np.ndarray
    sitk_transform: sitk.Transform
    converged: bool
    metric: float
    stages: list[str]
    message: str
    deformable: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def map_to_baseline(self, points_ras: np.ndarray) -> np.ndarray:
        """Map follow-up RAS points, shape (N, 3) or (3,), to baseline RAS (exact inverse of a B-spline too)."""
        points, single = _points(points_ras)
        mapped = points @ self.followup_to_baseline_ras[:3, :3].T + self.followup_to_baseline_ras[:3, 3]
        if self.deformable:
            mapped = np.array([_invert_bspline_point(self.sitk_transform, p) for p in mapped]).reshape(-1, 3)
        return mapped[0] if single else mapped

    def map_to_followup(self, points_ras: np.ndarray) -> np.ndarray:
        """Map baseline RAS points, shape (N, 3) or (3,), to follow-up RAS (the forward transform)."""
        points, single = _points(points_ras)
        flip = np.array([-1.0, -1.0, 1.0])
        mapped = [self.sitk_transform.TransformPoint(tuple(float(v) for v in p * flip)) for p in points]
        out = np.array(mapped, dtype=float).reshape(-1, 3) * flip
        return out[0] if single else out

    def resample_followup(self, followup: Image, baseline: Image, label: bool = False) -> Image:
        """The follow-up resampled onto the baseline grid (linear, or nearest neighbour for ``label`` maps).

        Voxels that fall outside the follow-up get its minimum value (0 for label maps); the voxel type is kept.
        """
        import SimpleITK as sitk

        if not baseline.is_orthogonal():
            raise GeometryError(
                "The baseline axes are not perpendicular (sheared, e.g. gantry tilt). "
                "Resample the baseline series to a regular grid first."
            )
        origin, spacing, direction = affine_parts(baseline.ijk_to_lps)
        interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
        default = 0.0 if label else float(np.min(followup.array))
        out = sitk.Resample(
            followup.to_sitk(),
            baseline.size_ijk,
            self.sitk_transform,
            interpolator,
            tuple(float(v) for v in origin),
            tuple(float(v) for v in spacing),
            tuple(float(v) for v in direction.flatten()),
            default,
        )
        array = sitk.GetArrayFromImage(out)
        if followup.array.dtype == bool:
            array = array.astype(bool)
        metadata = {**followup.metadata, "description": "follow-up resampled onto the baseline grid"}
        return Image(array, baseline.ijk_to_ras.copy(), modality=followup.modality, metadata=metadata)


def _points(points_ras: np.ndarray) -> tuple[np.ndarray, bool]:
    points = np.asarray(points_ras, dtype=float)
    single = points.ndim == 1
    points = np.atleast_2d(points)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise InputError(f"Points must be finite RAS coordinates of shape (N, 3) or (3,), got shape {points.shape}.")
    return points, single


def register_followup(
    baseline: Image,
    followup: Image,
    baseline_lungs: np.ndarray | None = None,
    followup_lungs: np.ndarray | None = None,
    deformable: bool = False,
    progress: Callable[[float, str], None] | None = None,
    token: CancelToken | None = None,
) -> Registration:
    """Register a follow-up chest CT to its baseline.

    Stages: initialise (lung centroids, or the scanners' coordinates when those overlap better), rigid (Euler3D,
    3 pyramid levels: 8, 4, 2 mm), affine (4, 2 mm), and with ``deformable`` a B-spline inside the lungs (demons
    field fitted by a B-spline, see :func:`_bspline_stage`). The linear stages maximise Mattes mutual information
    of HU clipped to ``HU_WINDOW`` on random samples inside the baseline lungs dilated by ``MASK_MARGIN_MM``.
    The affine stage is used only when it raises the mutual information by ``AFFINE_MIN_GAIN`` (breathing, other
    scanner calibration), the B-spline only when it raises it at all; both must keep the lung overlap; the
    message says why a stage was not used. The rigid stage failing, or any implausible result, gives the identity
    with ``converged=False``.

    Args:
        baseline: the baseline CT (fixed image).
        followup: the follow-up CT (moving image).
        baseline_lungs: lung mask on the baseline grid (``[k, j, i]``, non-zero = lung), e.g. from
            ``tracking.lungs``. Without it the air-filled regions inside the body stand in for the lungs.
        followup_lungs: lung mask on the follow-up grid.
        deformable: add a B-spline stage (control points every ``BSPLINE_SPACING_MM``) inside the lungs.
        progress: optional ``callback(fraction, message)``.
        token: cancels the work (raises :class:`~MedAIExtension.errors.CancelledError`).

    Returns:
        The :class:`Registration`; ``converged=False`` with the identity transform when it failed.

    Raises:
        InputError: if a lung mask does not match its image grid.
        GeometryError: if an image has sheared (non-orthogonal) axes.
        CancelledError: when cancelled.
    """
    report = Progress(progress, token)
    _check_mask(baseline, baseline_lungs, "baseline")
    _check_mask(followup, followup_lungs, "follow-up")
    report(0.0, "Preparing images for registration")
    fixed, moving = _working_image(baseline), _working_image(followup)
    fixed_lungs = _working_mask(baseline, baseline_lungs, fixed)
    moving_lungs = _working_mask(followup, followup_lungs, moving)
    for name, mask, given in (
        ("baseline", fixed_lungs, baseline_lungs is not None),
        ("follow-up", moving_lungs, followup_lungs is not None),
    ):
        if _voxels(mask) == 0:
            why = (
                f"the {name} lung mask is empty (on the {WORKING_SPACING_MM:g} mm working grid)"
                if given
                else f"no lung region (air inside the body) was found in the {name} scan"
            )
            return _failed(
                f"Cannot register: {why}. Check that both scans are chest CTs and pass lung masks "
                "(tracking.lungs); the scans are left unregistered.",
                [],
                {},
            )
    region = _dilate(fixed_lungs, MASK_MARGIN_MM)
    pyramid = _pyramid(fixed, moving, region, PYRAMID_MM)
    fixed_lungs = _crop(fixed_lungs, _grown_box(_bounding_box(region), fixed, DICE_MARGIN_MM))  # overlap checks
    report(0.08, "Initialising the registration")
    initial, init_name, dice_before = _initial_transform(fixed_lungs, moving_lungs)
    stages = [f"initialise: {init_name}"]
    details: dict[str, Any] = {"lung_dice_before": dice_before}

    def attempt(
        name: str, run: Callable[[], tuple[Any, dict[str, Any]]], previous: str | None = None, min_gain: float = 0.0
    ) -> tuple[Any, str]:
        """Run a stage and say why its result cannot be used ("" when it can) compared with the ``previous`` one."""
        try:
            transform, info = run()
        except RuntimeError as error:  # SimpleITK reports its failures as RuntimeError
            details[name] = {"error": _error_text(error)}
            return None, f"SimpleITK stopped: {_error_text(error)}"
        info["lung_dice"] = _dice(fixed_lungs, moving_lungs, transform)
        details[name] = info
        floor = dice_before if previous is None else details[previous]["lung_dice"]
        problem = _implausible(transform, info, floor)
        before = details[previous]["metric"] if previous is not None else None
        if "metric_before" in info:  # measured differently from the linear stages: compare like with like
            before = info["metric_before"]
        if not problem and before is not None and info["metric"] > before - min_gain:
            problem = f"no gain over {previous} (mutual information {info['metric']:.3f} vs {before:.3f})"
        return transform, problem

    linear_end = 0.75 if deformable else 0.95
    final, problem = attempt("rigid", lambda: _optimise(pyramid, initial, RIGID, report.stage(0.1, 0.5)))
    if problem:
        return _failed(f"The rigid registration failed: {problem}. The scans are left unregistered.", stages, details)
    stages.append("rigid")
    unrelated = _unrelated(pyramid[-1], final, details)
    if unrelated:
        return _failed(unrelated, stages[:1], details)
    notes: list[str] = []
    affine, problem = attempt(
        "affine",
        lambda: _optimise(pyramid, _as_affine(final), AFFINE, report.stage(0.5, linear_end)),
        "rigid",
        AFFINE_MIN_GAIN,
    )
    if problem:
        notes.append(f"affine stage not used: {problem}")
    else:
        stages.append("affine")
        final = affine
    if deformable:
        composite, problem = attempt(
            "bspline", lambda: _bspline_stage(pyramid, final, report.stage(linear_end, 0.95)), stages[-1]
        )
        if problem:
            notes.append(f"B-spline stage not used: {problem}")
        else:
            stages.append("bspline")
            final = composite
    report(0.97, "Checking the registration")
    is_deformable = stages[-1] == "bspline"
    dice_after = details[stages[-1]]["lung_dice"]
    details["lung_dice_after"] = dice_after
    unrelated = _unrelated(pyramid[-1], final, details) if stages[-1] != "rigid" else ""
    if unrelated:
        return _failed(unrelated, stages[:1], details)
    baseline_to_followup_ras = LPS_TO_RAS @ _matrix_lps(final.GetNthTransform(0) if is_deformable else final)
    baseline_to_followup_ras = baseline_to_followup_ras @ LPS_TO_RAS
    details.update(_motion_summary(baseline_to_followup_ras))
    message = (
        f"Registered ({', '.join(stages)}): lung Dice {dice_before:.3f} before, {dice_after:.3f} after; "
        f"lung correlation {details['lung_correlation']:.2f}."
    )
    if notes:
        message += " " + "; ".join(notes) + "."
    report(1.0, "Registration done")
    return Registration(
        followup_to_baseline_ras=np.linalg.inv(baseline_to_followup_ras),
        baseline_to_followup_ras=baseline_to_followup_ras,
        sitk_transform=final,
        converged=True,
        metric=float(details[stages[-1]]["metric"]),
        stages=stages,
        message=message,
        deformable=is_deformable,
        details=details,
    )


def _as_affine(transform: Any) -> sitk.AffineTransform:  # an Euler3D sitk transform
    """An ``AffineTransform`` equal to a linear transform (Euler3D)."""
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    return affine


def _initial_transform(fixed_lungs: sitk.Image, moving_lungs: sitk.Image) -> tuple[sitk.Transform, str, float]:
    """The better of two starts (lung overlap): scanner coordinates as they are, or lung centroids on each other."""
    import SimpleITK as sitk

    center = _centroid_lps(fixed_lungs)
    identity = sitk.Euler3DTransform()
    identity.SetCenter(tuple(float(v) for v in center))
    shifted = sitk.Euler3DTransform(identity)
    shifted.SetTranslation(tuple(float(v) for v in _centroid_lps(moving_lungs) - center))
    dice_identity = _dice(fixed_lungs, moving_lungs, identity)
    dice_shifted = _dice(fixed_lungs, moving_lungs, shifted)
    if dice_shifted > dice_identity:
        return shifted, "lung centroids", dice_identity
    return identity, "scanner coordinates", dice_identity


def _invert_bspline_point(composite: Any, baseline_linear_ras: np.ndarray) -> np.ndarray:
    """Baseline point x with Composite([A, B])(x) = A(B(x)) = q, given y = A^-1(q) (RAS): solve x + d(x) = y.

    Fixed-point iteration x <- x + (y - B(x)); it converges because the smooth displacement changes by far less
    than 1 mm per mm (the stage is dropped when its Jacobian determinant approaches folding).
    """
    bspline = composite.GetNthTransform(1)
    y = np.asarray(baseline_linear_ras, dtype=float) * np.array([-1.0, -1.0, 1.0])
    x = y.copy()
    for _ in range(100):
        displaced = np.array(bspline.TransformPoint(tuple(float(v) for v in x)))
        step = y - displaced
        x = x + step
        if np.linalg.norm(step) < _INVERSE_TOLERANCE_MM:
            break
    return x * np.array([-1.0, -1.0, 1.0])


def _failed(message: str, stages: list[str], details: dict[str, Any] | None = None) -> Registration:
    import SimpleITK as sitk

    return Registration(
        followup_to_baseline_ras=np.eye(4),
        baseline_to_followup_ras=np.eye(4),
        sitk_transform=sitk.Euler3DTransform(),
        converged=False,
        metric=float("nan"),
        stages=list(stages),
        message=message,
        deformable=False,
        details=dict(details or {}),
    )


def _error_text(error: BaseException) -> str:
    """The informative part of a SimpleITK error (its last line)."""
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
