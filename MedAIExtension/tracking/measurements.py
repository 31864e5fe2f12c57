"""Measure a segmented nodule: sub-voxel surface, volume, axial long/short axes, attenuation class, solid part.

The nodule surface is the half-way surface between its rim attenuation and the local parenchyma. Each voxel of
the boundary layer whose HU lies on the partial-volume ramp says how far its centre is from that surface
(``d = w (0.5 - f)``, ``f`` its nodule fraction, ``w`` the voxel's extent along the surface normal), which gives
one sub-voxel surface point per voxel. A star-shaped surface ``r(direction)`` is fitted through these points
around the nodule centre with a robust angular smoother, so a vessel touching the nodule (whose voxels give
points off the smooth surface, or are left out as leaving the nodule) does not add volume.

A thin vessel lying along the surface is subtler: it shares the partial volume of the nodule's boundary
voxels next to it, which only ever raises their HU and so pushes their points outwards, by up to half a voxel,
in an elongated band. On a small nodule that band can cover a third of the surface, too much for a robust
smoother. Its voxels are found from the foreign density around them: with the current surface, every voxel
just outside it should hold the local parenchyma plus the nodule's own linear partial-volume ramp; a boundary
voxel with an outside neighbour denser than that by more than the image noise allows (four standard
deviations, and a tenth of the contrast) is set aside, whatever the other boundary voxels look like. The
centre and surface are fitted to the rest; then the set-aside points that lie on that surface within the
points' noise (1.5 standard deviations outwards: the vessel does not reach into their voxel) are taken back
and the surface refitted, so the surface under the vessel rests on measured points where there are any and
on the smooth continuation of the clean surface only where there are none (on a small nodule with a vessel
along a third of it, the volume then scatters by about 1.5 % SD with noise, mostly from the centre, which
points on part of a sphere pin down less well). Boundary voxels whose outside neighbours (lightly smoothed)
stand out from the other boundary voxels are set aside (and may come back) the same way; a whole cap of
directions whose points stand outwards from the surface fitted to the rest while the tissue outside it is
denser than around the other caps is left out. Where the lung field ends (a juxta-pleural nodule against
the chest wall) the surface stops at the lung boundary.

From the surface: volume = ∫ r³/3 dΩ (independent of the voxel grid); long and short axes on RAS-axial planes
(Lung-RADS); the same is done for the solid core of a part-solid nodule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.tracking.nodule_segmentation import (
    SOLID_RIM_HU,
    SOLID_TISSUE_HU,
    LocalRegion,
    check_grid,
    crop_region,
    crossing_vessels,
    edt_mm,
    lung_field,
    parenchyma_level,
    rim_band,
    robust_std,
    tissue_level,
)
from MedAIExtension.tracking.types import NoduleKind, NoduleMask, NoduleMeasurement

__all__ = ["AxialAxes", "RadialSurface", "axial_axes", "fit_radial_surface", "measure_nodule"]

#: A solid component smaller than this (mm³; a 2 mm sphere) is not reported: vessel or noise.
MIN_SOLID_MM3 = 4.0 / 3.0 * math.pi
#: Slices thicker than this (mm) make the volume of nodules below ``SMALL_NODULE_MM`` unreliable.
THICK_SLICE_MM = 2.5
SMALL_NODULE_MM = 8.0
_CONTEXT_MM = 6.0
#: Largest standard error (HU) of the fitted parenchyma level at the nodule for a richer background model.
_BACKGROUND_ERROR_HU = 3.0
_SHELL_MM = 3.5
_MIN_POINTS = 12
_MAX_POINTS = 4000
_N_THETA = 48
_N_PHI = 96
_GRID = (_N_THETA, _N_PHI)
#: Overlapping caps of directions (count, angular radius) that :func:`_raised_patches` checks one against the
#: others, and the most points it uses.
_N_PATCHES = 48
_CAP_RADIUS = math.radians(35.0)
_PATCH_POINTS = 800
#: A ramp voxel is shadowed when an outside neighbour is denser than the surface predicts by this many noise
#: standard deviations and this fraction of the nodule's contrast (see :func:`_shadowed`).
_FOREIGN_NOISE = 4.0
_FOREIGN_CONTRAST = 0.1
#: Set-aside surface points within this many noise standard deviations outside the clean surface come back.
_CONSISTENT_SD = 1.5
_CUBE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class AxialAxes:
    """Long and short axis (mm) on one RAS-axial plane; ``superior_mm`` is the plane's S coordinate."""

    long_mm: float
    short_mm: float
    superior_mm: float


@dataclass(frozen=True)
class RadialSurface:
    """A star-shaped closed surface: radius (mm) from ``centre`` on a polar grid of directions.

    Coordinates are the box's physical frame ``(k, j, i) * spacing`` (orthogonal axes, mm). Direction
    ``(theta, phi)`` is ``(cos t, sin t cos p, sin t sin p)``; ``radius[t, p]`` is sampled at cell centres.
    """

    centre: np.ndarray
    radius: np.ndarray

    def towards(self, directions: np.ndarray) -> np.ndarray:
        """Radius (bilinear on the polar grid) in each unit direction (N x 3)."""
        n_theta, n_phi = self.radius.shape
        theta = np.arccos(np.clip(directions[:, 0], -1.0, 1.0))
        phi = np.mod(np.arctan2(directions[:, 2], directions[:, 1]), 2.0 * np.pi)
        rows = np.clip(theta / (np.pi / n_theta) - 0.5, 0.0, n_theta - 1.0)
        cols = phi / (2.0 * np.pi / n_phi) - 0.5 + 1.0
        wrapped = np.concatenate([self.radius[:, -1:], self.radius, self.radius[:, :1]], axis=1)
        return ndimage.map_coordinates(wrapped, [rows, cols], order=1, mode="nearest")

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Radial signed distance (mm, negative inside) of points (N x 3)."""
        offsets = points - self.centre
        length = np.linalg.norm(offsets, axis=1)
        directions = offsets / np.maximum(length, 1e-9)[:, None]
        directions[length < 1e-9] = (1.0, 0.0, 0.0)
        return length - self.towards(directions)

    def volume_mm3(self) -> float:
        """Enclosed volume, ∫ r³/3 dΩ with exact band areas."""
        n_theta, n_phi = self.radius.shape
        edges = np.linspace(0.0, np.pi, n_theta + 1)
        band = (np.cos(edges[:-1]) - np.cos(edges[1:])) * (2.0 * np.pi / n_phi)
        return float(np.sum(self.radius**3 / 3.0 * band[:, None]))

    def clipped(self, limit: np.ndarray) -> RadialSurface:
        """The surface with each radius limited to ``limit`` (same grid)."""
        return RadialSurface(self.centre, np.minimum(self.radius, limit))


def _polar_directions(n_theta: int = _N_THETA, n_phi: int = _N_PHI) -> np.ndarray:
    theta = (np.arange(n_theta) + 0.5) * np.pi / n_theta
    phi = (np.arange(n_phi) + 0.5) * 2.0 * np.pi / n_phi
    t, p = np.meshgrid(theta, phi, indexing="ij")
    return np.stack([np.cos(t), np.sin(t) * np.cos(p), np.sin(t) * np.sin(p)], axis=-1).reshape(-1, 3)


def sphere_centre(points: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Centre of the least-squares sphere through points, or ``fallback`` (also the start) if that fails.

    Points far from the current sphere (more than three robust standard deviations, at least 0.3 mm) are
    dropped before each of the fits, starting from the sphere of median radius around ``fallback``.
    """
    if len(points) < 10:
        return fallback
    centre = np.asarray(fallback, dtype=float)
    distances = np.linalg.norm(points - centre, axis=1)
    residual = distances - float(np.median(distances))
    for _ in range(3):
        keep = np.abs(residual) <= max(3.0 * robust_std(residual), 0.3)
        if np.count_nonzero(keep) < 10:
            return fallback
        design = np.column_stack([2.0 * points[keep], np.ones(np.count_nonzero(keep))])
        solution, *_ = np.linalg.lstsq(design, np.sum(points[keep] ** 2, axis=1), rcond=None)
        centre = solution[:3]
        radius = math.sqrt(max(float(solution[3] + centre @ centre), 0.0))
        residual = np.linalg.norm(points - centre, axis=1) - radius
    return centre


def fit_radial_surface(points: np.ndarray, centre: np.ndarray) -> RadialSurface:
    """Fit a star-shaped surface through surface points (N x 3, mm) around ``centre``.

    The surface is a sphere (the points' robust mean radius) plus a smooth deviation: each polar direction
    gets the Gaussian-weighted (in angle) median of the points' deviations; points further than 2.5 robust
    standard deviations (at least 0.1 mm) from that first surface (vessel walls, noise) are dropped, and the
    rest give a weighted mean with a small pull towards the sphere (two points' worth), so directions without
    points (a vessel junction, the pleural side) follow the sphere instead of their neighbours' noise. The
    angular kernel is wider when there are few points (about 40 points under it).

    Args:
        points: surface points.
        centre: a point inside the surface it is star-shaped around.

    Returns:
        The fitted surface.
    """
    offsets = points - centre
    radii = np.linalg.norm(offsets, axis=1)
    keep = radii > 1e-6
    offsets, radii = offsets[keep], radii[keep]
    if len(radii) > _MAX_POINTS:
        pick = np.linspace(0, len(radii) - 1, _MAX_POINTS).astype(int)
        offsets, radii = offsets[pick], radii[pick]
    directions = offsets / radii[:, None]
    alpha = _kernel_width(len(radii))
    queries = _polar_directions()
    base = float(np.median(radii))
    first = RadialSurface(centre, base + _smooth(queries, directions, radii - base, alpha, median=True).reshape(_GRID))
    refined = _trimmed_mean_fit(queries, directions, radii, first.towards(directions), alpha)
    if refined is None:
        return first
    return RadialSurface(centre, refined[0].reshape(_GRID))


def _kernel_width(count: int) -> float:
    """Angular kernel width (radians) of the surface fit for ``count`` points: about 40 points under it."""
    return float(np.clip(math.sqrt(80.0 / max(count, 1)), 0.12, 0.6))


def _within_noise(residual: np.ndarray) -> np.ndarray:
    """Points whose residual from a first surface is within 2.5 robust standard deviations (at least 0.1 mm)."""
    return np.abs(residual) <= max(2.5 * robust_std(residual), 0.1)


def _trimmed_mean_fit(
    queries: np.ndarray, directions: np.ndarray, radii: np.ndarray, first: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Second pass of the surface fit: radii at ``queries`` and which points were kept, or None if too few.

    Points further than 2.5 robust standard deviations (at least 0.1 mm) from the first surface (``first``, its
    radius in each point's direction) are dropped; the rest give a Gaussian-weighted mean deviation from their
    mean radius with a pull towards the sphere of two points' worth.
    """
    good = _within_noise(radii - first)
    if np.count_nonzero(good) < _MIN_POINTS:
        return None
    base = float(np.mean(radii[good]))
    deviation = _smooth(queries, directions[good], radii[good] - base, alpha, median=False, prior=2.0)
    return base + deviation, good


def _smooth(
    queries: np.ndarray,
    directions: np.ndarray,
    values: np.ndarray,
    alpha: float,
    median: bool,
    prior: float = 0.0,
) -> np.ndarray:
    """Angular Gaussian smoothing (weighted median or mean) of values given at directions, at the query directions.

    Only points within three kernel widths of a query count (a k-d tree finds them).
    """
    from scipy.spatial import cKDTree

    order = np.argsort(values, kind="stable")  # neighbours come out sorted by value when all points count
    directions, values = directions[order], values[order]
    count = len(values)
    reach = min(3.0 * alpha, math.pi)
    share = 0.5 * (1.0 - math.cos(reach))
    neighbours = int(min(count, math.ceil(2.0 * share * count) + 32))
    chord = 2.0 * math.sin(0.5 * reach)
    if neighbours >= count // 2:  # few points: all of them
        index = np.broadcast_to(np.arange(count), (len(queries), count))
        distances = np.sqrt(np.maximum(2.0 - 2.0 * (queries @ directions.T), 0.0))
    else:
        distances, index = cKDTree(directions).query(queries, k=neighbours, distance_upper_bound=chord + 1e-9)
        distances, index = distances.reshape(len(queries), -1), index.reshape(len(queries), -1)
    found = index < count
    padded = np.append(values, 0.0)[index]
    weights = np.where(found, np.exp(-0.5 * np.where(found, distances, 0.0) ** 2 / (alpha * alpha)), 0.0)
    if median:
        if index.shape[1] != count:
            rank = np.argsort(np.where(found, index, count), axis=1, kind="stable")  # index order = value order
            padded = np.take_along_axis(padded, rank, axis=1)
            weights = np.take_along_axis(weights, rank, axis=1)
        cumulative = np.cumsum(weights, axis=1)
        total = cumulative[:, -1]
        pick = np.argmax(cumulative >= 0.5 * total[:, None], axis=1)
        smoothed = np.where(total > 1e-12, padded[np.arange(len(queries)), pick], 0.0)
    else:
        smoothed = (weights * padded).sum(axis=1) / (weights.sum(axis=1) + prior + 1e-300)
    return smoothed


def _fibonacci_directions(count: int) -> np.ndarray:
    """``count`` near-uniform unit directions (N x 3)."""
    index = np.arange(count) + 0.5
    z = 1.0 - 2.0 * index / count
    angle = math.pi * (3.0 - math.sqrt(5.0)) * index
    ring = np.sqrt(1.0 - z * z)
    return np.stack([z, ring * np.cos(angle), ring * np.sin(angle)], axis=1)


def _raised_patches(points: np.ndarray, centre: np.ndarray, excess: np.ndarray, contrast: float) -> np.ndarray:
    """Which surface points lie in a cap of directions that stands outside the rest of the surface over dense tissue.

    Leave-one-cap-out consistency: the points are grouped into overlapping angular caps around ``centre``;
    each cap's points are compared with the smooth surface fitted (as in :func:`fit_radial_surface`) to the
    points outside it, and their median radial residual says how far the cap stands off. A cap is dropped when
    it stands outwards beyond the caps' typical residual by more than three one-sided robust standard deviations
    (the inward half: a vessel only ever pushes points outwards) and 0.05 mm, *and* the tissue just outside its
    voxels (``excess``: HU over the parenchyma, see :func:`_outside_excess`) is denser than around the other
    caps by two one-sided robust standard deviations and a tenth of the ``contrast``. That is a vessel lying
    flat along the nodule: too faint voxel by voxel for :func:`_shadowed`, but it raises a whole patch. A lobe
    of the nodule itself stands out too, but has parenchyma outside it and stays. Nothing is dropped when the
    caps would take more than half of the points.

    Args:
        points: surface points (N x 3, mm).
        centre: the centre the surface is fitted around.
        excess: per point, the densest outside neighbour's excess over the parenchyma (HU, ``-inf`` if none).
        contrast: the nodule's contrast over the parenchyma (HU).

    Returns:
        Boolean mask of the points to leave out.
    """
    dropped = np.zeros(len(points), dtype=bool)
    offsets = points - centre
    radii = np.linalg.norm(offsets, axis=1)
    if len(radii) < 4 * _MIN_POINTS or np.any(radii < 1e-6):
        return dropped
    directions = offsets / radii[:, None]
    check = np.arange(len(radii))
    if len(check) > _PATCH_POINTS:
        check = np.linspace(0, len(radii) - 1, _PATCH_POINTS).astype(int)
    alpha = _kernel_width(len(check))
    sub_dirs, sub_radii = directions[check], radii[check]
    base = float(np.median(sub_radii))
    first = base + _smooth(sub_dirs, sub_dirs, sub_radii - base, alpha, median=True)
    good = _within_noise(sub_radii - first)
    caps = _fibonacci_directions(_N_PATCHES)
    member = directions @ caps.T >= math.cos(_CAP_RADIUS)
    sub_member = member[check]
    least = max(4, len(check) // 16)
    stand = np.full(_N_PATCHES, np.nan)
    for cap in range(_N_PATCHES):
        members = sub_member[:, cap]
        others = good & ~members
        if np.count_nonzero(members) < least or np.count_nonzero(others) < _MIN_POINTS:
            continue
        level = float(np.mean(sub_radii[others]))
        fitted = level + _smooth(
            sub_dirs[members], sub_dirs[others], sub_radii[others] - level, alpha, median=False, prior=2.0
        )
        stand[cap] = float(np.median(sub_radii[members] - fitted))
    seen = np.nonzero(np.isfinite(stand))[0]
    if len(seen) < _N_PATCHES // 2:
        return dropped
    typical = float(np.median(stand[seen]))
    below = stand[seen][stand[seen] <= typical]
    spread = 1.4826 * float(np.median(typical - below))
    raised = np.isfinite(stand) & (stand - typical > max(3.0 * spread, 0.05))
    seen_excess = np.isfinite(excess)
    density = np.full(_N_PATCHES, np.nan)
    for cap in seen:
        values = excess[member[:, cap] & seen_excess]
        if len(values) >= least:
            density[cap] = float(np.median(values))
    known = density[np.isfinite(density)]
    if len(known) < _N_PATCHES // 2:
        return dropped
    usual = float(np.median(known))
    dense_above = usual + max(2.0 * 1.4826 * float(np.median(usual - known[known <= usual])), 0.1 * contrast)
    raised &= np.isfinite(density) & (np.nan_to_num(density, nan=-np.inf) > dense_above)
    dropped = member[:, raised].any(axis=1)
    return dropped if np.count_nonzero(dropped) <= len(radii) // 2 else np.zeros(len(radii), dtype=bool)


@dataclass(frozen=True)
class _Background:
    """Parenchyma attenuation around the nodule as a quadratic in position (mm), with the image noise.

    The lung's own texture and gravity gradient vary over a few centimetres; a quadratic fitted to the shell
    around the nodule interpolates them across it.
    """

    origin: np.ndarray  # box index (k, j, i) of the expansion point
    sampling: np.ndarray
    coefficients: np.ndarray
    noise: float

    def terms(self, idx: np.ndarray) -> np.ndarray:
        """Design matrix of the polynomial at box indices (N x 3)."""
        x = (np.asarray(idx, dtype=float) - self.origin) * self.sampling / 10.0
        columns = [np.ones(len(x)), x[:, 0], x[:, 1], x[:, 2]]
        if len(self.coefficients) == 10:
            columns += [x[:, 0] ** 2, x[:, 1] ** 2, x[:, 2] ** 2]
            columns += [x[:, 0] * x[:, 1], x[:, 0] * x[:, 2], x[:, 1] * x[:, 2]]
        return np.column_stack(columns)[:, : len(self.coefficients)]

    def at(self, where: np.ndarray) -> np.ndarray:
        """Parenchyma HU at the voxels of a boolean mask (in ``np.nonzero`` order)."""
        return self.terms(np.argwhere(where)) @ self.coefficients


def measure_nodule(image: Image, mask: NoduleMask, lungs: np.ndarray | None = None) -> NoduleMeasurement:
    """Volume, axes, attenuation class and solid component of one segmented nodule.

    Args:
        image: CT in HU (the one the mask was made on).
        mask: the nodule (from :func:`~MedAIExtension.tracking.nodule_segmentation.segment_nodule` or any
            other segmentation of it on this image).
        lungs: boolean lung mask on the image grid, or None (air-containing voxels are the lung side).

    Returns:
        The measurement: centre = mask centroid in RAS, volume in mm³ (inside the half-way surface),
        axes on RAS-axial planes, diameters rounded to 0.1 mm.

    Raises:
        InputError: if the mask is empty or does not fit the image, or the lung mask has another shape.
        GeometryError: if the image grid is sheared.
    """
    check_grid(image)
    box, nodule = _checked(image, mask, lungs)
    region = crop_region(image, box)
    inner = tuple(slice(m.start - b.start, m.stop - b.start) for m, b in zip(mask.box, box))
    inside = np.zeros(region.hu.shape, dtype=bool)
    inside[inner] = nodule
    sampling = region.sampling
    reach = _reach_mm(inside, sampling)
    lung = lung_field(region.smooth, None if lungs is None else lungs[box], sampling, 2.0 * reach + 2.0) | inside
    outside = edt_mm(~inside, sampling)
    background = _background(region, lung & ~inside, outside, np.argwhere(inside).mean(axis=0))
    own = inside & ~crossing_vessels(region.smooth, inside, sampling)
    rim = _rim_hu(region, inside, own, lung)
    own_lung = own & ndimage.binary_erosion(lung, _CUBE, border_value=1)
    for _ in range(6):  # the rim level, then the surface it defines, then the rim just inside that surface
        warnings: list[str] = []
        fitted = _nodule_surface(region, inside, lung, outside, background, rim, warnings)
        refined = _surface_rim(region, fitted, own_lung)
        if refined is None or abs(refined - rim) < 2.0:
            break
        rim = refined
    surface = fitted.clipped(_lung_limit(lung, sampling, fitted.centre, fitted.radius.shape))
    volume = surface.volume_mm3()
    axes = axial_axes(surface, region.ijk_to_ras, sampling)
    long_mm, short_mm = round(axes.long_mm, 1), round(axes.short_mm, 1)
    mean_diameter = round(0.5 * (long_mm + short_mm), 1)
    kind, solid_volume, solid_diameter = _solid_component(region, inside, own, lung, rim, image.voxel_volume_mm3)
    if kind is NoduleKind.SOLID:
        solid_volume, solid_diameter = volume, mean_diameter
    touches = _touches_pleura(region, inside, None if lungs is None else lungs[box], reach)
    _warn(image, region, inside, mean_diameter, warnings)
    return NoduleMeasurement(
        center_ras=_centroid_ras(inside, region.ijk_to_ras),
        volume_mm3=round(volume, 1),
        long_axis_mm=long_mm,
        short_axis_mm=short_mm,
        mean_diameter_mm=mean_diameter,
        mean_hu=round(float(region.hu[inside].mean()), 1),
        kind=kind,
        solid_volume_mm3=round(solid_volume, 1),
        solid_mean_diameter_mm=solid_diameter,
        touches_pleura=touches,
        warnings=tuple(warnings),
    )


def _touches_pleura(region: LocalRegion, inside: np.ndarray, lungs: np.ndarray | None, reach: float) -> bool:
    """Whether the nodule abuts the chest wall: a neighbour voxel outside the lung field and not nodule.

    The lung mask is taken as given (a closing would flatten the nodule's bump into the wall); without one,
    the air-containing lung closed just enough to hold the nodule stands in.
    """
    field = (
        np.asarray(lungs, dtype=bool) if lungs is not None else lung_field(region.smooth, None, region.sampling, reach)
    )
    return bool(np.any(ndimage.binary_dilation(inside, _CUBE) & ~inside & ~field))


def _checked(image: Image, mask: NoduleMask, lungs: np.ndarray | None) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    if lungs is not None and np.shape(lungs) != image.shape:
        raise InputError(
            f"The lung mask has shape {np.shape(lungs)} but the image has {image.shape} (k, j, i); "
            "pass the lung mask computed on this image."
        )
    box = mask.box
    if len(box) != 3 or any(not isinstance(s, slice) or s.step not in (None, 1) for s in box):
        raise InputError("NoduleMask.box must be three contiguous index slices (k, j, i).")
    bounds = [s.indices(n) for s, n in zip(box, image.shape)]
    if any(lo != s.start or hi != s.stop for (lo, hi, _), s in zip(bounds, box)):
        raise InputError(
            f"NoduleMask box {box} does not lie inside the image {image.shape}; use the mask made on this image."
        )
    nodule = np.asarray(mask.mask, dtype=bool)
    if nodule.shape != tuple(s.stop - s.start for s in box):
        raise InputError(f"NoduleMask.mask has shape {nodule.shape}, which does not match its box {box}.")
    if not nodule.any():
        raise InputError("The nodule mask is empty; segment the nodule first (segment_nodule returned nothing).")
    sampling = np.asarray(image.spacing, dtype=float)[::-1]
    grow = np.ceil(_CONTEXT_MM / sampling).astype(int)
    context = tuple(slice(max(s.start - int(g), 0), min(s.stop + int(g), n)) for s, g, n in zip(box, grow, image.shape))
    return context, nodule  # type: ignore[return-value]


def _reach_mm(inside: np.ndarray, sampling: np.ndarray) -> float:
    """Largest distance (mm) of a mask voxel from the mask centroid."""
    idx = np.argwhere(inside).astype(float)
    offsets = (idx - idx.mean(axis=0)) * sampling
    return float(np.sqrt((offsets**2).sum(axis=1)).max())


def _background(region: LocalRegion, lung: np.ndarray, outside: np.ndarray, origin: np.ndarray) -> _Background:
    """Fit the parenchyma in a shell around the nodule (beyond its partial volume; vessels and air left out)."""
    start = 1.5 * float(np.max(region.sampling))
    shell = lung & (outside > start) & (outside <= start + _SHELL_MM)
    level = parenchyma_level(region.smooth[shell])
    if level is None:
        level = parenchyma_level(region.smooth[lung])
    if level is None:
        raise InputError(
            "There is no lung parenchyma around this nodule mask, so its boundary cannot be measured; "
            "check that the mask and the lung mask belong to this image."
        )
    # Partial volume with vessels and the chest wall only ever raises the HU: keep clear of both.
    clear = ndimage.binary_erosion(lung, _CUBE, iterations=2, border_value=1)
    clear &= ~ndimage.binary_dilation(region.smooth > level + 100.0, _CUBE, iterations=2)
    near = shell & (np.abs(region.smooth - level) < 150.0)
    if np.count_nonzero(near & clear) >= 100:
        near &= clear
    values = region.hu[near].astype(float)
    fallback = _Background(origin, region.sampling, np.array([level]), robust_std(values))
    best = fallback
    for count in (10, 4):  # quadratic, then linear: the richest model the shell pins down at the nodule
        if values.size < 10 * count:
            continue
        model = _Background(origin, region.sampling, np.zeros(count), fallback.noise)
        design = model.terms(np.argwhere(near))
        keep = np.ones(len(values), dtype=bool)
        for _ in range(3):
            coefficients, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
            residual = values - design @ coefficients
            keep = np.abs(residual) < 3.0 * max(robust_std(residual[keep]), 1.0)
        noise = robust_std(residual[keep])
        # Standard error of the fitted level at the nodule centre (noise is correlated over ~3 voxels).
        centre = model.terms(origin[None, :])[0]
        gram = design[keep].T @ design[keep]
        error = noise * math.sqrt(3.0 * max(float(centre @ np.linalg.pinv(gram) @ centre), 0.0))
        best = _Background(origin, region.sampling, coefficients, noise)
        if error <= _BACKGROUND_ERROR_HU:
            return best
    return best


def _rim_hu(region: LocalRegion, inside: np.ndarray, own: np.ndarray, lung: np.ndarray) -> float:
    """HU of the nodule's outermost voxels free of partial volume (its ground glass, if any).

    ``own`` are the nodule voxels that are not vessels crossing it. Depth counts from the lung side only.
    """
    depth = edt_mm(inside | ~lung, region.sampling)
    start, stop = rim_band(region.sampling)
    band = own & (depth >= start) & (depth < stop)
    if np.count_nonzero(band) < 4:
        band = own & (depth >= 0.75 * float(depth[own].max()))
    return tissue_level(region.hu[band], region.hu[own & (depth >= start)])


def _surface_rim(region: LocalRegion, surface: RadialSurface, own: np.ndarray) -> float | None:
    """HU of the nodule just inside its fitted surface, beyond the partial-volume ramp (0.5 mm deep band)."""
    sampling = region.sampling
    reach = float(surface.radius.max())
    low = np.maximum(np.floor((surface.centre - reach) / sampling).astype(int), 0)
    high = np.minimum(np.ceil((surface.centre + reach) / sampling).astype(int) + 1, region.hu.shape)
    block = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in block], indexing="ij"), axis=-1)
    positions = grid.reshape(-1, 3) * sampling
    distance = surface.signed_distance(positions)
    radial = positions - surface.centre
    radial /= np.maximum(np.linalg.norm(radial, axis=1), 1e-9)[:, None]
    half_width = 0.5 * (np.abs(radial) @ sampling)
    pure = (distance <= -half_width - 0.05) & own[block].reshape(-1)
    band = pure & (distance >= -half_width - 0.55)
    if np.count_nonzero(band) < 8:
        return None
    values = region.hu[block].reshape(-1)
    return tissue_level(values[band], values[pure])


def _layers(mask: np.ndarray, depth: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Inner and outer boundary layers of a mask, ``depth`` voxels each (26-neighbourhood)."""
    inner = mask & ~ndimage.binary_erosion(mask, _CUBE, iterations=depth, border_value=1)
    outer = ndimage.binary_dilation(mask, _CUBE, iterations=depth) & ~mask
    return inner, outer


def _nodule_surface(
    region: LocalRegion,
    inside: np.ndarray,
    lung: np.ndarray,
    outside: np.ndarray,
    background: _Background,
    rim: float,
    warnings: list[str],
) -> RadialSurface:
    """The nodule's half-way surface, limited by the lung field."""
    sampling = region.sampling
    near = ndimage.binary_dilation(inside, _CUBE, iterations=3) & ~ndimage.binary_erosion(
        inside, _CUBE, iterations=3, border_value=1
    )
    usable = near & ndimage.binary_erosion(lung, _CUBE, border_value=1)
    usable &= ~_vessel_junctions(region, inside, lung, outside, background, rim)
    where = np.argwhere(usable)
    parenchyma = background.at(usable)
    contrast = rim - parenchyma
    centre = np.argwhere(inside).mean(axis=0) * sampling
    fraction = (region.hu[usable] - parenchyma) / np.maximum(contrast, 1e-6)
    points = None
    clear = bool(contrast.size) and float(np.min(contrast)) > 3.0 * max(background.noise, 10.0)
    if clear:
        inner, outer = _layers(inside, 1)
        layer = (inner | outer)[usable]
        noise = background.noise / float(np.min(contrast))
        margin = float(np.clip(2.0 * noise, 0.1, 0.35))
        on_ramp = layer & (fraction >= margin) & (fraction <= 1.0 - margin)
        points = _ramp_points(region, where, fraction, centre, on_ramp)
    if points is None or len(points) < _MIN_POINTS:
        warnings.append("too few partial-volume voxels on the nodule surface: volume from the voxel mask")
        points = _mask_points(inside, sampling)
        clear = False
    fitted = sphere_centre(points, centre)
    if _inside_mask(inside, fitted, sampling):
        centre = fitted
    surface = fit_radial_surface(points, centre)
    if clear:
        # Second pass: pick the ramp voxels by their place relative to the first surface, not by their noisy
        # value, and keep their value unclipped: no selection bias, and every ramp voxel counts. Voxels with
        # dense tissue next to them outside the surface (a thin vessel along it) are set aside: its partial
        # volume only ever pushes their points outwards. The centre and surface are refitted without them, then
        # the set-aside points that lie on that surface within the points' noise (the vessel does not reach
        # into their voxels) are taken back, so the surface under a vessel is not left to extrapolation alone.
        contrast_level = float(np.median(contrast))
        for _ in range(2):
            ramp = _expected_ramp(where, sampling, surface) & (fraction > -1.0) & (fraction < 2.0)
            shadowed = _shadowed(region, where, ramp, surface, background, contrast_level)[ramp]
            ramp_points = _ramp_points(region, where, fraction, centre, ramp)
            if ramp_points is None or np.count_nonzero(~shadowed) < _MIN_POINTS:
                break
            second = ramp_points[~shadowed]
            excess = _outside_excess(region, where[ramp][~shadowed], surface, background)
            second = second[~_raised_patches(second, centre, excess, contrast_level)]
            centre = _refit_centre(second, centre, inside, sampling)
            aside = ramp_points[shadowed]
            back = _consistent(aside, second, centre)
            if back.any():
                second = np.concatenate([second, aside[back]])
                centre = _refit_centre(second, centre, inside, sampling)
            surface = fit_radial_surface(second, centre)
    return surface


def _refit_centre(points: np.ndarray, centre: np.ndarray, inside: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """The centre of the sphere through ``points`` if it lies in the mask, else ``centre``."""
    fitted = sphere_centre(points, centre)
    return fitted if _inside_mask(inside, fitted, sampling) else centre


def _consistent(candidates: np.ndarray, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Which ``candidates`` (set-aside surface points) lie on the surface fitted to ``points`` within their noise.

    The surface is that of :func:`fit_radial_surface` around ``centre``, evaluated at the points' own
    directions only (a robust angular median, then the mean of the points within 2.5 robust standard
    deviations of it). The noise is the robust standard deviation of ``points`` about it (at least 0.01 mm).
    Foreign partial volume only moves a point outwards, so a set-aside point counts as clean when it stands out
    by no more than ``_CONSISTENT_SD`` of that noise (and lies inside by no more than the fit's own 2.5).
    """
    back = np.zeros(len(candidates), dtype=bool)
    offsets = points - centre
    radii = np.linalg.norm(offsets, axis=1)
    aside = candidates - centre
    aside_radii = np.linalg.norm(aside, axis=1)
    if len(candidates) == 0 or len(radii) < _MIN_POINTS or np.any(radii < 1e-6) or np.any(aside_radii < 1e-6):
        return back
    directions = offsets / radii[:, None]
    queries = np.concatenate([directions, aside / aside_radii[:, None]])
    alpha = _kernel_width(len(radii))
    base = float(np.median(radii))
    first = base + _smooth(directions, directions, radii - base, alpha, median=True)
    refined = _trimmed_mean_fit(queries, directions, radii, first, alpha)
    if refined is None:
        return back
    fitted, good = refined
    spread = max(robust_std(radii[good] - fitted[: len(radii)][good]), 0.01)
    offset = aside_radii - fitted[len(radii) :]
    return (offset <= _CONSISTENT_SD * spread) & (offset >= -2.5 * spread)


def _expected_ramp(where: np.ndarray, sampling: np.ndarray, surface: RadialSurface) -> np.ndarray:
    """Voxels (box indices, N x 3) that a surface crosses: expected nodule fraction between 0.1 and 0.9."""
    positions = where * sampling
    offsets = positions - surface.centre
    directions = offsets / np.maximum(np.linalg.norm(offsets, axis=1), 1e-9)[:, None]
    expected = 0.5 - surface.signed_distance(positions) / (np.abs(directions) @ sampling)
    return (expected >= 0.1) & (expected <= 0.9)


def _shadowed(
    region: LocalRegion,
    where: np.ndarray,
    candidates: np.ndarray,
    surface: RadialSurface,
    background: _Background,
    contrast: float,
) -> np.ndarray:
    """Which ``candidates`` of the voxels ``where`` have foreign dense tissue next to them, outside the surface.

    Two tests, either is enough:

    * *Foreign density* (:func:`_foreign_excess`): the outside neighbours of a ramp voxel (26-neighbourhood,
      centres beyond the surface) should hold parenchyma plus the nodule's own partial volume as the current
      surface predicts it. Where one of them is denser than that prediction by more than four noise standard
      deviations and a tenth of the contrast, a structure that is not the nodule (a vessel lying against it)
      reaches into the voxel's neighbourhood and, through the voxel's own partial volume, pushes its surface
      point outwards. The threshold is anchored on the model (zero foreign density) and the image noise, not on
      the other ramp voxels, so it still holds when a vessel runs along much of a small nodule's surface. It
      is not applied when it would leave fewer than a quarter of the candidates (and two dozen): then the
      excess is more likely a blur wider than the linear ramp (or a nodule buried in vessels) than one vessel.
    * *Relative excess*: the largest excess of the outside neighbours (lightly smoothed HU, centres at least
      half their width beyond the surface) over the local parenchyma stands out from that of the other ramp
      voxels by three one-sided robust standard deviations and a tenth of the contrast.
    """
    shadowed = np.zeros(len(where), dtype=bool)
    picked = np.nonzero(candidates)[0]
    if len(picked) < 2 * _MIN_POINTS:
        return shadowed
    foreign = _foreign_excess(region, where[picked], surface, background, contrast)
    dense = foreign > max(_FOREIGN_NOISE * background.noise, _FOREIGN_CONTRAST * contrast)
    if np.count_nonzero(~dense) >= max(2 * _MIN_POINTS, len(picked) // 4):
        shadowed[picked] = dense
    excess = _outside_excess(region, where[picked], surface, background)
    seen = np.isfinite(excess)
    if np.count_nonzero(seen) < 2 * _MIN_POINTS:
        return shadowed
    typical = float(np.median(excess[seen]))
    below = excess[seen][excess[seen] <= typical]
    spread = 1.4826 * float(np.median(typical - below))
    shadowed[picked[seen]] |= excess[seen] > typical + max(3.0 * spread, 0.1 * contrast)
    return shadowed


def _foreign_excess(
    region: LocalRegion, where: np.ndarray, surface: RadialSurface, background: _Background, contrast: float
) -> np.ndarray:
    """Largest foreign density (HU) among the outside neighbours of each voxel (N x 3 indices).

    Foreign density is a voxel's HU (unsmoothed) less what the current surface predicts there: the local
    parenchyma plus ``contrast`` times the nodule fraction of the linear partial-volume ramp (``0.5 - d / w``
    clipped to [0, 1], ``d`` the signed distance, ``w`` the voxel's extent along the radial direction).
    Outside neighbours are those of the 26-neighbourhood whose centres lie beyond the surface; ``-inf`` where
    a voxel has none.
    """
    sampling = region.sampling
    neighbours, inbox = _neighbours(where, region.hu.shape)
    positions = neighbours * sampling
    offsets = positions - surface.centre
    directions = offsets / np.maximum(np.linalg.norm(offsets, axis=1), 1e-9)[:, None]
    distance = surface.signed_distance(positions)
    fraction = np.clip(0.5 - distance / (np.abs(directions) @ sampling), 0.0, 1.0)
    predicted = background.terms(neighbours) @ background.coefficients + contrast * fraction
    foreign = region.hu[tuple(neighbours.T)] - predicted
    return np.where(inbox & (distance > 0.0), foreign, -np.inf).reshape(len(where), -1).max(axis=1)


def _neighbours(where: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The 26 neighbours of each voxel (N*26 x 3 indices, clipped to the box) and whether each lies in the box."""
    steps = np.argwhere(_CUBE) - 1
    steps = steps[np.any(steps != 0, axis=1)]
    neighbours = (where[:, None, :] + steps[None, :, :]).reshape(-1, 3)
    inbox = np.all((neighbours >= 0) & (neighbours < shape), axis=1)
    return np.clip(neighbours, 0, np.asarray(shape) - 1), inbox


def _outside_excess(
    region: LocalRegion, where: np.ndarray, surface: RadialSurface, background: _Background
) -> np.ndarray:
    """Largest excess (HU) over the local parenchyma among the outside neighbours of each voxel (N x 3 indices).

    Outside neighbours are those of the 26-neighbourhood whose centres lie at least half their width beyond the
    surface; ``-inf`` where a voxel has none.
    """
    sampling = region.sampling
    neighbours, inbox = _neighbours(where, region.hu.shape)
    positions = neighbours * sampling
    offsets = positions - surface.centre
    directions = offsets / np.maximum(np.linalg.norm(offsets, axis=1), 1e-9)[:, None]
    beyond = surface.signed_distance(positions) >= 0.5 * (np.abs(directions) @ sampling)
    beyond &= inbox
    excess = region.smooth[tuple(neighbours.T)] - background.terms(neighbours) @ background.coefficients
    return np.where(beyond, excess, -np.inf).reshape(len(where), -1).max(axis=1)


def _inside_mask(mask: np.ndarray, point: np.ndarray, sampling: np.ndarray) -> bool:
    index = np.rint(point / sampling).astype(int)
    return bool(np.all((index >= 0) & (index < mask.shape)) and mask[tuple(index)])


def _vessel_junctions(
    region: LocalRegion,
    inside: np.ndarray,
    lung: np.ndarray,
    outside: np.ndarray,
    background: _Background,
    rim: float,
) -> np.ndarray:
    """Voxels where dense tissue leaves the nodule (a vessel touching it), with their neighbours.

    Dense here means beyond a quarter of the nodule's contrast; the vessel shows as dense voxels just outside
    the nodule that touch dense voxels beyond the nodule's partial volume. Their HU mixes the vessel in, so
    they say nothing about the nodule's own surface. A vessel passing nearby without touching taints nothing.
    """
    diagonal = float(np.sqrt(np.sum(region.sampling**2)))
    near = lung & ~inside & (outside <= 2.0 * diagonal)
    parenchyma = background.at(near)
    dense = np.zeros(region.hu.shape, dtype=bool)
    dense[near] = (region.smooth[near] - parenchyma) > 0.25 * (rim - parenchyma)
    beyond = dense & (outside > 1.01 * diagonal)
    touching = dense & ~beyond & ndimage.binary_dilation(beyond, _CUBE)
    return ndimage.binary_dilation(touching | (beyond & ndimage.binary_dilation(touching, _CUBE)), _CUBE)


def _ramp_points(
    region: LocalRegion, where: np.ndarray, fraction: np.ndarray, centre: np.ndarray, on_ramp: np.ndarray
) -> np.ndarray | None:
    """Sub-voxel surface points of the voxels ``on_ramp``: each centre moved by ``w (0.5 - f)`` along the normal."""
    where, fraction = where[on_ramp], fraction[on_ramp]
    if len(where) == 0:
        return None
    sampling = region.sampling
    smooth = ndimage.gaussian_filter(region.hu, sigma=0.8 / sampling, truncate=3.0)
    gradient = np.stack(
        [ndimage.correlate1d(smooth, [-0.5, 0.0, 0.5], axis=a)[tuple(where.T)] / sampling[a] for a in range(3)],
        axis=1,
    )
    positions = where * sampling
    radial = positions - centre
    radial /= np.maximum(np.linalg.norm(radial, axis=1), 1e-9)[:, None]
    normal = -gradient / np.maximum(np.linalg.norm(gradient, axis=1), 1e-9)[:, None]
    bad = np.einsum("ij,ij->i", normal, radial) < 0.5
    normal[bad] = radial[bad]
    width = np.abs(normal) @ sampling
    return positions - (width * (0.5 - fraction))[:, None] * normal


def _mask_points(inside: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Surface points of a binary mask: midway between boundary voxels and their outside face neighbours."""
    points = []
    for axis in range(3):
        for step in (-1, 1):
            shifted = np.roll(inside, -step, axis=axis)
            edge = inside & ~shifted
            if step == 1:
                edge[(slice(None),) * axis + (-1,)] = inside[(slice(None),) * axis + (-1,)]
            else:
                edge[(slice(None),) * axis + (0,)] = inside[(slice(None),) * axis + (0,)]
            where = np.argwhere(edge).astype(float)
            where[:, axis] += 0.5 * step
            points.append(where * sampling)
    return np.concatenate(points)


def _lung_limit(lung: np.ndarray, sampling: np.ndarray, centre: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance (mm) from the centre to the end of the lung field along each polar direction."""
    directions = _polar_directions(*shape)
    step = 0.25 * float(np.min(sampling))
    reach = float(np.linalg.norm(np.asarray(lung.shape) * sampling))
    limit = np.full(len(directions), reach)
    open_rays = np.ones(len(directions), dtype=bool)
    size = np.asarray(lung.shape)
    for t in np.arange(step, reach, step):
        index = np.rint((centre + t * directions[open_rays]) / sampling).astype(int)
        inside_box = np.all((index >= 0) & (index < size), axis=1)
        hit = np.zeros(len(index), dtype=bool)
        hit[inside_box] = ~lung[tuple(index[inside_box].T)]
        ended = hit | ~inside_box
        rays = np.nonzero(open_rays)[0]
        limit[rays[ended]] = np.where(hit[ended], t - 0.5 * step, reach)
        open_rays[rays[ended]] = False
        if not open_rays.any():
            break
    return limit.reshape(shape)


def _solid_component(
    region: LocalRegion, inside: np.ndarray, own: np.ndarray, lung: np.ndarray, rim: float, voxel_mm3: float
) -> tuple[NoduleKind, float, float]:
    """Attenuation class, solid-core volume (mm³) and core mean diameter (mm, 0.1 mm).

    Solid tissue inside a ground-glass nodule counts as a core only where it does not continue outside the
    nodule (a vessel crossing the halo does).
    """
    if rim >= SOLID_RIM_HU:
        return NoduleKind.SOLID, 0.0, 0.0
    sampling = region.sampling
    threshold = rim + 0.5 * (SOLID_TISSUE_HU - rim)
    dense = (region.smooth >= threshold) & lung
    radius = max(float(np.min(sampling)), 0.75)
    depth = edt_mm(dense, sampling)
    seeds = depth > radius
    opened = dense & (edt_mm(~seeds, sampling) <= radius + 0.5 * float(np.sqrt(np.sum(sampling**2))))
    labels, count = ndimage.label(opened, structure=_CUBE)
    near = ndimage.binary_dilation(inside, _CUBE)
    wall = ndimage.binary_dilation(~lung, _CUBE)  # solid tissue against the chest wall is not a core
    escaping = np.unique(labels[opened & (~near | wall)])
    core = (labels > 0) & ~np.isin(labels, escaping) & inside
    if count == 0 or not core.any():
        return NoduleKind.GROUND_GLASS, 0.0, 0.0
    interior = ndimage.binary_erosion(core, _CUBE, border_value=1)
    pure = core & (edt_mm(core, sampling) >= rim_band(sampling)[0])
    # A small core shows no voxel free of partial volume: then soft tissue's nominal attenuation is the level.
    solid_level = float(np.median(region.hu[pure])) if np.count_nonzero(pure) >= 20 else SOLID_TISSUE_HU
    inner, outer = _layers(core, 1)
    usable = (inner | outer) & own & ndimage.binary_erosion(lung, _CUBE, border_value=1)
    fraction = (region.hu[usable] - rim) / (solid_level - rim)
    centre = np.argwhere(core).mean(axis=0) * sampling
    points = _ramp_points(region, np.argwhere(usable), fraction, centre, (fraction >= 0.15) & (fraction <= 0.85))
    if points is None or len(points) < _MIN_POINTS:
        volume = (np.count_nonzero(interior) + float(np.clip(fraction, 0.0, 1.0).sum())) * voxel_mm3
        diameter = round((6.0 * volume / math.pi) ** (1.0 / 3.0), 1)
    else:
        fitted = sphere_centre(points, centre)
        surface = fit_radial_surface(points, fitted if _inside_mask(core, fitted, sampling) else centre)
        volume = surface.volume_mm3()
        axes = axial_axes(surface, region.ijk_to_ras, sampling)
        diameter = round(0.5 * (round(axes.long_mm, 1) + round(axes.short_mm, 1)), 1)
    if volume < MIN_SOLID_MM3:
        return NoduleKind.GROUND_GLASS, 0.0, 0.0
    return NoduleKind.PART_SOLID, volume, diameter


def axial_axes(surface: RadialSurface, ijk_to_ras: np.ndarray, sampling: np.ndarray) -> AxialAxes:
    """Long and perpendicular short axis (mm) of a surface's cross-sections on RAS-axial planes.

    Planes are the image's own slices when its k axis is the S axis (what a reader measures on), otherwise
    planes every half voxel. On each plane the section's outline is the zero contour of the surface's signed
    distance: long axis = largest diameter, short axis = longest chord perpendicular to it. The plane with the
    longest long axis wins.

    Args:
        surface: the fitted surface (box physical frame ``(k, j, i) * spacing``).
        ijk_to_ras: the box's 4x4 IJK-to-RAS affine.
        sampling: spacing along k, j, i (mm).

    Returns:
        The axes (unrounded); zeros if no plane cuts the surface.
    """
    from skimage import measure

    affine = np.asarray(ijk_to_ras, dtype=float)
    reach = float(surface.radius.max())
    centre_ras = affine[:3, :3] @ (surface.centre / sampling)[::-1] + affine[:3, 3]
    step = max(float(np.min(sampling)) / 3.0, reach / 60.0, 0.05)
    xs = centre_ras[0] + np.arange(-reach - 2 * step, reach + 2.5 * step, step)
    ys = centre_ras[1] + np.arange(-reach - 2 * step, reach + 2.5 * step, step)
    k_column = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    if abs(k_column[2]) > 0.999 and np.allclose(affine[2, :2], 0.0, atol=1e-6):
        slices = affine[2, 3] + affine[2, 2] * np.arange(-1000, 1000)
        zs = slices[np.abs(slices - centre_ras[2]) < reach]
    else:
        z_step = max(0.5 * float(np.min(sampling)), reach / 40.0)
        zs = centre_ras[2] + np.arange(-reach, reach + z_step, z_step)
    inverse = np.linalg.inv(affine)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    best = AxialAxes(0.0, 0.0, 0.0)
    for z in zs:
        ras = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z), np.ones(gx.size)])
        kji = (inverse @ ras)[:3][::-1].T * sampling
        distance = surface.signed_distance(kji).reshape(gx.shape)
        if distance.min() >= 0.0:
            continue
        contours = measure.find_contours(distance, 0.0)
        if not contours:
            continue
        outline = max(contours, key=_area) * step
        long_mm, short_mm = _polygon_axes(outline)
        if long_mm > best.long_mm:
            best = AxialAxes(long_mm, short_mm, float(z))
    return best


def _area(contour: np.ndarray) -> float:
    x, y = contour[:, 0], contour[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _polygon_axes(points: np.ndarray) -> tuple[float, float]:
    """Largest diameter of a closed polygon and its longest chord perpendicular to that diameter."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        hull = points
    diff = hull[:, None, :] - hull[None, :, :]
    dist = np.sqrt((diff**2).sum(axis=2))
    a, b = np.unravel_index(int(np.argmax(dist)), dist.shape)
    long_mm = float(dist[a, b])
    if long_mm <= 0.0:
        return 0.0, 0.0
    u = (hull[b] - hull[a]) / long_mm
    v = np.array([-u[1], u[0]])
    along = (points - hull[a]) @ u
    across = (points - hull[a]) @ v
    u0, u1 = along, np.roll(along, -1)
    v0, v1 = across, np.roll(across, -1)
    ts = np.linspace(0.0, long_mm, 402)[1:-1]
    crosses = ((u0[None, :] - ts[:, None]) * (u1[None, :] - ts[:, None]) <= 0.0) & (u0 != u1)[None, :]
    span = np.where(u0 != u1, u1 - u0, 1.0)
    cut = v0[None, :] + (ts[:, None] - u0[None, :]) / span[None, :] * (v1 - v0)[None, :]
    high = np.where(crosses, cut, -np.inf).max(axis=1)
    low = np.where(crosses, cut, np.inf).min(axis=1)
    chords = np.where(np.isfinite(high) & np.isfinite(low), high - low, 0.0)
    return long_mm, float(chords.max())


def _centroid_ras(inside: np.ndarray, ijk_to_ras: np.ndarray) -> tuple[float, float, float]:
    kji = np.argwhere(inside).mean(axis=0)
    ras = ijk_to_ras[:3, :3] @ kji[::-1] + ijk_to_ras[:3, 3]
    return float(round(ras[0], 2)), float(round(ras[1], 2)), float(round(ras[2], 2))


def _warn(image: Image, region: LocalRegion, inside: np.ndarray, mean_diameter: float, warnings: list[str]) -> None:
    thickness = float(image.spacing[2])
    if thickness > THICK_SLICE_MM and mean_diameter < SMALL_NODULE_MM:
        warnings.append(
            f"slices too thick for reliable small-nodule volumetry ({thickness:.2g} mm slices, "
            f"{mean_diameter:.1f} mm nodule); use thin-slice (<= {THICK_SLICE_MM:g} mm) reconstructions"
        )
    for axis, s in enumerate(region.box):
        edge = (s.start == 0 and inside.take(0, axis=axis).any()) or (
            s.stop == image.shape[axis] and inside.take(-1, axis=axis).any()
        )
        if edge:
            warnings.append("nodule reaches the edge of the image: volume and axes are truncated")
            break
