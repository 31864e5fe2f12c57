"""Long and short axes of a nodule on RAS-axial planes (Lung-RADS): :func:`axial_axes` of a
:class:`~MedAIExtension.tracking.surface_fit.RadialSurface`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MedAIExtension.tracking.surface_fit import RadialSurface

__all__ = ["AxialAxes", "axial_axes"]


@dataclass(frozen=True)
class AxialAxes:
    """Long and short axis (mm) on one RAS-axial plane; ``superior_mm`` is the plane's S coordinate."""

    long_mm: float
    short_mm: float
    superior_mm: float


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
