"""Memorization check: is a synthetic image a near-copy of a real (training) image?

Generative models can reproduce their training images (Dar et al., 2024, for diffusion models of CT). Before a
synthetic set is shared, every synthetic image is compared with every real image:

1. **Pre-filter** — each volume is windowed to [-1000, 1000] HU and block-averaged to a coarse grid of at most 16
   voxels a side. The synthetic image is also zoomed about its centre by 11 factors from 1/1.15 to 1.15 (steps of
   2.8 %) and each zoom mirrored along each array axis (left-right, anterior-posterior, superior-inferior): the real
   images are ranked by the Pearson correlation of their coarse volume with the best of these 44 coarse versions,
   and only the ``candidates`` most similar ones go on. (A shift of a few voxels or a few degrees of rotation hardly
   changes a 16³ copy, and the right zoom and mirroring make a zoomed or mirrored copy's coarse volume match its
   parent's to 0.99, so a true parent is among them.)
2. **Alignment** — the candidates and the synthetic image, block-averaged to at most 64 voxels a side, are aligned
   by translation with FFT phase correlation to a quarter of a working voxel
   (``skimage.registration.phase_cross_correlation``, ``upsample_factor=4``) and scored by the similarity below
   after that sub-voxel shift. The candidates are taken alternately from the ranking by the best version and from
   the ranking by the unchanged coarse copy (zooming and mirroring raise other patients' coarse scores too, and
   pushed a rotated copy's parent to 4th place in the 128³ benchmark). The synthetic working volume is first zoomed
   as the pre-filter found best for that candidate and mirrored as the sharpest phase-correlation peak says (a chest
   is nearly symmetric at 16 voxels a side, so the coarse score does not tell the mirroring reliably; the peak is
   0.13–0.93 for the right mirroring of a copy and at most 0.16 for a wrong one on 128³ phantoms); it stays unzoomed
   where the peak is sharper so (padding outside a smaller field of view misleads the coarse zoom). The ``refine``
   best (default 2) then get a quick SimpleITK registration (Similarity 3D: rotation, translation and isotropic
   scale; correlation metric, two levels) started from that zoom and shift, which absorbs rotations of a few degrees
   and the 1.4 % left between zoom steps; the synthetic working volume is resampled with it by cubic B-spline
   (linear interpolation blurred the finest band of a zoomed-out copy, 0.89–0.91 instead of 0.91–0.93 on a coarser
   grid); the highest refined similarity decides. The synthetic image's padding (voxels at its minimum, where they
   are over 1 % of it: ``common_grid`` fills the part of the reference grid outside a smaller field of view with
   it) is left out of the registration metric and of the comparison, so a copy cut to fewer slices is still found.
   A refined scale more than 8 % from its start counts as a failed registration (the translation-only score is
   used). Whole-voxel shifts alone are not enough at fine input voxels:
   a residual half-voxel shift ruins the fine band below, so an unrotated other scan of the same patient outranked
   the true (rotated) parent and took the only refinement (128³ benchmark, similarity 0.85 instead of 0.96).
3. **Similarity** — the Pearson correlation, on the overlap after alignment, of the two band-passed volumes
   (difference of Gaussians, σ 0.5 and 1.5 working voxels), computed in each octant of the grid (each at least a
   quarter inside the overlap) and the lowest taken. The band-pass keeps the patient-specific detail (vessels,
   airways, nodules, lung texture, organ borders) and removes the body outline that every chest CT shares, so two
   different patients score low even though their coarse anatomy correlates highly; independent noise and a global
   intensity scale or offset hardly change it. A copy matches in every octant; another patient zoomed to the same
   size may match one part of the body and not another, so the weakest octant separates them better than the whole
   overlap (other patients about 0.06–0.09 lower, copies about 0.005 lower on phantoms). Because it is computed on
   the working grid of at most 64 voxels a side, the band has about the same extent in the body whatever the input
   resolution. The finest band also carries the image's own noise and texture: at 128³ (2.8 mm) another scan of the
   same phantom patient with independent noise (σ 15–35 HU) scores only 0.81–0.93 against a rotated copy, about as
   much as the closest other patients, so the check finds copies of an image, not other images of its patient.

``flagged = similarity >= threshold``. The default threshold (:data:`DEFAULT_THRESHOLD`) flags a real image that was
shifted by a few voxels, rotated by up to 3°, zoomed in or out by 10 % about its centre (also resampled onto another
grid), mirrored along any axis, rescaled in intensity by a few per cent and given new noise, and no image of another
phantom patient (``random_phantom_spec`` with other seeds, mirrored or not). Measured
(``Testing/unit/test_review_memorization.py``): on 64x64x48 phantoms at 5–6 mm, rotated copies 0.946–0.971, a 10 %
zoom-in 0.976, a 10 % zoom-out onto a 4 mm grid 0.962, mirrored copies 0.994–0.995, other patients ≤ 0.75; on
96x96x80 ones at 3.75–4.5 mm, rotated copies 0.97–0.975 and another patient 0.61. 10 % zooms of the three 64x64x48
patients onto grids of the same field of view scored 0.957–0.969 at 4 mm and 0.913–0.949 at 6.4 mm (unzoomed
0.93–0.94 there: a coarser grid loses fine detail); unzoomed copies of one patient on grids 24–48 mm shorter along
the body axis (240–264 of 288 mm, the rest padding) 0.94–0.985. On 128³ phantoms at 2.8 mm (16 real, 12 synthetic)
10 % zooms scored 0.98–0.99, mirrored copies (also one zoomed by 8 %) 0.985–0.999, a rotated copy 0.973 and other
patients ≤ 0.81 (0.82 before the zoom and mirror search); ``bench/review.py`` (200 + 200 such volumes): planted
rotated copies 0.961–0.977, other synthetic images ≤ 0.867 (0.832 before), none flagged. The zoom search costs
margin on phantoms: ``random_phantom_spec`` builds every patient from one anatomical template at another size, so
another patient zoomed to the same size scores higher than without the search (on the small phantoms up to 0.75
instead of 0.59). The match reports the zoom and mirroring found. A real image with an inserted lesion is
deliberately still a near-copy: the rest of the patient is identifiable, so a lesion-insertion output built on a
real image is flagged, and its provenance (parent real image) tells the reviewer it is expected.
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
#: Largest first step (a quarter voxel): a larger one sometimes threw the scale far off (to 0.3-0.5).
_LEARNING_RATE = 0.25
#: A refined scale further than this factor from its start counts as a failed registration.
_SCALE_DRIFT = 1.08
_SHRINK = (2, 1)
_UPSAMPLE = 4
#: Zoom factors tried for the synthetic image (about its centre) before the registration refines the scale.
_SCALES = tuple(1.15 ** (n / 5) for n in range(-5, 6))  # 1.15 ** 0 is exactly 1.0, the unchanged copy
#: Mirrorings tried: none, then a flip of each array axis (k, j, i).
_FLIPS: tuple[int | None, ...] = (None, 0, 1, 2)
_DIRECTIONS = ("left-right", "anterior-posterior", "superior-inferior")


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
        zoom: how much larger the anatomy appears in the synthetic image than in the real one after alignment
            (1.1: a 10 % zoomed-in copy; about 1 for an unzoomed one).
        mirrored: the patient direction the synthetic image was mirrored along to match (``"left-right"``,
            ``"anterior-posterior"``, ``"superior-inferior"``), or ``""`` for none.
    """

    synthetic_index: int
    synthetic_id: str
    real_index: int
    real_id: str
    similarity: float
    shift_voxels: tuple[float, float, float]
    flagged: bool
    threshold: float
    zoom: float = 1.0
    mirrored: str = ""

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
    valid: np.ndarray | None = None  # working voxels mostly above the image's minimum (None: all of them)


def _band_pass(work: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(work, _DOG_SIGMAS[0]) - ndimage.gaussian_filter(work, _DOG_SIGMAS[1])


def _coarse(half: np.ndarray) -> np.ndarray:
    """The z-scored, flattened coarse copy (at most 16 voxels a side) of a half-resolution working volume."""
    coarse = _block_mean(half, _COARSE_SIZE).ravel().astype(np.float64)
    coarse -= coarse.mean()
    norm = float(np.linalg.norm(coarse))
    return coarse / norm if norm > 0 else coarse


def _prepare(image: Image) -> _Prepared:
    low, high = _WINDOW
    data = np.clip(image.array.astype(np.float32), low, high)
    work = _block_mean(data, _WORK_SIZE).astype(np.float32)
    # voxels at the image's minimum are padding when there are many of them (common_grid fills the part of the
    # reference grid outside an image's field of view with it), or featureless air: neither is compared
    raw = image.array
    filled = raw <= raw.min()
    valid = None
    if filled.mean() > 0.01:
        valid = (_block_mean(filled.astype(np.float32), _WORK_SIZE) < 0.5).astype(np.uint8)
    return _Prepared(work, _band_pass(work).astype(np.float32), _coarse(_block_mean(work, _WORK_SIZE // 2)), valid)


def _zoomed(volume: np.ndarray, scale: float) -> np.ndarray:
    """``volume`` resampled about its centre: the output at ``x`` is the input at ``centre + scale (x - centre)``."""
    from scipy import ndimage

    if abs(scale - 1.0) < 1e-6:
        return volume
    centre = (np.asarray(volume.shape, dtype=float) - 1.0) / 2.0
    return ndimage.affine_transform(volume, np.full(3, scale), offset=centre - scale * centre, order=1, mode="nearest")


def _flipped(volume: np.ndarray, flip: int | None) -> np.ndarray:
    return volume if flip is None else np.ascontiguousarray(np.flip(volume, flip))


#: The (scale, flip) versions of a synthetic image that the pre-filter compares with every real image.
_VARIANTS = tuple((scale, flip) for scale in _SCALES for flip in _FLIPS)


def _coarse_variants(prepared: _Prepared) -> np.ndarray:
    """Coarse copies (rows, in :data:`_VARIANTS` order) of the synthetic image zoomed and mirrored every way tried."""
    half = _block_mean(prepared.work, _WORK_SIZE // 2)
    rows: list[np.ndarray] = []
    for scale in _SCALES:
        zoomed = _zoomed(half, scale)
        rows.extend(_coarse(_flipped(zoomed, flip)) for flip in _FLIPS)
    return np.stack(rows)


def _variant(prepared: _Prepared, scale: float, flip: int | None) -> _Prepared:
    """The synthetic working volume mirrored and zoomed (``coarse`` left empty: not needed any more)."""
    if scale == 1.0 and flip is None:
        return prepared
    work = _zoomed(_flipped(prepared.work, flip), scale).astype(np.float32)
    return _Prepared(work, _band_pass(work).astype(np.float32), np.zeros(0))


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


def _translation(real: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    """The translation (k, j, i working voxels) that moves ``synthetic`` onto ``real`` (FFT phase correlation).

    Both are the Fourier transforms of working volumes (each computed once per synthetic image).
    """
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(
        real, synthetic, space="fourier", normalization="phase", upsample_factor=_UPSAMPLE
    )
    shift = np.asarray(shift, dtype=float)
    fixed, _ = _overlap(real.shape, shift)
    overlap = np.prod([s.stop - s.start for s in fixed]) / np.prod(real.shape)
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


def _registered_similarity(
    real: _Prepared, synthetic: _Prepared, flip: int | None, scale: float, shift: np.ndarray
) -> tuple[float, float]:
    """Refine the alignment to a similarity transform (rotation, translation, isotropic scale) and score the overlap.

    A quick SimpleITK registration (Similarity 3D, correlation metric on random samples, regular-step gradient
    descent) on the half-resolution working copies of the real and the (mirrored) synthetic image, started from the
    pre-filter's zoom ``scale`` and the phase-correlation ``shift`` of the zoomed copy; the synthetic working copy
    is then resampled with it and compared on the working grid where both are defined. Returns the similarity and
    the refined scale (the synthetic image is sampled at ``centre + scale (x - centre)``).
    """
    import SimpleITK as sitk
    from scipy import ndimage

    fixed = sitk.GetImageFromArray(real.work)
    moving = sitk.GetImageFromArray(_flipped(synthetic.work, flip))
    transform = sitk.Similarity3DTransform()
    transform.SetCenter([(n - 1) / 2.0 for n in reversed(real.work.shape)])
    transform.SetScale(scale)
    # ITK maps fixed (i, j, k) points to moving ones: x -> centre + scale (x - shift - centre)
    transform.SetTranslation([-scale * float(v) for v in shift[::-1]])
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(_SAMPLING, _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=_LEARNING_RATE, minStep=1e-3, numberOfIterations=_ITERATIONS, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(_SHRINK)
    method.SetSmoothingSigmasPerLevel([float(f) - 1.0 for f in _SHRINK])
    method.SetInitialTransform(transform, inPlace=True)
    valid = None
    if synthetic.valid is not None:  # a copy on a smaller field of view: its padding must not pull the scale
        valid = sitk.GetImageFromArray(_flipped(synthetic.valid, flip))
        method.SetMetricMovingMask(valid)
    method.Execute(fixed, moving)
    moved = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkBSpline, float(_WINDOW[0])))
    ones = sitk.GetImageFromArray(np.ones(real.work.shape, np.uint8))
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, fixed, transform, sitk.sitkNearestNeighbor, 0)).astype(bool)
    if valid is not None:
        inside &= sitk.GetArrayFromImage(sitk.Resample(valid, fixed, transform, sitk.sitkNearestNeighbor, 0)) > 0
    inside = ndimage.binary_erosion(inside, iterations=2)  # the band-pass is unreliable at the overlap's border
    refined = float(transform.GetScale())
    if inside.sum() < _MIN_OVERLAP * inside.size / 2 or not 1 / _SCALE_DRIFT < refined / scale < _SCALE_DRIFT:
        return _shifted_similarity(real, _variant(synthetic, scale, flip), shift), scale
    return _octant_similarity(real.detail, _band_pass(moved), inside), refined


def _octant_similarity(real: np.ndarray, moved: np.ndarray, inside: np.ndarray) -> float:
    """The lowest band-passed correlation over the octants of the grid (those at least a quarter inside).

    A copy matches everywhere; another patient zoomed to the same size may match one part of the body well and
    not another, so the weakest octant separates them better than the whole overlap does.
    """
    halves = [(slice(0, n // 2), slice(n // 2, n)) for n in real.shape]
    scores = []
    for k in halves[0]:
        for j in halves[1]:
            for i in halves[2]:
                mask = inside[k, j, i]
                if mask.sum() >= 0.25 * mask.size:
                    scores.append(_correlation(real[k, j, i][mask], moved[k, j, i][mask]))
    return min(scores) if scores else _correlation(real[inside], moved[inside])


@dataclass(frozen=True)
class _Found:
    similarity: float
    real_index: int
    shift: np.ndarray
    scale: float
    flip: int | None


def _phase_peak(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Height of the phase-correlation peak of two Fourier transforms (1: identical up to a translation)."""
    cross = real * np.conj(synthetic)
    cross /= np.maximum(np.abs(cross), 1e-12)
    return float(np.fft.ifftn(cross).real.max())


def _candidates(scores: np.ndarray, keep: int) -> list[int]:
    """The real images to align: best by the unchanged coarse copy and best by any version, alternately.

    Zooming and mirroring raise the coarse score of other patients too, so a slightly rotated copy's parent can
    drop a few places in the ranking by the best version (from 1st to 4th in the 128³ benchmark) while it stays
    first by the unchanged copy; a zoomed copy's parent is first by the best version.
    """
    unchanged = np.argsort(-scores[_VARIANTS.index((1.0, None))], kind="stable")
    any_version = np.argsort(-scores.max(axis=0), kind="stable")
    chosen: list[int] = []
    for pair in zip(any_version, unchanged):
        chosen.extend(int(r) for r in pair if int(r) not in chosen)
        if len(chosen) >= keep:
            break
    return chosen[:keep]


def _nearest(
    prepared_real: Sequence[_Prepared], coarse_real: np.ndarray, synthetic: _Prepared, keep: int, refine: int
) -> _Found:
    """The most similar real image after alignment: pre-filter, phase correlation, then registration of the best."""
    scores = _coarse_variants(synthetic) @ coarse_real.T  # variants x real images
    # the best zoom for each mirroring (rows of one mirroring are len(_FLIPS) apart): the coarse copy tells the
    # zoom well, but a chest is nearly symmetric at 16 voxels a side, so the phase-correlation peak (0.13-0.93
    # for the right mirroring of a copy, at most 0.16 for a wrong one on 128³ phantoms) picks the mirroring
    best_scale = np.argmax(scores.reshape(len(_SCALES), len(_FLIPS), -1), axis=0)  # flips x real images
    spectra: dict[int, np.ndarray] = {}
    shortlist = []
    for r_index in _candidates(scores, keep):
        real_spectrum = np.fft.fftn(prepared_real[r_index].work)
        options = []
        for f_index, flip in enumerate(_FLIPS):
            v_index = int(best_scale[f_index, r_index]) * len(_FLIPS) + f_index
            if v_index not in spectra:
                spectra[v_index] = np.fft.fftn(_zoomed(_flipped(synthetic.work, flip), _VARIANTS[v_index][0]))
            options.append((_phase_peak(real_spectrum, spectra[v_index]), -f_index, v_index))
        peak, negative_flip, v_index = max(options)
        flip = _FLIPS[-negative_flip]
        unzoomed = _VARIANTS.index((1.0, flip))  # padding can mislead the coarse zoom: try the unzoomed copy too
        if unzoomed != v_index:
            if unzoomed not in spectra:
                spectra[unzoomed] = np.fft.fftn(_flipped(synthetic.work, flip))
            if _phase_peak(real_spectrum, spectra[unzoomed]) > peak:
                v_index = unzoomed
        variant = _variant(synthetic, *_VARIANTS[v_index])
        shift = _translation(real_spectrum, spectra[v_index])
        shortlist.append((_shifted_similarity(prepared_real[r_index], variant, shift), r_index, v_index, shift))
    shortlist.sort(key=lambda item: -item[0])
    best = _Found(-math.inf, -1, np.zeros(3), 1.0, None)
    for _, r_index, v_index, shift in shortlist[: max(refine, 1)]:
        scale, flip = _VARIANTS[v_index]
        similarity, refined = _registered_similarity(prepared_real[r_index], synthetic, flip, scale, shift)
        if similarity > best.similarity:
            best = _Found(similarity, r_index, shift, refined, flip)
    return best


def _direction(image: Image, flip: int | None) -> str:
    """The patient direction that a flip of array axis ``flip`` (k, j, i) mirrors ("" for none)."""
    if flip is None:
        return ""
    column = np.asarray(image.ijk_to_ras, dtype=float)[:3, 2 - flip]
    return _DIRECTIONS[int(np.argmax(np.abs(column)))]


def near_copy_similarity(real: Image, synthetic: Image, resample: bool = True) -> float:
    """The memorization similarity of one pair (after alignment), as :func:`memorization_check` computes it."""
    grid, _ = common_grid([real, synthetic], real, resample, "image")
    real_prepared, synthetic_prepared = _prepare(grid[0]), _prepare(grid[1])
    return _nearest([real_prepared], real_prepared.coarse[None, :], synthetic_prepared, 1, 1).similarity


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
            ≥ len(real): all of them — the naive exhaustive search), each with the zoomed and mirrored versions of
            the synthetic image that the pre-filter found best.
        refine: how many of those alignments (the most similar after translation) get the registration that decides
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
    keep = len(real_grid) if candidates <= 0 else min(candidates, len(real_grid))
    align = report.stage(0.4, 1.0)
    matches: list[MemorizationMatch] = []
    for s_index, prepared in enumerate(prepared_synthetic):
        align(s_index / len(prepared_synthetic), f"Aligning synthetic image {s_index + 1}/{len(prepared_synthetic)}")
        found = _nearest(prepared_real, coarse_real, prepared, keep, refine)
        matches.append(
            MemorizationMatch(
                synthetic_index=s_index,
                synthetic_id=_image_id(synthetic[s_index], s_index),
                real_index=found.real_index,
                real_id=_image_id(real[found.real_index], found.real_index),
                similarity=float(found.similarity),
                shift_voxels=(float(found.shift[0]), float(found.shift[1]), float(found.shift[2])),
                flagged=bool(found.similarity >= float(threshold)),
                threshold=float(threshold),
                zoom=float(found.scale),
                mirrored=_direction(real_grid[0], found.flip),
            )
        )
    align(1.0, f"Compared {len(matches)} synthetic with {len(real_grid)} real images")
    return matches
