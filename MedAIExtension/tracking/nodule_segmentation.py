"""Segment one lung nodule from a seed point: adaptive-threshold region growing, vessel detachment, pleura stop.

The nodule boundary is put half-way between the nodule's attenuation at its rim and the surrounding parenchyma
(the partial-volume boundary of a linear blur), both measured locally:

1. a box around the candidate; the lung field in it (the given lung mask, or air-containing voxels, closed so a
   juxta-pleural nodule lies inside) keeps the growth on the parenchyma side of the chest wall;
2. parenchyma level = histogram mode of the lung voxels; seed level = median around the seed (no contrast -> no
   nodule -> ``None``);
3. a generous region (just above parenchyma) finds the nodule's rim attenuation: for a part-solid nodule that is
   its ground-glass halo, not the solid core under the seed;
4. the final region at the half-way threshold is opened with a ball tied to the nodule's inscribed radius, which
   cuts off thinner vessels; a watershed of the distance map splits off thicker ones.

Everything is done in physical millimetres (distance transforms with the voxel spacing), so any orthogonal grid
(axial, sagittal, coronal, oblique, anisotropic) gives the same nodule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.tracking.types import Candidate, NoduleMask

__all__ = [
    "LocalRegion",
    "check_grid",
    "crop_region",
    "crossing_vessels",
    "dominant_level",
    "edt_mm",
    "lung_field",
    "parenchyma_level",
    "rim_band",
    "segment_nodule",
    "tissue_level",
]

#: Voxels darker than this contain air: the lung parenchyma side when no lung mask is given.
AIR_CONTAINING_HU = -400.0
#: A seed must be at least this much denser than the parenchyma (HU) to be a nodule (faintest GGO ~ -750 HU).
MIN_CONTRAST_HU = 80.0
#: A rim denser than this (HU) is solid tissue; below it the nodule is (partly) ground glass.
SOLID_RIM_HU = -300.0
#: Nominal attenuation of solid soft tissue (HU), used when a solid core is too small to show its own.
SOLID_TISSUE_HU = 30.0
#: Smallest nodule radius (mm) we segment; smaller blobs are noise or vessel cross-sections.
MIN_RADIUS_MM = 1.0
_SMOOTH_MM = 0.5
_CONTEXT_MM = 6.0
_OPENING_FRACTION = 0.6
_HIST_BIN_HU = 5.0
_SIX = ndimage.generate_binary_structure(3, 1)
_CUBE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LocalRegion:
    """A box of an image: HU values, lung field and geometry, all indexed ``[k, j, i]`` like the image.

    Attributes:
        box: index slices of the box in the image.
        hu: HU values (float32).
        smooth: HU lightly smoothed (0.5 mm Gaussian) for thresholds and levels.
        sampling: voxel spacing along k, j, i (mm), for distance transforms.
        ijk_to_ras: 4x4 affine of the box's own index (0 at the box corner).
    """

    box: tuple[slice, slice, slice]
    hu: np.ndarray
    smooth: np.ndarray
    sampling: np.ndarray
    ijk_to_ras: np.ndarray

    def distance_to(self, point_kji: np.ndarray) -> np.ndarray:
        """Physical distance (mm) of every voxel of the box to a point given in box index ``(k, j, i)``."""
        return _distance(self.hu.shape, point_kji, self.sampling)


def check_grid(image: Image) -> None:
    """Reject sheared grids, where index distances are not physical distances.

    Raises:
        GeometryError: if the voxel axes are not perpendicular.
    """
    if not image.is_orthogonal():
        raise GeometryError(
            "The image axes are not perpendicular (sheared, e.g. gantry tilt), so nodule sizes cannot be measured "
            "on its grid. Resample the series to a regular grid first."
        )


def crop_region(image: Image, box: tuple[slice, slice, slice]) -> LocalRegion:
    """Cut ``box`` out of the image (HU as float32, smoothed copy, spacing, box affine)."""
    hu = np.asarray(image.array[box], dtype=np.float32)
    sampling = np.asarray(image.spacing, dtype=float)[::-1]
    smooth = ndimage.gaussian_filter(hu, sigma=_SMOOTH_MM / sampling, truncate=3.0)
    affine = np.array(image.ijk_to_ras, dtype=float)
    corner = np.array([box[2].start, box[1].start, box[0].start, 1.0])
    affine[:3, 3] = (image.ijk_to_ras @ corner)[:3]
    return LocalRegion(box, hu, smooth, sampling, affine)


def box_around(image: Image, center_kji: np.ndarray, half_mm: float) -> tuple[slice, slice, slice]:
    """Index box (clipped to the image) covering a ball of ``half_mm`` around a continuous index point."""
    sampling = np.asarray(image.spacing, dtype=float)[::-1]
    half = np.ceil(half_mm / sampling).astype(int)
    centre = np.rint(center_kji).astype(int)
    low = np.maximum(centre - half, 0)
    high = np.minimum(centre + half + 1, image.shape)
    return slice(int(low[0]), int(high[0])), slice(int(low[1]), int(high[1])), slice(int(low[2]), int(high[2]))


def edt_mm(mask: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Distance (mm) from each True voxel to the nearest False voxel centre; 0 on False voxels.

    A mask with no False voxel gets +inf everywhere (nothing to be near).
    """
    if mask.all():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(mask, sampling=sampling).astype(np.float32)


def lung_field(smooth: np.ndarray, lungs: np.ndarray | None, sampling: np.ndarray, closing_mm: float) -> np.ndarray:
    """The lung side of the pleura in a box: the lung mask (or air-containing voxels), closed by a ball.

    Closing with a ball wider than a nodule fills the notch a juxta-pleural nodule makes in an air-based lung
    mask, but it cannot cross the smooth pleural surface, so the chest wall stays outside.

    Args:
        smooth: HU (smoothed) of the box.
        lungs: the lung mask on the box, or None to use voxels below -400 HU.
        sampling: spacing along k, j, i (mm).
        closing_mm: radius of the closing ball.

    Returns:
        Boolean mask of the lung field.
    """
    base = (smooth < AIR_CONTAINING_HU) if lungs is None else np.asarray(lungs, dtype=bool)
    if not base.any():
        return base
    dilated = edt_mm(~base, sampling) <= closing_mm
    closed = edt_mm(dilated, sampling) > closing_mm
    return base | closed


def parenchyma_level(values: np.ndarray) -> float | None:
    """Most frequent HU among lung voxels below -400 HU (the parenchyma), or None if there are too few."""
    values = values[(values < AIR_CONTAINING_HU) & (values > -1100.0)]
    if values.size < 50:
        return None
    bins = np.arange(-1100.0, AIR_CONTAINING_HU + _HIST_BIN_HU, _HIST_BIN_HU)
    counts, edges = np.histogram(values, bins=bins)
    counts = ndimage.gaussian_filter1d(counts.astype(float), 2.0)
    peak = int(np.argmax(counts))
    return float(0.5 * (edges[peak] + edges[peak + 1]))


def rim_band(sampling: np.ndarray, boundary_fraction: float = 0.5) -> tuple[float, float]:
    """Depths (mm, as measured by :func:`edt_mm` inside a mask) of its outermost voxels free of partial volume.

    A blurred surface spreads over about one voxel's extent along its normal (on average half the sum of the
    spacings). A mask drawn at ``boundary_fraction`` of the contrast (0.5: half-way) ends that much of the blur
    from the pure tissue; the EDT adds half a voxel. The band is 0.75 mm deep, so that a thin ground-glass rim
    around a solid core still fills it.
    """
    blur = 0.5 * float(np.sum(sampling))
    start = 0.5 * float(np.mean(sampling)) + (1.0 - boundary_fraction) * blur
    return start, start + 0.75


def dominant_level(values: np.ndarray, share: float = 0.4) -> float:
    """Centre of the densest cluster of values: median of the shortest window holding ``share`` of them.

    Equals the median for one symmetric cluster; for a tissue level plus partial-volume values trailing away
    from it (a ground-glass rim over a solid core) it stays on the tissue level.
    """
    ordered = np.sort(np.asarray(values, dtype=float).ravel())
    count = len(ordered)
    width = max(int(math.ceil(share * count)), 1)
    if count <= 2 or width >= count:
        return float(np.median(ordered))
    spans = ordered[width - 1 :] - ordered[: count - width + 1]
    first = int(np.argmin(spans))
    return float(np.median(ordered[first : first + width]))


def tissue_level(rim: np.ndarray, pure: np.ndarray) -> float:
    """A nodule's attenuation at its rim, from its outermost pure voxels (``rim``) and all its pure voxels.

    When the pure voxels hold no substantial solid core (under 10 % of them denser than half-way from the rim
    level to soft tissue) or the rim itself is solid, their median is used: many more voxels, less noise, and
    a few vessel voxels do not move a median. Otherwise (a ground-glass rim over a solid core) the rim's
    dominant level is.
    """
    level = dominant_level(rim)
    if pure.size == 0:
        return level
    dense = level + 0.5 * (SOLID_TISSUE_HU - level)
    if level >= SOLID_RIM_HU or np.count_nonzero(pure > dense) < 0.1 * pure.size:
        return float(np.median(pure))
    return level


def crossing_vessels(smooth: np.ndarray, mask: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Voxels of a mask on dense (solid-attenuation) structures that continue well outside it: vessels.

    A vessel crossing a ground-glass nodule stays visible inside it; its voxels must not count as the
    nodule's own attenuation. When such structures leave little else of the mask (under a fifth of its voxels
    deeper than ``rim_band`` of the half-way boundary), the mask is itself solid tissue (a solid nodule with
    vessels attached) and nothing is returned.
    """
    dense = smooth >= SOLID_RIM_HU
    labels, count = ndimage.label(dense, structure=_CUBE)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    beyond = dense & ~ndimage.binary_dilation(mask, _CUBE, iterations=2)
    leaving = np.unique(labels[beyond])
    vessels = np.isin(labels, leaving[leaving > 0]) & mask
    pure = mask & (edt_mm(mask, sampling) >= rim_band(sampling)[0])
    if np.count_nonzero(pure & ~vessels) < max(20, 0.2 * np.count_nonzero(pure)):
        return np.zeros(mask.shape, dtype=bool)
    return vessels


def robust_std(values: np.ndarray) -> float:
    """Standard deviation from the median absolute deviation (robust to outliers); 0 for no values."""
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _component_at(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(mask, structure=_SIX)
    hit = np.unique(labels[seeds & mask])
    hit = hit[hit > 0]
    if hit.size == 0:
        return np.zeros_like(mask)
    return np.isin(labels, hit)


def _rim_level(lrg: LocalRegion, region: np.ndarray, lung: np.ndarray, low_fraction: float) -> float | None:
    """Attenuation at the rim of a region whose boundary sits at ``low_fraction`` of the contrast.

    Depth counts from the region's boundary on the lung side only: where the lung field cuts it (the chest
    wall) there is no partial volume with parenchyma.
    """
    hu, sampling = lrg.hu, lrg.sampling
    depth = edt_mm(region | ~lung, sampling)
    start, stop = rim_band(sampling, low_fraction)
    own = region & ~crossing_vessels(lrg.smooth, region, sampling)
    band = own & (depth >= start) & (depth < stop)
    if np.count_nonzero(band) < 4:
        deepest = float(depth[region].max()) if region.any() else 0.0
        band = region & (depth >= 0.75 * deepest)
    if not band.any():
        return None
    return tissue_level(hu[band], hu[own & (depth >= start)])


def _open_mm(radius: float, sampling: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Opening by a ball of ``radius`` mm via distance maps (``depth`` = EDT of the mask).

    The eroded set is only known at voxel centres, so it is dilated by half a voxel more than the ball:
    otherwise voxels on a smooth boundary fall between the discrete centres and are lost.
    """
    core = depth > radius
    if not core.any():
        return core
    return edt_mm(~core, sampling) <= radius + 0.5 * float(np.min(sampling))


def _split_thick_vessels(region: np.ndarray, depth: np.ndarray, centre: tuple[int, ...], r_in: float) -> np.ndarray:
    from skimage.segmentation import watershed

    peaks = (depth == ndimage.maximum_filter(depth, footprint=_CUBE)) & (depth >= 0.3 * r_in) & region
    markers, _ = ndimage.label(peaks, structure=_CUBE)
    basins = watershed(-depth, markers, mask=region)
    own = basins[centre]
    return basins == own if own > 0 else region


def segment_nodule(
    image: Image,
    candidate: Candidate,
    lungs: np.ndarray | None = None,
    max_diameter_mm: float = 40.0,
) -> NoduleMask | None:
    """Segment the nodule at a candidate position.

    Args:
        image: CT in HU.
        candidate: where to look; ``center_ras`` is the seed, ``diameter_mm`` a rough size (sets the seed
            neighbourhood and the lung-field closing; 6 mm when it is not a positive number).
        lungs: boolean lung mask on the image grid (nodules inside it), or None to derive the lung side from
            air-containing voxels.
        max_diameter_mm: largest nodule to look for; the region never extends beyond half of it from the seed.

    Returns:
        The nodule's voxels in a box around it, or None when there is no nodule at the seed (plain parenchyma,
        a vessel, or outside the lungs).

    Raises:
        InputError: if the seed lies outside the image, the lung mask does not match the image, or
            ``max_diameter_mm`` is not a positive size.
        GeometryError: if the image grid is sheared.
    """
    check_grid(image)
    if not np.isfinite(max_diameter_mm) or not 2.0 * MIN_RADIUS_MM < max_diameter_mm <= 300.0:
        raise InputError(f"max_diameter_mm must be in (2, 300] mm, got {max_diameter_mm!r}.")
    if lungs is not None and np.shape(lungs) != image.shape:
        raise InputError(
            f"The lung mask has shape {np.shape(lungs)} but the image has {image.shape} (k, j, i); "
            "pass the lung mask computed on this image."
        )
    centre = _seed_index(image, candidate)
    radius = 0.5 * float(max_diameter_mm)
    box = box_around(image, centre, radius + _CONTEXT_MM)
    region = crop_region(image, box)
    seed = centre - np.array([s.start for s in box], dtype=float)
    size = float(candidate.diameter_mm) if np.isfinite(candidate.diameter_mm) and candidate.diameter_mm > 0 else 6.0
    closing = float(np.clip(0.6 * size + 2.0, 3.0, radius))
    lung = lung_field(region.smooth, None if lungs is None else lungs[box], region.sampling, closing)
    mask = _grow(region, lung, seed, size, radius)
    if mask is None:
        return None
    return _tight(box, mask)


def _seed_index(image: Image, candidate: Candidate) -> np.ndarray:
    point = np.asarray(candidate.center_ras, dtype=float)
    if point.shape != (3,) or not np.isfinite(point).all():
        raise InputError(f"Candidate centre must be three finite RAS numbers, got {candidate.center_ras!r}.")
    ijk = (np.linalg.inv(image.ijk_to_ras) @ np.append(point, 1.0))[:3]
    kji = ijk[::-1]
    if np.any(kji < -0.5) or np.any(kji > np.asarray(image.shape) - 0.5):
        raise InputError(
            f"The candidate at RAS {np.round(point, 1).tolist()} lies outside the image; "
            "give a seed inside the CT volume (RAS millimetres, Slicer's convention)."
        )
    return kji


def _grow(region: LocalRegion, lung: np.ndarray, seed: np.ndarray, size: float, radius: float) -> np.ndarray | None:
    """The nodule region at the seed, or None (``size``: the candidate's rough diameter, mm)."""
    smooth, sampling = region.smooth, region.sampling
    background = parenchyma_level(smooth[lung])
    if background is None:
        return None
    to_seed = region.distance_to(seed)
    reach = max(float(np.clip(0.25 * size, 1.0, 2.5)), 0.6 * float(np.max(sampling)))
    seed_ball = (to_seed <= reach) & lung
    if not seed_ball.any():
        return None
    seed_level = float(np.median(smooth[seed_ball]))
    contrast = seed_level - background
    if contrast < MIN_CONTRAST_HU:
        return None
    inside = lung & (to_seed <= radius)
    seeds = seed_ball & (smooth >= seed_level)
    # A generous region just above the parenchyma holds any ground-glass halo; its outermost voxels free of
    # partial volume give the rim attenuation (the halo of a part-solid nodule, not the core under the seed).
    noise = robust_std(smooth[lung & (np.abs(smooth - background) < 150.0)])
    low = min(max(0.6 * MIN_CONTRAST_HU, 4.0 * noise), 0.5 * contrast)
    generous = _detach(_component_at(inside & (smooth >= background + low), seeds), sampling, to_seed)
    if generous is None:
        return None
    level = seed_level
    for _ in range(3):
        rim = _rim_level(region, generous, lung, low / (level - background))
        if rim is None:
            break
        level = float(np.clip(rim, background + max(2.0 * low, MIN_CONTRAST_HU), seed_level))
    threshold = background + 0.5 * (level - background)
    nodule = _detach(_component_at(inside & (smooth >= threshold), seeds), sampling, to_seed)
    if nodule is None:
        return None
    return ndimage.binary_fill_holes(nodule)


def _detach(region: np.ndarray, sampling: np.ndarray, to_seed: np.ndarray) -> np.ndarray | None:
    """Keep the blob at the seed: open with a ball tied to its inscribed radius, split thick vessels."""
    if not region.any():
        return None
    depth = edt_mm(region, sampling)
    search = region & (to_seed <= max(3.0, 2.0 * float(np.max(sampling))))
    if not search.any():
        search = region
    near = np.where(search, depth, 0.0)
    centre = tuple(int(v) for v in np.unravel_index(int(np.argmax(near)), near.shape))
    r_in = float(depth[centre]) - 0.5 * float(np.min(sampling))
    if r_in < MIN_RADIUS_MM:
        return None
    opened = _open_mm(_OPENING_FRACTION * r_in, sampling, depth) & region
    blob = _component_at(opened, _point(opened.shape, centre))
    if not blob.any():
        return None
    extent = float(np.max(np.where(blob, _distance(blob.shape, centre, sampling), 0.0)))
    if extent > 3.0 * r_in + 2.0:
        blob = _split_thick_vessels(blob, depth * blob, centre, r_in)
        extent = float(np.max(np.where(blob, _distance(blob.shape, centre, sampling), 0.0)))
        if extent > 3.0 * r_in + 2.0:
            return None  # a tube, not a blob: the seed sits on a vessel
    return blob


def _point(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[index] = True
    return out


def _distance(shape: tuple[int, ...], index: tuple[float, ...] | np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Physical distance (mm) of every voxel of an array of ``shape`` to a (continuous) index point."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    total = np.zeros(shape, dtype=np.float32)
    for axis, grid in enumerate(grids):
        total = total + ((grid - index[axis]) * sampling[axis]).astype(np.float32) ** 2
    return np.sqrt(total)


def _tight(box: tuple[slice, slice, slice], mask: np.ndarray) -> NoduleMask:
    """The mask in its bounding box grown by one voxel (within the crop)."""
    where = np.nonzero(mask)
    low = [max(int(w.min()) - 1, 0) for w in where]
    high = [min(int(w.max()) + 2, n) for w, n in zip(where, mask.shape)]
    inner = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    outer = tuple(slice(b.start + lo, b.start + hi) for b, lo, hi in zip(box, low, high))
    return NoduleMask(box=outer, mask=np.ascontiguousarray(mask[inner]))  # type: ignore[arg-type]
