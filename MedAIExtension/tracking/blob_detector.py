"""The classical nodule detector's settings and scale-space machinery, used by :mod:`.detection`.

Here live :class:`DetectionOptions` (re-exported by :mod:`MedAIExtension.tracking.detection`), the detector's
tuning constants, and the private helpers of :func:`~MedAIExtension.tracking.detection.classical_candidates`:
the lung box and prepared volume, the block-averaged scale levels, LoG peak finding, the Hessian verification
of each blob (a maximum over scale, round after vessels are opened away), its confidence and the non-maximum
suppression in millimetres. The candidate-finding API itself (and the model/classical merge) stays in
:mod:`.detection`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.tracking.lungs import block_mean

__all__ = ["DetectionOptions"]


#: Scale-normalised LoG response at the centre of a ball of contrast 1 at its best scale (sigma = r / sqrt(3)):
#: 4 pi r^3 (2 pi sigma^2)^(-3/2) exp(-r^2 / 2 sigma^2) with r = sqrt(3) sigma.
_BALL_RESPONSE = 4.0 * math.pi * 3.0 * math.sqrt(3.0) * (2.0 * math.pi) ** -1.5 * math.exp(-1.5)
_SIGMA_PER_DIAMETER = 1.0 / (2.0 * math.sqrt(3.0))
_CLIP_HU = (-1000.0, 150.0)
_VOXELS_PER_SIGMA = 1.5  # coarse scales run on blocks no larger than sigma / 1.5
_CONTRAST_HALF_HU = 60.0  # contrast at which the contrast term of the confidence is 0.5
_ROUND_ENOUGH = 0.85  # blobness at which the shape term of the confidence is 1
_PREFILTER_BLOBNESS = 0.4  # a cheap first cut on the level grid, before vessels are opened away
_VESSEL_SIGMA_MM = 2.0  # blobs finer than this may be vessels; from twice this on they cannot
_WIDE_SLACK = 0.2  # how much less round a blob wider than any vessel may be
_FINER_SLACK = 0.1  # at the next finer scale a nodule may look a little less round (pleura, vessels nearby)
_OPENING_PER_RADIUS = 0.35  # the ball that opens away vessels: 0.35 x the blob's radius
_MIN_SIGMA_PER_SPACING = 0.6  # finer scales than 0.6 x the slice thickness see thick-slice vessels as blobs
_SCALE_TOLERANCE = 0.95  # a blob's response may fall 5 % short of a neighbouring scale (sampling of scales)


@dataclass(frozen=True)
class DetectionOptions:
    """Settings of :func:`detect_candidates`.

    Attributes:
        min_diameter_mm: smallest nodule diameter looked for (scale of the finest filter).
        max_diameter_mm: largest nodule diameter looked for.
        scales_per_octave: filter scales per doubling of the diameter.
        min_contrast_hu: blobs fainter than this above the surrounding lung are ignored (ground-glass nodules
            stand about 250 HU above lung, solid ones about 900 HU).
        min_blobness: smallest ratio of the weakest to the strongest Hessian eigenvalue at the blob's scale,
            after thin vessels are opened away (1 for a ball, 0 for a vessel or a plate); relaxed by up to 0.2 for
            blobs wider than any vessel (14 mm and more).
        min_confidence: classical candidates below this confidence are dropped.
        max_candidates: at most this many candidates are returned (the most confident).
        model_confidence: confidence of a candidate from the model's label map.
        merge_distance_mm: candidates closer than this (or than the larger radius) are one nodule.
        background_hu: HU given to voxels outside the lung mask; None uses the median HU of the lung parenchyma.
        classical: run the classical detector (set False to use the model's label map only).
    """

    min_diameter_mm: float = 3.0
    max_diameter_mm: float = 30.0
    scales_per_octave: int = 2
    min_contrast_hu: float = 100.0
    min_blobness: float = 0.6
    min_confidence: float = 0.2
    max_candidates: int = 100
    model_confidence: float = 0.8
    merge_distance_mm: float = 3.0
    background_hu: float | None = None
    classical: bool = True

    def __post_init__(self) -> None:
        if not 0.5 <= self.min_diameter_mm < self.max_diameter_mm <= 100.0:
            raise InputError(
                "Detection needs 0.5 <= min_diameter_mm < max_diameter_mm <= 100 "
                f"(got {self.min_diameter_mm}, {self.max_diameter_mm})."
            )
        if not 1 <= int(self.scales_per_octave) <= 8:
            raise InputError(f"scales_per_octave must be 1..8, got {self.scales_per_octave}.")
        checks = (
            ("min_contrast_hu", self.min_contrast_hu, 0.0, 2000.0),
            ("min_blobness", self.min_blobness, 0.0, 1.0),
            ("min_confidence", self.min_confidence, 0.0, 1.0),
            ("model_confidence", self.model_confidence, 0.0, 1.0),
            ("merge_distance_mm", self.merge_distance_mm, 0.0, 100.0),
        )
        for name, value, low, high in checks:
            if not low <= float(value) <= high:
                raise InputError(f"{name} must be in [{low:g}, {high:g}], got {value!r}.")
        if int(self.max_candidates) < 1:
            raise InputError(f"max_candidates must be at least 1, got {self.max_candidates}.")


@dataclass
class _Blob:
    """One classical detection before it becomes a :class:`Candidate` (array-order position, fine voxels)."""

    kji: np.ndarray
    sigma_mm: float
    contrast_hu: float
    blobness: float
    confidence: float
    ras: np.ndarray | None = None


# ---- classical detector -------------------------------------------------------------------------------------
def _checked_mask(image: Image, lungs: np.ndarray) -> np.ndarray:
    lungs = np.asarray(lungs)
    if lungs.shape != image.shape:
        raise InputError(
            f"The lung mask has shape {lungs.shape} but the image has {image.shape} (k, j, i); compute the mask on "
            "the same image (tracking.lungs.lung_mask)."
        )
    lungs = lungs.astype(bool, copy=False)
    if not lungs.any():
        raise InputError("The lung mask is empty; compute it with tracking.lungs.lung_mask on a chest CT.")
    return lungs


def _aligned_box(mask: np.ndarray, multiple: int) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask``, grown where the image allows to a multiple of ``multiple`` voxels per axis.

    Whole blocks then need no padding when the coarse levels are averaged.
    """
    out = []
    for axis, size in enumerate(mask.shape):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        start, stop = int(present[0]), int(present[-1]) + 1
        extra = (-(stop - start)) % multiple
        grow_end = min(extra, size - stop)
        stop += grow_end
        start = max(start - (extra - grow_end), 0)
        out.append(slice(start, stop))
    return out[0], out[1], out[2]


def _prepared_volume(hu: np.ndarray, mask: np.ndarray, background_hu: float | None) -> np.ndarray:
    """HU clipped to the nodule range, with everything outside the lungs set to the lung's background."""
    volume = hu.astype(np.float32)
    np.clip(volume, *_CLIP_HU, out=volume)
    if background_hu is None:
        lung = volume[mask]
        step = max(1, lung.size // 200_000)
        background_hu = float(np.median(lung[::step])) if lung.size else -850.0
    volume[~mask] = np.float32(background_hu)
    return volume


def _sigmas(options: DetectionOptions, spacing: np.ndarray) -> np.ndarray:
    """Filter scales (mm), geometric from the smallest to the largest nodule.

    A scale much below the coarsest voxel spacing cannot be isotropic (thick slices): the smallest scale is
    raised to 0.6 spacings, so on 2.5 mm slices the smallest nodule looked for is about 5.2 mm.
    """
    low = max(options.min_diameter_mm * _SIGMA_PER_DIAMETER, _MIN_SIGMA_PER_SPACING * float(np.max(spacing)))
    high = max(options.max_diameter_mm * _SIGMA_PER_DIAMETER, low)
    count = int(math.ceil(math.log2(high / low) * int(options.scales_per_octave))) + 1
    return np.geomspace(low, high, max(count, 2))


def _level_factor(sigma_mm: float, spacing_mm: float) -> int:
    """Largest power of two block size that keeps ``_VOXELS_PER_SIGMA`` voxels per sigma."""
    ratio = sigma_mm / (_VOXELS_PER_SIGMA * spacing_mm)
    return 1 if ratio < 2.0 else 2 ** int(math.floor(math.log2(ratio)))


class _Level:
    """The prepared volume and lung mask averaged over blocks of ``factors`` voxels."""

    def __init__(self, volume: np.ndarray, mask: np.ndarray, factors: tuple[int, ...], spacing: np.ndarray) -> None:
        self.factors = np.array(factors)
        self.volume = block_mean(volume, factors)
        self.mask = block_mean(mask, factors) >= 0.5
        self.spacing = spacing * self.factors
        # A block mean already blurs by a box of f voxels: variance (f^2 - 1) s^2 / 12 per axis.
        self.box_variance = (self.factors**2 - 1.0) * spacing**2 / 12.0

    def sigma_mm(self, sigma: float) -> np.ndarray:
        """Per-axis Gaussian sigma (mm) still to apply on this level for an overall scale ``sigma``."""
        return np.sqrt(np.maximum(sigma**2 - self.box_variance, (0.5 * self.spacing) ** 2))

    def to_fine(self, point: np.ndarray) -> np.ndarray:
        """Level index (array order) to image index within the lungs' box."""
        return point * self.factors + (self.factors - 1) / 2.0


def _blobs_at_scale(level: _Level, sigma_mm: float, options: DetectionOptions) -> list[_Blob]:
    """Local maxima of the scale-normalised LoG inside the lungs that are bright and blob-like enough."""
    smooth = ndimage.gaussian_filter(
        level.volume, level.sigma_mm(sigma_mm) / level.spacing, mode="nearest", truncate=3.0
    )
    response = _neg_laplacian(smooth, level.spacing)
    response *= np.float32(sigma_mm**2)
    threshold = np.float32(_BALL_RESPONSE * options.min_contrast_hu)
    points = _local_maxima(response, (response >= threshold) & level.mask)
    if len(points) == 0:
        return []
    contrast = response[tuple(points.T)] / np.float32(_BALL_RESPONSE)
    eigen = np.linalg.eigvalsh(_hessian_at(smooth, points, level.spacing) * sigma_mm**2)
    keep = _blobness(eigen) >= _PREFILTER_BLOBNESS
    offsets = _subvoxel(response, points)
    return [
        _Blob(p + o, float(sigma_mm), float(c), 0.0, 0.0)
        for p, o, c in zip(points[keep], offsets[keep], contrast[keep], strict=True)
    ]


def _local_maxima(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Indices (N x 3) of the voxels in ``where`` not below any of their 26 neighbours (array border excluded).

    Compares only the selected voxels, through flat indices: much cheaper than a maximum filter of the volume.
    """
    where = where.copy()
    for axis in range(3):
        index: list[slice | int] = [slice(None)] * 3
        for edge in (0, -1):
            index[axis] = edge
            where[tuple(index)] = False  # border voxels have no neighbours for the Hessian either
    flat = np.flatnonzero(where)
    data = values.reshape(-1)
    centre = data[flat]
    strides = np.array([values.shape[1] * values.shape[2], values.shape[2], 1])
    for offset in np.ndindex(3, 3, 3):
        step = int(np.dot(np.subtract(offset, 1), strides))
        if step:
            keep = centre >= data[flat + step]
            flat, centre = flat[keep], centre[keep]
    return np.column_stack(np.unravel_index(flat, values.shape))


def _blobness(eigen: np.ndarray) -> np.ndarray:
    """Weakest over strongest eigenvalue (ascending eigenvalues, last axis); 0 unless all are negative."""
    strongest, weakest = eigen[..., 0], eigen[..., 2]
    return np.where(weakest < 0.0, weakest / np.minimum(strongest, -1e-12), 0.0)


def _verify(level: _Level, blob: _Blob, step: float, coarsest: bool, options: DetectionOptions) -> bool:
    """Scale-space test with Hessians taken only at the blob: a maximum over scale, round here and finer.

    A ball keeps its Hessian isotropic at every scale, while a vessel crossing or branching looks round only at
    coarse scales (its branches show at the finer one). On success the blob gets its refined scale, contrast,
    blobness, confidence and its position in image voxels.
    """
    scales = (blob.sigma_mm / step, blob.sigma_mm, blob.sigma_mm * step)
    eigen = [np.linalg.eigvalsh(_local_hessian(level, blob.kji, s)) for s in scales]
    response = [-float(np.sum(e)) for e in eigen]
    if response[1] < _SCALE_TOLERANCE * response[0]:
        return False
    if not coarsest and response[1] < _SCALE_TOLERANCE * response[2]:
        return False
    contrast = response[1] / _BALL_RESPONSE
    if contrast < options.min_contrast_hu:
        return False
    opened = _opened_eigen(level, blob.kji, scales[:2], _OPENING_PER_RADIUS * math.sqrt(3.0) * blob.sigma_mm)
    finer, own = (float(_blobness(e)) for e in opened)
    required = _required_blobness(blob.sigma_mm, options)
    if own < required or finer < required - _FINER_SLACK:
        return False
    roundness = min(own, 0.5 * (own + finer))
    curvature = response[0] - 2.0 * response[1] + response[2]
    shift = 0.0
    if not coarsest and curvature < 0.0:
        shift = float(np.clip(0.5 * (response[0] - response[2]) / curvature, -0.5, 0.5))
    blob.sigma_mm *= step**shift
    blob.contrast_hu = contrast
    blob.blobness = roundness
    blob.confidence = _confidence(contrast, roundness, required)
    blob.kji = level.to_fine(blob.kji)
    return blob.confidence >= options.min_confidence


def _local_hessian(level: _Level, point: np.ndarray, sigma: float, volume: np.ndarray | None = None) -> np.ndarray:
    """Scale-normalised Hessian (sigma^2 H) at a sub-voxel ``point`` of the level, from a patch around it only.

    ``volume`` replaces the level's volume (e.g. a locally opened patch; ``point`` is then relative to it).
    """
    volume = level.volume if volume is None else volume
    sigma_axes = level.sigma_mm(sigma)
    kernels = []
    index = []
    for axis in range(3):
        s = float(level.spacing[axis])
        sig = float(sigma_axes[axis])
        half = int(math.ceil(3.0 * sig / s))
        centre = int(round(float(point[axis])))
        lo, hi = max(centre - half, 0), min(centre + half + 1, volume.shape[axis])
        x = (np.arange(lo, hi) - float(point[axis])) * s
        g = np.exp(-0.5 * (x / sig) ** 2)
        g /= g.sum()
        d1 = -x / sig**2 * g
        d2 = (x * x / sig**4 - 1.0 / sig**2) * g
        d1 -= g * d1.sum()  # exact zero response to a constant
        d2 -= g * d2.sum()
        kernels.append((g, d1, d2))
        index.append(slice(lo, hi))
    patch = volume[tuple(index)].astype(float)
    (g0, a0, b0), (g1, a1, b1), (g2, a2, b2) = kernels
    m0, m1, m2 = patch @ g2, patch @ a2, patch @ b2  # contract the last axis once per kernel
    hessian = np.empty((3, 3))
    hessian[0, 0] = b0 @ m0 @ g1
    hessian[1, 1] = g0 @ m0 @ b1
    hessian[2, 2] = g0 @ m2 @ g1
    hessian[0, 1] = hessian[1, 0] = a0 @ m0 @ a1
    hessian[0, 2] = hessian[2, 0] = a0 @ m1 @ g1
    hessian[1, 2] = hessian[2, 1] = g0 @ m1 @ a1
    return hessian * sigma**2


def _opened_eigen(level: _Level, point: np.ndarray, scales: Sequence[float], radius_mm: float) -> list[np.ndarray]:
    """Hessian eigenvalues at ``point`` for each scale, on a patch grey-opened with a ball of ``radius_mm``.

    The opening removes bright structures thinner than the ball (vessels running through a ground-glass
    nodule or touching a solid one) and keeps anything the ball fits in, so the nodule's own shape shows.
    """
    sigma_axes = level.sigma_mm(max(scales))
    reach = np.ceil((3.0 * sigma_axes + radius_mm) / level.spacing).astype(int) + 1
    centre = np.rint(point).astype(int)
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, level.volume.shape)
    patch = level.volume[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    half = np.floor(radius_mm / level.spacing).astype(int)
    if np.any(half > 0):
        grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
        ball = sum((g * s / radius_mm) ** 2 for g, s in zip(grids, level.spacing, strict=True)) <= 1.0
        patch = ndimage.grey_opening(patch, footprint=ball, mode="nearest")
    return [np.linalg.eigvalsh(_local_hessian(level, point - lo, s, patch)) for s in scales]


def _neg_laplacian(volume: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Minus the Laplacian (mm^-2) by central second differences along each axis."""
    out = np.empty_like(volume)
    part = np.empty_like(volume)
    for axis, s in enumerate(spacing):
        weights = np.array([-1.0, 2.0, -1.0]) / (float(s) * float(s))
        ndimage.correlate1d(volume, weights, axis=axis, output=out if axis == 0 else part, mode="nearest")
        if axis:
            out += part
    return out


def _hessian_at(volume: np.ndarray, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Hessian (mm^-2) of ``volume`` at integer ``points`` (N x 3, array order) by central differences."""
    hessian = np.empty((len(points), 3, 3))

    def at(offset: Sequence[int]) -> np.ndarray:
        return volume[tuple((points + np.asarray(offset)).T)].astype(float)

    centre = at((0, 0, 0))
    for a in range(3):
        step = [0, 0, 0]
        step[a] = 1
        hessian[:, a, a] = (at(step) - 2.0 * centre + at([-v for v in step])) / spacing[a] ** 2
        for b in range(a + 1, 3):
            pp = [0, 0, 0]
            pp[a], pp[b] = 1, 1
            pm = [0, 0, 0]
            pm[a], pm[b] = 1, -1
            value = (at(pp) - at(pm) - at([-v for v in pm]) + at([-v for v in pp])) / (4.0 * spacing[a] * spacing[b])
            hessian[:, a, b] = hessian[:, b, a] = value
    return hessian


def _subvoxel(response: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Parabolic sub-voxel offset of each peak along each axis (clipped to half a voxel)."""
    offsets = np.zeros(points.shape)
    centre = response[tuple(points.T)].astype(float)
    for a in range(3):
        step = np.zeros(3, dtype=int)
        step[a] = 1
        minus = response[tuple((points - step).T)].astype(float)
        plus = response[tuple((points + step).T)].astype(float)
        curvature = minus - 2.0 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(curvature < 0.0, 0.5 * (minus - plus) / curvature, 0.0)
        offsets[:, a] = np.clip(offset, -0.5, 0.5)
    return offsets


def _required_blobness(sigma_mm: float, options: DetectionOptions) -> float:
    """The roundness a blob must show: ``min_blobness``, relaxed for blobs wider than any pulmonary vessel.

    Vessels and their branchings are the false blobs; they are at most a few mm thick, so a blob of 14 mm or
    more (sigma >= 4 mm) cannot be one and may be less round (a large nodule flattened against the pleura).
    """
    wide = min(max((sigma_mm - _VESSEL_SIGMA_MM) / _VESSEL_SIGMA_MM, 0.0), 1.0)
    return options.min_blobness - _WIDE_SLACK * wide


def _confidence(contrast_hu: float, blobness: float, required: float) -> float:
    """0..1 from the blob's contrast above lung and how much rounder than required it is."""
    contrast_term = contrast_hu / (contrast_hu + _CONTRAST_HALF_HU)
    span = max(_ROUND_ENOUGH - required, 1e-6)
    shape_term = min(max((blobness - required) / span, 0.0), 1.0)
    return float(contrast_term * math.sqrt(shape_term))


def _suppress(blobs: list[_Blob], options: DetectionOptions) -> list[_Blob]:
    """Greedy non-maximum suppression in mm: a blob inside a more confident blob's radius is the same nodule."""
    from scipy.spatial import cKDTree  # here, not at the top: scipy.spatial costs medai --help ~60 ms

    if not blobs:
        return []
    order = sorted(blobs, key=lambda b: (-b.confidence, -b.sigma_mm))
    points = np.array([b.ras for b in order])
    radii = np.array([math.sqrt(3.0) * b.sigma_mm for b in order])
    tree = cKDTree(points)
    suppressed = np.zeros(len(order), dtype=bool)
    kept: list[_Blob] = []
    max_radius = float(radii.max())
    for n, blob in enumerate(order):
        if suppressed[n]:
            continue
        kept.append(blob)
        sigma = blob.sigma_mm
        for m in tree.query_ball_point(points[n], max(max_radius, options.merge_distance_mm)):
            if m == n or suppressed[m]:
                continue
            distance = float(np.linalg.norm(points[m] - points[n]))
            if distance <= max(radii[n], radii[m], options.merge_distance_mm):
                suppressed[m] = True
                # A larger, fainter blob around this one (the ground-glass rim of a part-solid nodule) gives the size.
                if radii[m] > radii[n] and distance <= 0.5 * radii[m]:
                    sigma = max(sigma, order[m].sigma_mm)
        blob.sigma_mm = sigma
        if len(kept) >= int(options.max_candidates):
            break
    return kept
