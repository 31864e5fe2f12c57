"""Signed distances (mm, negative inside) of the analytic shapes the phantom is built from.

Each function works on float32 or float64 arrays of anatomy-frame coordinates. Ellipse-based shapes use the
first-order distance ``(q² - 1) / |∇q²|``: its sign is exact (so masks are exact) and it is accurate to a
fraction of a voxel near the surface, which is where it matters for partial-volume ramps. Functions that take a
``grid`` also return the width of the ramp along the surface normal (see ``ChunkGrid.width``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TINY = 1e-12


def ramp(d: np.ndarray, w: np.ndarray | float) -> np.ndarray:
    """Fraction of a voxel inside the shape: a linear ramp from 1 (d <= -w/2) to 0 (d >= w/2)."""
    f = d / w
    np.subtract(0.5, f, out=f)
    np.clip(f, 0.0, 1.0, out=f)
    return f


def ellipsoid(
    x: np.ndarray, y: np.ndarray, z: np.ndarray | None, center: Any, semi: Any, grid: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ellipsoid (or, with ``z=None``, an elliptic cylinder along z) with semi-axes ``semi``.

    Returns:
        ``(d, w)``: approximate signed distance and, when ``grid`` is given, the ramp width (else None).
    """
    dtype = x.dtype
    gx = (x - dtype.type(center[0])) * dtype.type(1.0 / semi[0])
    gy = (y - dtype.type(center[1])) * dtype.type(1.0 / semi[1])
    q2 = gx * gx
    q2 += gy * gy
    gx *= dtype.type(1.0 / semi[0])  # gradient of q²/2
    gy *= dtype.type(1.0 / semi[1])
    norm2 = gx * gx
    norm2 += gy * gy
    gz = None
    if z is not None:
        gz = (z - dtype.type(center[2])) * dtype.type(1.0 / semi[2])
        q2 += gz * gz
        gz *= dtype.type(1.0 / semi[2])
        norm2 += gz * gz
    norm = np.sqrt(norm2, out=norm2)
    np.maximum(norm, dtype.type(_TINY), out=norm)
    q2 -= dtype.type(1.0)
    q2 *= dtype.type(0.5)
    d = np.divide(q2, norm, out=q2)
    if grid is None:
        return d, None
    gx /= norm
    gy /= norm
    if gz is not None:
        gz /= norm
    return d, grid.width(gx, gy, gz)


def box(x: np.ndarray, y: np.ndarray, z: np.ndarray, center: Any, half: Any) -> np.ndarray:
    """Exact signed distance of an axis-aligned box with half-sizes ``half``."""
    dtype = x.dtype
    qs = [np.abs(c - dtype.type(m)) - dtype.type(h) for c, m, h in zip((x, y, z), center, half, strict=True)]
    inside = np.minimum(np.maximum(np.maximum(qs[0], qs[1]), qs[2]), dtype.type(0.0))
    outside = np.zeros_like(x)
    for q in qs:
        np.maximum(q, 0.0, out=q)
        outside += q * q
    return np.sqrt(outside, out=outside) + inside


def segment(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, p0: Any, p1: Any, r0: float, r1: float, grid: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A tapered tube (radius r0 at p0 to r1 at p1) with rounded ends; returns ``(d, w)`` like :func:`ellipsoid`."""
    dtype = x.dtype
    axis = np.asarray(p1, dtype=float) - np.asarray(p0, dtype=float)
    length2 = max(float(axis @ axis), _TINY)
    ax, ay, az = (dtype.type(v) for v in axis)
    px = x - dtype.type(p0[0])
    py = y - dtype.type(p0[1])
    pz = z - dtype.type(p0[2])
    t = px * ax + py * ay + pz * az
    t *= dtype.type(1.0 / length2)
    np.clip(t, 0.0, 1.0, out=t)
    px -= t * ax
    py -= t * ay
    pz -= t * az
    dist = np.sqrt(px * px + py * py + pz * pz)
    t *= dtype.type(r1 - r0)
    t += dtype.type(r0)
    d = dist - t
    if grid is None:
        return d, None
    np.maximum(dist, dtype.type(_TINY), out=dist)
    return d, grid.width(px / dist, py / dist, pz / dist)


def sphere(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, center: Any, radius: float, grid: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact signed distance of a sphere; returns ``(d, w)`` like :func:`ellipsoid`."""
    px = x - center[0]
    py = y - center[1]
    pz = z - center[2]
    dist = np.sqrt(px * px + py * py + pz * pz)
    d = dist - radius
    if grid is None:
        return d, None
    np.maximum(dist, _TINY, out=dist)
    return d, grid.width(px / dist, py / dist, pz / dist)
