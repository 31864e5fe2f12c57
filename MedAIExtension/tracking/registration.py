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

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from MedAIExtension.errors import CancelledError, GeometryError, InputError
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_parts
from MedAIExtension.io.image import Image
from MedAIExtension.progress import CancelToken, Progress

__all__ = ["Registration", "register_followup"]

#: Target voxel size (mm) of the working copies the optimiser sees.
WORKING_SPACING_MM = 2.0
#: HU window of the working copies: air .. dense soft tissue; bone and metal are clipped.
HU_WINDOW = (-1000.0, 400.0)
#: The metric looks at the lungs dilated by this margin, so the lung/chest-wall boundary counts.
MASK_MARGIN_MM = 8.0
#: Plausibility limits.
MIN_LUNG_DICE = 0.7
MIN_LUNG_CORRELATION = 0.4
#: A stage may lose this much lung Dice (nearest-neighbour noise) and still count as no worse.
DICE_TOLERANCE = 0.01
#: Lung overlap is measured within the baseline lungs' bounding box grown by this margin.
DICE_MARGIN_MM = 40.0
SCALE_LIMITS = (0.8, 1.25)
#: The affine stage must improve the mutual information by this much over rigid (else rigid is kept: same patient,
#: same breath-hold, and no shear from sampling noise).
AFFINE_MIN_GAIN = 0.01
#: Control-point spacing of the B-spline grid.
BSPLINE_SPACING_MM = 40.0
#: Demons iterations per level (8 mm, 4 mm) of the deformable stage.
DEMONS_ITERATIONS = 25
#: The deformable stage is dropped when its Jacobian determinant falls below this (near-folding).
MIN_JACOBIAN = 0.3

_SEED = 20240607
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
    sitk_transform: Any
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


def _as_affine(transform: Any) -> Any:
    """An ``AffineTransform`` equal to a linear transform (Euler3D)."""
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    return affine


# ---- inputs ---------------------------------------------------------------------------------------------------


def _check_mask(image: Image, mask: np.ndarray | None, name: str) -> None:
    if mask is None:
        return
    shape = np.shape(mask)
    if shape != image.shape:
        raise InputError(
            f"The {name} lung mask has shape {shape} but the {name} image has {image.shape} (k, j, i). "
            f"Pass a mask computed on the {name} image grid."
        )


def _shrink_factors(image: Image) -> list[int]:
    return [max(1, int(round(WORKING_SPACING_MM / float(s)))) for s in image.spacing]


def _working_image(image: Image) -> Any:
    """A float32 copy at about ``WORKING_SPACING_MM`` (block averages), HU clipped to ``HU_WINDOW``."""
    import SimpleITK as sitk

    factors = _shrink_factors(image)
    source = image.to_sitk()
    if any(f > 1 for f in factors):
        source = sitk.BinShrink(source, factors)
    return sitk.Clamp(sitk.Cast(source, sitk.sitkFloat32), sitk.sitkFloat32, HU_WINDOW[0], HU_WINDOW[1])


def _working_mask(image: Image, mask: np.ndarray | None, work: Any) -> Any:
    """The lung mask on the working grid (uint8): the given one (block majority), or air regions inside the body."""
    import SimpleITK as sitk

    if mask is None:
        return _air_inside_body(image, work)
    source = image.with_array((np.asarray(mask) != 0).view(np.uint8)).to_sitk()
    factors = _shrink_factors(image)
    if any(f > 1 for f in factors):
        source = sitk.BinShrink(source, factors)  # rounded block mean of 0/1: majority vote
    out = sitk.Cast(source > 0, sitk.sitkUInt8)
    out.CopyInformation(work)
    return out


def _air_inside_body(image: Image, work: Any) -> Any:
    """Stand-in lung mask: air-like regions (< -400 HU) of at least 100 ml that do not touch the in-plane borders.

    The in-plane borders are the faces of the two array axes least aligned with the body axis (S); air outside
    the body touches them, while lungs and airways do not (the trachea may leave through the top slice).
    """
    import SimpleITK as sitk

    voxel_ml = float(np.prod(work.GetSpacing())) / 1000.0
    components = sitk.RelabelComponent(
        sitk.ConnectedComponent(work < -400.0), minimumObjectSize=int(100.0 / voxel_ml), sortByObjectSize=True
    )
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(components)
    size = np.array(work.GetSize())
    body_axis = int(np.argmax(np.abs(image.direction_ras[2, :])))  # i, j or k: the one closest to S
    keep = []
    for label in stats.GetLabels():
        box = stats.GetBoundingBox(label)  # (x, y, z, sx, sy, sz) in index units
        start, extent = np.array(box[:3]), np.array(box[3:])
        touches = [(start[a] == 0 or start[a] + extent[a] >= size[a]) for a in range(3) if a != body_axis]
        if not any(touches):
            keep.append(label)
    array = np.isin(sitk.GetArrayViewFromImage(components), keep[:3]).astype(np.uint8)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(work)
    return out


def _voxels(mask: Any) -> int:
    import SimpleITK as sitk

    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))


def _dilate(mask: Any, margin_mm: float) -> Any:
    import SimpleITK as sitk

    radius = [max(1, int(math.ceil(margin_mm / s))) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius, sitk.sitkBall)


# ---- stages ---------------------------------------------------------------------------------------------------


def _centroid_lps(mask: Any) -> np.ndarray:
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return np.array(stats.GetCentroid(1))


def _initial_transform(fixed_lungs: Any, moving_lungs: Any) -> tuple[Any, str, float]:
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


@dataclass(frozen=True)
class _Level:
    """One pyramid level: block-averaged copies of both scans and the baseline metric region."""

    fixed: Any
    moving: Any
    region: Any
    spacing_mm: float


def _pyramid(fixed: Any, moving: Any, region: Any, levels_mm: tuple[float, ...]) -> list[_Level]:
    """Block-averaged copies at about each of ``levels_mm`` voxel sizes; the baseline is cropped to the region.

    Block averaging both shrinks and smooths (a box filter of the block's size), and unlike ITK's built-in pyramid
    it also shrinks the follow-up, which keeps every level cheap.
    """
    import SimpleITK as sitk

    out = []
    for target in levels_mm:
        fixed_factors = [max(1, int(round(target / s))) for s in fixed.GetSpacing()]
        moving_factors = [max(1, int(round(target / s))) for s in moving.GetSpacing()]
        f = sitk.BinShrink(fixed, fixed_factors) if max(fixed_factors) > 1 else fixed
        m = sitk.BinShrink(moving, moving_factors) if max(moving_factors) > 1 else moving
        r = region
        if max(fixed_factors) > 1:
            r = sitk.Cast(sitk.BinShrink(sitk.Cast(region, sitk.sitkFloat32), fixed_factors) > 0, sitk.sitkUInt8)
        box = _bounding_box(r)
        out.append(_Level(_crop(f, box), m, _crop(r, box), target))
    return out


@dataclass(frozen=True)
class _Settings:
    """One linear stage: pyramid levels, first step (in voxels of the level) and stop rules."""

    name: str
    levels: tuple[int, ...]  # indices into the pyramid
    first_step_voxels: float
    min_step_mm: float
    iterations: int


#: Metric samples per level of the linear stages (random, inside the dilated lungs).
LINEAR_SAMPLES = 40_000
RIGID = _Settings("rigid", levels=(0, 1, 2), first_step_voxels=1.0, min_step_mm=0.01, iterations=200)
AFFINE = _Settings("affine", levels=(1, 2), first_step_voxels=0.25, min_step_mm=0.01, iterations=200)
PYRAMID_MM = (4 * WORKING_SPACING_MM, 2 * WORKING_SPACING_MM, WORKING_SPACING_MM)


def _optimise(pyramid: list[_Level], initial: Any, settings: _Settings, report: Progress) -> tuple[Any, dict[str, Any]]:
    """Run one linear stage level by level; returns the optimised transform and its figures.

    Regular-step gradient descent; the parameter scales make one unit of step about one millimetre of motion of a
    typical lung point (see :func:`_parameter_scales`). A level that ends worse than it started is undone. The
    reported metric is the finest level's, on the same samples for every linear stage (comparable).
    """
    transform = type(initial)(initial)
    scales = _parameter_scales(transform, pyramid[-1].region)
    stops = []
    metric = float("nan")
    for index, level_index in enumerate(settings.levels):
        level = pyramid[level_index]
        method = _method(level, LINEAR_SAMPLES)
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=settings.first_step_voxels * level.spacing_mm,
            minStep=settings.min_step_mm,
            numberOfIterations=settings.iterations,
            relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-8,
        )
        method.SetOptimizerScales(scales)
        start = type(transform)(transform)
        method.SetInitialTransform(transform, inPlace=True)
        stage = report.stage(index / len(settings.levels), (index + 1) / len(settings.levels))
        reporter = _Reporter(
            stage, f"Registration: {settings.name}", method.GetOptimizerIteration, 10, method.GetMetricValue
        )
        reporter.attach(method)
        method.Execute(level.fixed, level.moving)
        reporter.finish()
        stops.append(method.GetOptimizerStopConditionDescription())
        if reporter.first_value is None or reporter.last_value is None:  # stopped before its first step
            metric = float(method.MetricEvaluate(level.fixed, level.moving))
        elif reporter.last_value > reporter.first_value:
            transform.SetParameters(start.GetParameters())
            metric = reporter.first_value
            stops[-1] += " (level undone: no improvement)"
        else:
            metric = reporter.last_value
    converged = "Maximum number of iterations" not in stops[-1]
    return transform, {"metric": metric, "stop": stops[-1], "optimizer_converged": converged}


def _parameter_scales(transform: Any, region: Any) -> list[float]:
    """Optimizer scales: the squared motion (mm²) of the lung points per unit change of each parameter.

    ITK divides the gradient by these, so translations (1 mm per unit) and rotations or matrix entries (about the
    lungs' radius in mm per unit) take comparable steps. Computed from the spread of the metric region around the
    transform's centre, for Euler3D (3 angles, 3 shifts) and affine (9 matrix entries, 3 shifts) transforms.
    """
    import SimpleITK as sitk

    points = np.argwhere(sitk.GetArrayViewFromImage(region) > 0)[:, ::-1][::50].astype(float)
    physical = np.array([region.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in points[:4000]])
    spread = ((physical - np.array(transform.GetCenter())) ** 2).mean(axis=0)  # per LPS axis, mm²
    if transform.GetName() == "Euler3DTransform":
        rotations = [spread[1] + spread[2], spread[0] + spread[2], spread[0] + spread[1]]
        return [*(float(v) for v in rotations), 1.0, 1.0, 1.0]
    return [*(float(spread[column]) for _row in range(3) for column in range(3)), 1.0, 1.0, 1.0]


def _method(level: _Level, samples: int) -> Any:
    """A registration method on one level: masked Mattes MI on about ``samples`` random points."""
    import SimpleITK as sitk

    voxels = float(np.prod(level.fixed.GetSize()))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricFixedMask(level.region)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(min(1.0, samples / voxels), _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.MetricUseFixedImageGradientFilterOff()
    method.MetricUseMovingImageGradientFilterOff()
    return method


def _bounding_box(mask: Any) -> tuple[int, ...]:
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return tuple(int(v) for v in stats.GetBoundingBox(1))


def _grown_box(box: tuple[int, ...], image: Any, margin_mm: float) -> tuple[int, ...]:
    """``box`` (index start, size) grown by ``margin_mm`` on every side, clipped to ``image``."""
    grow = [int(math.ceil(margin_mm / s)) for s in image.GetSpacing()]
    start = [max(0, box[a] - grow[a]) for a in range(3)]
    stop = [min(image.GetSize()[a], box[a] + box[a + 3] + grow[a]) for a in range(3)]
    return (*start, *(stop[a] - start[a] for a in range(3)))


def _crop(image: Any, box: tuple[int, ...]) -> Any:
    import SimpleITK as sitk

    return sitk.RegionOfInterest(image, box[3:], box[:3])


class _Reporter:
    """Progress from inside SimpleITK callbacks, which cannot raise: a cancel stops the filter and is kept for later.

    Call :meth:`attach` before ``Execute`` and :meth:`finish` after it; ``finish`` re-raises a cancellation.
    """

    def __init__(
        self,
        report: Progress,
        message: str,
        iterations: Callable[[], int],
        expected: int,
        value: Callable[[], float] | None = None,
    ) -> None:
        self.report, self.message, self.iterations, self.expected = report, message, iterations, expected
        self.value = value
        self.pending: CancelledError | None = None
        #: the metric at the start position and at the last position the optimiser evaluated (before its last,
        #: smallest step): the optimiser's own figures, comparable with each other
        self.first_value: float | None = None
        self.last_value: float | None = None

    def attach(self, process: Any) -> None:
        import SimpleITK as sitk

        def on_iteration() -> None:
            if self.pending is not None:
                return
            if self.value is not None:
                self.last_value = float(self.value())
                if self.first_value is None:
                    self.first_value = self.last_value
            try:
                self.report.check()
                fraction = 1.0 - 0.5 ** (self.iterations() / self.expected)
                self.report.callback(self.report.start + (self.report.end - self.report.start) * fraction, self.message)
            except CancelledError as error:  # also raised by a Progress passed as the callback
                self.pending = error
                process.StopRegistration()

        process.AddCommand(sitk.sitkIterationEvent, on_iteration)

    def finish(self) -> None:
        if self.pending is not None:
            raise self.pending
        self.report.check()


def _bspline_stage(pyramid: list[_Level], linear: Any, report: Progress) -> tuple[Any, dict[str, Any]]:
    """A B-spline inside the lungs on top of ``linear``; returns ``Composite([linear, bspline])`` and figures.

    Symmetric-forces demons (8 then 4 mm) give a dense displacement over the lungs' bounding box after the linear
    alignment; it is faded out beyond the lungs (+ ``MASK_MARGIN_MM``) and fitted by least squares with a cubic
    B-spline whose control points are ``BSPLINE_SPACING_MM`` apart. (Optimising the B-spline through ITK's metric
    costs O(samples x control points) per iteration, about a minute; this costs seconds.)
    """
    import SimpleITK as sitk

    level = pyramid[1]
    fixed = level.fixed
    moving = sitk.Resample(level.moving, fixed, linear, sitk.sitkLinear, HU_WINDOW[0], sitk.sitkFloat32)
    field = None
    for index, factor in enumerate((2, 1)):
        f = sitk.BinShrink(fixed, [factor] * 3) if factor > 1 else fixed
        m = sitk.BinShrink(moving, [factor] * 3) if factor > 1 else moving
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(DEMONS_ITERATIONS)
        demons.SetStandardDeviations(2.0)  # voxels: 8 mm, then 16 mm on the coarse level
        reporter = _Reporter(
            report.stage(index / 2, (index + 1) / 2),
            "Registration: deformable",
            demons.GetElapsedIterations,
            DEMONS_ITERATIONS // 3,
        )
        reporter.attach(demons)
        if field is None:
            field = demons.Execute(f, m)
        else:
            start = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(f, m, start)
        reporter.finish()
    weight = sitk.SmoothingRecursiveGaussian(sitk.Cast(level.region, sitk.sitkFloat32), MASK_MARGIN_MM / 2.0)
    displacement = sitk.GetArrayFromImage(field) * np.clip(sitk.GetArrayFromImage(weight), 0.0, 1.0)[..., None]
    bspline = _fit_bspline(displacement, fixed, BSPLINE_SPACING_MM)
    composite = sitk.CompositeTransform([type(linear)(linear), bspline])
    to_field = sitk.TransformToDisplacementFieldFilter()
    to_field.SetReferenceImage(fixed)
    to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
    dense = to_field.Execute(bspline)
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(dense))
    info = {
        "metric": _metric_value(pyramid[-1], composite),
        "metric_before": _metric_value(pyramid[-1], linear),
        "stop": f"demons, {2 * DEMONS_ITERATIONS} iterations",
        "optimizer_converged": True,
        "min_jacobian": float(jacobian.min()),
        "max_displacement_mm": float(np.linalg.norm(sitk.GetArrayViewFromImage(dense), axis=-1).max()),
    }
    return composite, info


def _fit_bspline(displacement: np.ndarray, reference: Any, spacing_mm: float) -> Any:
    """Least-squares cubic B-spline through a displacement array (``[k, j, i, 3]``, LPS mm) on ``reference``'s grid.

    The control grid spans the reference grid with about ``spacing_mm`` between control points (mesh + 3 per
    axis); the fit is separable: one small ridge-regularised solve per axis.
    """
    import SimpleITK as sitk

    size = np.array(reference.GetSize())
    voxel = np.array(reference.GetSpacing())
    extent = size * voxel
    mesh = np.maximum(1, np.round(extent / spacing_mm)).astype(int)
    step = extent / mesh
    solvers = []
    for axis in range(3):
        # continuous control-grid index of each voxel centre; control point 0 sits one step before the grid edge
        s = (np.arange(size[axis]) + 0.5) * voxel[axis] / step[axis] + 1.0
        basis = _cubic_bspline(s[:, None] - np.arange(mesh[axis] + 3)[None, :])
        gram = basis.T @ basis
        gram += np.eye(len(gram)) * 1e-3 * float(np.trace(gram)) / len(gram)
        solvers.append(np.linalg.solve(gram, basis.T))  # (controls, voxels)
    coefficients = np.einsum("ak,bj,ci,kjid->abcd", solvers[2], solvers[1], solvers[0], displacement, optimize=True)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    origin = np.array(reference.GetOrigin()) + direction @ (-step - 0.5 * voxel)
    images = []
    for d in range(3):
        image = sitk.GetImageFromArray(np.ascontiguousarray(coefficients[..., d]))
        image.SetOrigin(tuple(float(v) for v in origin))
        image.SetSpacing(tuple(float(v) for v in step))
        image.SetDirection(reference.GetDirection())
        images.append(image)
    return sitk.BSplineTransform(images, 3)


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    """The centred cubic B-spline basis function."""
    t = np.abs(t)
    return np.where(t < 1.0, (4.0 - 6.0 * t**2 + 3.0 * t**3) / 6.0, np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0))


def _metric_value(level: _Level, transform: Any) -> float:
    """Mattes mutual information after ``transform`` on one level (the figure the linear stages report).

    The follow-up is resampled first, so evaluating the metric never differentiates a B-spline's parameters.
    """
    import SimpleITK as sitk

    mapped = sitk.Resample(level.moving, level.fixed, transform, sitk.sitkLinear, HU_WINDOW[0], sitk.sitkFloat32)
    method = _method(level, 40_000)
    method.SetInitialTransform(sitk.TranslationTransform(3))
    return float(method.MetricEvaluate(level.fixed, mapped))


# ---- checks ---------------------------------------------------------------------------------------------------


def _dice(fixed_lungs: Any, moving_lungs: Any, transform: Any) -> float:
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


def _lung_correlation(level: _Level, transform: Any) -> float:
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


def _matrix_lps(transform: Any) -> np.ndarray:
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
