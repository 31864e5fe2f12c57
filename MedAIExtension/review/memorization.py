"""Memorization check: is a synthetic image a near-copy of a real (training) image?

Generative models can reproduce their training images (Dar et al., 2024, for diffusion models of CT). Before a
synthetic set is shared, every synthetic image is compared with every real image:

1. **Pre-filter** — each volume is windowed to [-1000, 1000] HU and block-averaged to a coarse grid of at most
   16 voxels a side; the Pearson correlation of these coarse volumes ranks the real images and only the
   ``candidates`` most similar ones go on (a shift of a few voxels or a few degrees of rotation hardly changes a
   16³ copy, so a true parent is always among them).
2. **Alignment** — the candidates and the synthetic image, block-averaged to at most 64 voxels a side, are aligned
   by translation with FFT phase correlation to a quarter of a working voxel
   (``skimage.registration.phase_cross_correlation``, ``upsample_factor=4``) and scored by the similarity below after
   that sub-voxel shift. The ``refine`` best (default 2) then get a quick rigid SimpleITK registration (Euler 3D,
   correlation metric, two levels) started from it, which absorbs rotations of a few degrees; the highest refined
   similarity decides. Whole-voxel shifts alone are not enough at fine input voxels: a residual half-voxel shift
   ruins the fine band below, so an unrotated other scan of the same patient outranked the true (rotated) parent and
   took the only refinement (128³ benchmark, similarity 0.85 instead of 0.96).
3. **Similarity** — the Pearson correlation, on the overlap after alignment, of the two band-passed volumes
   (difference of Gaussians, σ 0.5 and 1.5 working voxels). The band-pass keeps the patient-specific detail (vessels,
   airways, nodules, lung texture, organ borders) and removes the body outline that every chest CT shares, so
   two different patients score low even though their coarse anatomy correlates highly; independent noise and a
   global intensity scale or offset hardly change it. Because it is computed on the working grid of at most 64
   voxels a side, the band has about the same extent in the body whatever the input resolution. The finest band
   also carries the image's own noise and texture: at 128³ (2.8 mm) another scan of the same phantom patient with
   independent noise (σ 15–35 HU) scores only 0.81–0.93 against a rotated copy, about as much as the closest other
   patients, so the check finds copies of an image, not other images of its patient.

``flagged = similarity >= threshold``. The default threshold (:data:`DEFAULT_THRESHOLD`) flags a real image that
was shifted by a few voxels, rotated by up to 3°, rescaled in intensity by a few per cent and given new noise, and
no image of another phantom patient (``random_phantom_spec`` with other seeds): near-copies score ≥ 0.94 and other
patients ≤ 0.35 on 64x64x48 phantoms at 5–6 mm, ≥ 0.96 and ≤ 0.59 on 96x96x80 ones at 3.75–4.5 mm
(``Testing/unit/test_review_memorization.py``), ≥ 0.95 and ≤ 0.84 on 200 + 200 128³ ones at 2.8 mm
(``bench/review.py``). A real
image with an inserted lesion is deliberately still a near-copy: the rest of the patient is identifiable, so a
lesion-insertion output built on a real image is flagged, and its provenance (parent real image) tells the reviewer
it is expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.progress import Progress
from MedAIExtension.review.features import common_grid

__all__ = ["DEFAULT_THRESHOLD", "MemorizationMatch", "memorization_check", "near_copy_similarity"]

#: Similarity at or above which a synthetic image counts as a near-copy of a real one.
DEFAULT_THRESHOLD = 0.9

_WINDOW = (-1000.0, 1000.0)
_WORK_SIZE = 64
_COARSE_SIZE = 16
_DOG_SIGMAS = (0.5, 1.5)
_MIN_OVERLAP = 0.5
_SAMPLING = 0.1
_SEED = 20240607
_ITERATIONS = 30
_SHRINK = (2, 1)
_UPSAMPLE = 4


@dataclass(frozen=True)
class MemorizationMatch:
    """The nearest real image of one synthetic image.

    Attributes:
        synthetic_index: position of the synthetic image in the input sequence.
        synthetic_id: its id (``metadata["id"]`` when set, else the index as text).
        real_index: position of the nearest real image.
        real_id: its id (``metadata["id"]`` when set, else the index as text).
        similarity: band-passed correlation after alignment, in [-1, 1] (1 = identical detail).
        shift_voxels: the translation (k, j, i) in working-grid voxels that aligned them.
        flagged: whether ``similarity >= threshold`` (a near-copy).
        threshold: the threshold used.
    """

    synthetic_index: int
    synthetic_id: str
    real_index: int
    real_id: str
    similarity: float
    shift_voxels: tuple[float, float, float]
    flagged: bool
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        data = asdict(self)
        data["shift_voxels"] = list(self.shift_voxels)
        return data


def _image_id(image: Image, index: int) -> str:
    value = image.metadata.get("id") if isinstance(image.metadata, dict) else None
    return str(value) if value not in (None, "") else str(index)


def _block_mean(data: np.ndarray, limit: int) -> np.ndarray:
    factor = max(1, math.ceil(max(data.shape) / limit))
    if factor == 1:
        return data
    k, j, i = (max(s // factor, 1) * factor for s in data.shape)
    padded = data
    if any(a > s for a, s in zip((k, j, i), data.shape)):  # an axis shorter than the factor: pad by edge values
        padded = np.pad(data, [(0, max(a - s, 0)) for a, s in zip((k, j, i), data.shape)], mode="edge")
    padded = padded[:k, :j, :i]
    return padded.reshape(k // factor, factor, j // factor, factor, i // factor, factor).mean(axis=(1, 3, 5))


@dataclass(frozen=True, eq=False)
class _Prepared:
    work: np.ndarray  # windowed, block-averaged volume
    detail: np.ndarray  # its band-pass
    coarse: np.ndarray  # z-scored flattened coarse volume


def _band_pass(work: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(work, _DOG_SIGMAS[0]) - ndimage.gaussian_filter(work, _DOG_SIGMAS[1])


def _prepare(image: Image) -> _Prepared:
    low, high = _WINDOW
    data = np.clip(image.array.astype(np.float32), low, high)
    work = _block_mean(data, _WORK_SIZE).astype(np.float32)
    detail = _band_pass(work)
    coarse = _block_mean(work, _COARSE_SIZE).ravel().astype(np.float64)
    coarse -= coarse.mean()
    norm = float(np.linalg.norm(coarse))
    return _Prepared(work, detail.astype(np.float32), coarse / norm if norm > 0 else coarse)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def _overlap(shape: tuple[int, ...], shift: np.ndarray) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of the fixed and the moving volume that overlap when moving is translated by ``shift``."""
    fixed, moving = [], []
    for size, s in zip(shape, np.rint(shift).astype(int)):
        s = int(np.clip(s, -size + 1, size - 1))
        if s >= 0:
            fixed.append(slice(s, size))
            moving.append(slice(0, size - s))
        else:
            fixed.append(slice(0, size + s))
            moving.append(slice(-s, size))
    return tuple(fixed), tuple(moving)


def _translation(real: _Prepared, synthetic: _Prepared) -> np.ndarray:
    """The translation (k, j, i working voxels) that moves ``synthetic`` onto ``real`` (FFT phase correlation)."""
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(real.work, synthetic.work, normalization="phase", upsample_factor=_UPSAMPLE)
    shift = np.asarray(shift, dtype=float)
    fixed, _ = _overlap(real.work.shape, shift)
    overlap = np.prod([s.stop - s.start for s in fixed]) / np.prod(real.work.shape)
    return shift if overlap >= _MIN_OVERLAP else np.zeros(3)  # an implausible alignment: compare unshifted


def _shifted_similarity(real: _Prepared, synthetic: _Prepared, shift: np.ndarray) -> float:
    """Band-passed correlation after a sub-voxel translation (whole voxels by slicing, the rest interpolated)."""
    from scipy import ndimage

    whole = np.rint(shift)
    moved = synthetic.detail
    if np.any(np.abs(shift - whole) > 1e-3):
        moved = ndimage.shift(synthetic.detail, shift - whole, order=1, mode="nearest")
    fixed, moving = _overlap(real.work.shape, whole)
    inner = tuple(slice(s.start + 1, s.stop - 1) if s.stop - s.start > 2 else s for s in fixed)
    inner_moving = tuple(slice(s.start + 1, s.stop - 1) if s.stop - s.start > 2 else s for s in moving)
    return _correlation(real.detail[inner], moved[inner_moving])


def _rigid_similarity(real: _Prepared, synthetic: _Prepared, shift: np.ndarray) -> float:
    """Refine the translation to a rigid transform and score the band-passed overlap.

    A quick SimpleITK registration (Euler 3D, correlation metric on random samples, regular-step gradient
    descent) on the half-resolution working copies, started from the phase-correlation shift; the synthetic
    working copy is then resampled with it and compared on the working grid where both are defined.
    """
    import SimpleITK as sitk
    from scipy import ndimage

    fixed = sitk.GetImageFromArray(real.work)
    moving = sitk.GetImageFromArray(synthetic.work)
    transform = sitk.Euler3DTransform()
    transform.SetCenter([(n - 1) / 2.0 for n in reversed(real.work.shape)])
    transform.SetTranslation([-float(v) for v in shift[::-1]])  # ITK maps fixed (i, j, k) points to moving ones
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(_SAMPLING, _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=_ITERATIONS, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(_SHRINK)
    method.SetSmoothingSigmasPerLevel([float(f) - 1.0 for f in _SHRINK])
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    moved = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, float(_WINDOW[0])))
    ones = sitk.GetImageFromArray(np.ones(real.work.shape, np.uint8))
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, fixed, transform, sitk.sitkNearestNeighbor, 0)).astype(bool)
    inside = ndimage.binary_erosion(inside, iterations=2)  # the band-pass is unreliable at the overlap's border
    if inside.sum() < _MIN_OVERLAP * inside.size / 2:
        return _shifted_similarity(real, synthetic, shift)
    return _correlation(real.detail[inside], _band_pass(moved)[inside])


def near_copy_similarity(real: Image, synthetic: Image, resample: bool = True) -> float:
    """The memorization similarity of one pair (after alignment), as :func:`memorization_check` computes it."""
    grid, _ = common_grid([real, synthetic], real, resample, "image")
    real_prepared, synthetic_prepared = _prepare(grid[0]), _prepare(grid[1])
    return _rigid_similarity(real_prepared, synthetic_prepared, _translation(real_prepared, synthetic_prepared))


def memorization_check(
    synthetic: Sequence[Image],
    real: Sequence[Image],
    threshold: float = DEFAULT_THRESHOLD,
    progress: Progress | Callable[[float, str], None] | None = None,
    candidates: int = 5,
    refine: int = 2,
    resample: bool = True,
) -> list[MemorizationMatch]:
    """For every synthetic image, the most similar real image after alignment, flagged above ``threshold``.

    Args:
        synthetic: the synthetic images.
        real: the real (training / reference) images.
        threshold: similarity at or above which a synthetic image is flagged as a near-copy.
        progress: optional progress callback or :class:`Progress` (cancellation raises ``CancelledError``).
        candidates: how many pre-filtered real images are aligned by translation per synthetic image (0 or
            ≥ len(real): all of them — the naive exhaustive search).
        refine: how many of those (the most similar after translation) get the rigid refinement that decides
            (default 2: after translation alone, another scan of the parent's patient can outrank a rotated copy's
            true parent).
        resample: put images on another grid onto the first real image's grid (False: refuse them).

    Returns:
        One :class:`MemorizationMatch` per synthetic image, in input order.

    Raises:
        InputError: an empty set, a threshold outside [-1, 1], or (``resample=False``) an image on another grid.
    """
    if not real:
        raise InputError("The real reference set is empty; import the real (training) images to compare against.")
    if not synthetic:
        raise InputError("The synthetic set is empty; import at least one synthetic image.")
    if not (isinstance(threshold, int | float) and -1.0 <= float(threshold) <= 1.0):
        raise InputError(f"threshold must be a similarity in [-1, 1], got {threshold!r}.")
    report = Progress.of(progress)
    real_grid, _ = common_grid(real, real[0], resample, "real image")
    synthetic_grid, _ = common_grid(synthetic, real[0], resample, "synthetic image")
    prepare = report.stage(0.0, 0.4)
    total = len(real_grid) + len(synthetic_grid)
    prepared_real: list[_Prepared] = []
    for index, image in enumerate(real_grid):
        prepare(index / total, f"Preparing real image {index + 1}/{len(real_grid)}")
        prepared_real.append(_prepare(image))
    prepared_synthetic: list[_Prepared] = []
    for index, image in enumerate(synthetic_grid):
        prepare((len(real_grid) + index) / total, f"Preparing synthetic image {index + 1}/{len(synthetic_grid)}")
        prepared_synthetic.append(_prepare(image))
    coarse_real = np.stack([p.coarse for p in prepared_real])
    coarse_synthetic = np.stack([p.coarse for p in prepared_synthetic])
    ranking = np.argsort(-(coarse_synthetic @ coarse_real.T), axis=1, kind="stable")
    keep = len(real_grid) if candidates <= 0 else min(candidates, len(real_grid))
    align = report.stage(0.4, 1.0)
    matches: list[MemorizationMatch] = []
    for s_index, prepared in enumerate(prepared_synthetic):
        align(s_index / len(prepared_synthetic), f"Aligning synthetic image {s_index + 1}/{len(prepared_synthetic)}")
        shortlist = []
        for r_index in ranking[s_index, :keep]:
            shift = _translation(prepared_real[int(r_index)], prepared)
            quick = _shifted_similarity(prepared_real[int(r_index)], prepared, shift)
            shortlist.append((quick, int(r_index), shift))
        shortlist.sort(key=lambda item: -item[0])
        best = (-math.inf, -1, np.zeros(3))
        for _, r_index, shift in shortlist[: max(refine, 1)]:
            similarity = _rigid_similarity(prepared_real[r_index], prepared, shift)
            if similarity > best[0]:
                best = (similarity, r_index, shift)
        similarity, r_index, shift = best
        matches.append(
            MemorizationMatch(
                synthetic_index=s_index,
                synthetic_id=_image_id(synthetic[s_index], s_index),
                real_index=r_index,
                real_id=_image_id(real[r_index], r_index),
                similarity=float(similarity),
                shift_voxels=(float(shift[0]), float(shift[1]), float(shift[2])),
                flagged=bool(similarity >= float(threshold)),
                threshold=float(threshold),
            )
        )
    align(1.0, f"Compared {len(matches)} synthetic with {len(real_grid)} real images")
    return matches
