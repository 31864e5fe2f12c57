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
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray | None,
    center: Any,
    semi: Any,
    grid: Any = None,
    taper: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ellipsoid (or, with ``z=None``, an elliptic cylinder along z) with semi-axes ``semi``.

    With ``taper`` t, the x and y semi-axes are scaled by ``1 - t * (z - cz) / semi_z`` (narrower on top).

    Returns:
        ``(d, w)``: approximate signed distance and, when ``grid`` is given, the ramp width (else None).
    """
    dtype = x.dtype
    inv_x, inv_y = dtype.type(1.0 / semi[0]), dtype.type(1.0 / semi[1])
    gx = (x - dtype.type(center[0])) * inv_x
    gy = (y - dtype.type(center[1])) * inv_y
    if taper and z is not None:
        scale = (z - dtype.type(center[2])) * dtype.type(-taper / semi[2])
        scale += dtype.type(1.0)
        np.maximum(scale, dtype.type(0.1), out=scale)
        inv_x = inv_y = np.reciprocal(scale, out=scale)
        gx *= inv_x
        gy *= inv_y
        inv_x = inv_x * dtype.type(1.0 / semi[0])
        inv_y = inv_y * dtype.type(1.0 / semi[1])
    q2 = gx * gx
    q2 += gy * gy
    gx *= inv_x  # gradient of q²/2 (the taper's own slope is neglected)
    gy *= inv_y
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


def capped(d_xy: np.ndarray, z: np.ndarray, z_center: float, half_height: float) -> np.ndarray:
    """Limit a z-infinite shape of distance ``d_xy`` to ``|z - z_center| <= half_height`` (in place on d_xy)."""
    dz = np.abs(z - z.dtype.type(z_center))
    dz -= z.dtype.type(half_height)
    return np.maximum(d_xy, dz, out=d_xy)


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
