"""The stages of the follow-up registration: coarse working copies and lung masks, the multi-resolution
pyramid, the linear (rigid, affine) optimiser with its progress reporter, and the deformable B-spline stage.

Helpers of :func:`MedAIExtension.tracking.registration.register_followup`, where the method is described.
SimpleITK is imported lazily inside the functions that need it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.progress import Progress

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__: list[str] = []  # private helpers of tracking.registration

#: Target voxel size (mm) of the working copies the optimiser sees.
WORKING_SPACING_MM = 2.0
#: HU window of the working copies: air .. dense soft tissue; bone and metal are clipped.
HU_WINDOW = (-1000.0, 400.0)
#: The metric looks at the lungs dilated by this margin, so the lung/chest-wall boundary counts.
MASK_MARGIN_MM = 8.0
#: Control-point spacing of the B-spline grid.
BSPLINE_SPACING_MM = 40.0
#: Demons iterations per level (8 mm, 4 mm) of the deformable stage.
DEMONS_ITERATIONS = 25
_SEED = 20240607


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


def _working_image(image: Image) -> sitk.Image:
    """A float32 copy at about ``WORKING_SPACING_MM`` (block averages), HU clipped to ``HU_WINDOW``."""
    import SimpleITK as sitk

    factors = _shrink_factors(image)
    source = image.to_sitk()
    if any(f > 1 for f in factors):
        source = sitk.BinShrink(source, factors)
    return sitk.Clamp(sitk.Cast(source, sitk.sitkFloat32), sitk.sitkFloat32, HU_WINDOW[0], HU_WINDOW[1])


def _working_mask(image: Image, mask: np.ndarray | None, work: sitk.Image) -> sitk.Image:
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


def _air_inside_body(image: Image, work: sitk.Image) -> sitk.Image:
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


def _voxels(mask: sitk.Image) -> int:
    import SimpleITK as sitk

    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))


def _dilate(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    import SimpleITK as sitk

    radius = [max(1, int(math.ceil(margin_mm / s))) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius, sitk.sitkBall)


def _centroid_lps(mask: sitk.Image) -> np.ndarray:
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return np.array(stats.GetCentroid(1))


@dataclass(frozen=True)
class _Level:
    """One pyramid level: block-averaged copies of both scans and the baseline metric region."""

    fixed: sitk.Image
    moving: sitk.Image
    region: sitk.Image
    spacing_mm: float


def _pyramid(fixed: sitk.Image, moving: sitk.Image, region: sitk.Image, levels_mm: tuple[float, ...]) -> list[_Level]:
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


def _parameter_scales(transform: Any, region: sitk.Image) -> list[float]:
    """Optimizer scales of an Euler3D or affine ``transform``: the squared motion (mm²) of the lung points per unit
    change of each parameter.

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


def _method(level: _Level, samples: int) -> sitk.ImageRegistrationMethod:
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


def _bounding_box(mask: sitk.Image) -> tuple[int, ...]:
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return tuple(int(v) for v in stats.GetBoundingBox(1))


def _grown_box(box: tuple[int, ...], image: sitk.Image, margin_mm: float) -> tuple[int, ...]:
    """``box`` (index start, size) grown by ``margin_mm`` on every side, clipped to ``image``."""
    grow = [int(math.ceil(margin_mm / s)) for s in image.GetSpacing()]
    start = [max(0, box[a] - grow[a]) for a in range(3)]
    stop = [min(image.GetSize()[a], box[a] + box[a + 3] + grow[a]) for a in range(3)]
    return (*start, *(stop[a] - start[a] for a in range(3)))


def _crop(image: sitk.Image, box: tuple[int, ...]) -> sitk.Image:
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

    def attach(self, process: sitk.ImageRegistrationMethod | sitk.FastSymmetricForcesDemonsRegistrationFilter) -> None:
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
    assert field is not None, "the loop above runs twice"
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


def _fit_bspline(displacement: np.ndarray, reference: sitk.Image, spacing_mm: float) -> sitk.BSplineTransform:
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


def _metric_value(level: _Level, transform: sitk.Transform) -> float:
    """Mattes mutual information after ``transform`` on one level (the figure the linear stages report).

    The follow-up is resampled first, so evaluating the metric never differentiates a B-spline's parameters.
    """
    import SimpleITK as sitk

    mapped = sitk.Resample(level.moving, level.fixed, transform, sitk.sitkLinear, HU_WINDOW[0], sitk.sitkFloat32)
    method = _method(level, 40_000)
    method.SetInitialTransform(sitk.TranslationTransform(3))
    return float(method.MetricEvaluate(level.fixed, mapped))
