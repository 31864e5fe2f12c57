"""The nodule surface fit: a star-shaped surface ``r(direction)`` (:class:`RadialSurface`) fitted through
sub-voxel surface points around a centre with a robust angular smoother, the sphere fit of that centre, and the
check that finds a cap of directions standing out from the rest (:func:`_raised_patches`).

The method is described in :mod:`MedAIExtension.tracking.measurements`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.tracking.nodule_segmentation import (
    robust_std,
)

__all__ = ["RadialSurface", "fit_radial_surface", "sphere_centre"]

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
    for seen_cap in seen:
        values = excess[member[:, seen_cap] & seen_excess]
        if len(values) >= least:
            density[seen_cap] = float(np.median(values))
    known = density[np.isfinite(density)]
    if len(known) < _N_PATCHES // 2:
        return dropped
    usual = float(np.median(known))
    dense_above = usual + max(2.0 * 1.4826 * float(np.median(usual - known[known <= usual])), 0.1 * contrast)
    raised &= np.isfinite(density) & (np.nan_to_num(density, nan=-np.inf) > dense_above)
    dropped = member[:, raised].any(axis=1)
    return dropped if np.count_nonzero(dropped) <= len(radii) // 2 else np.zeros(len(radii), dtype=bool)
