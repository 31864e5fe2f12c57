"""The phantom's anatomy in its own frame: RAS millimetres with the anatomical centre at the origin.

:func:`build_layout` turns an :class:`AnatomySpec` into concrete shapes (body, chest wall, ribs, spine,
mediastinum, heart, great vessels, airways, lungs); :func:`lung_sdf` is the lung field used for rendering,
nodule placement and vessel growth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.phantom import _sdf
from MedAIExtension.phantom.spec import AnatomySpec, LungSide, NoduleSpec

__all__ = [
    "Layout",
    "Tube",
    "build_layout",
    "lung_bounds",
    "lung_parts",
    "lung_sdf",
    "mediastinum_sdf",
    "nodule_center",
]

_SIDES = (LungSide.RIGHT, LungSide.LEFT)
_SIGN = {LungSide.RIGHT: 1.0, LungSide.LEFT: -1.0}  # +x (R) is the patient's right
_LUNG_TAPER = 0.25


@dataclass(frozen=True)
class Tube:
    """A tapered tube from p0 (radius r0) to p1 (radius r1), anatomy frame."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r0: float
    r1: float

    def bounds(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box containing the tube, grown by ``margin`` mm."""
        grow = max(self.r0, self.r1) + margin
        ends = np.array([self.p0, self.p1])
        return ends.min(axis=0) - grow, ends.max(axis=0) + grow


@dataclass
class Layout:
    """Concrete shapes of one phantom (all in mm, anatomy frame)."""

    origin_ras: np.ndarray
    body: tuple[float, float]
    inner: tuple[float, float]
    rib_ring: tuple[float, float]
    cavity: tuple[float, float]
    lung_half_height: float
    band: tuple[float, float]
    lungs: dict[LungSide, tuple[np.ndarray, np.ndarray]]
    domes: dict[LungSide, tuple[np.ndarray, np.ndarray]]
    heart_center: np.ndarray
    heart_semi: np.ndarray
    pericardium_semi: np.ndarray
    spine_center: tuple[float, float]
    spine_semi: tuple[float, float]
    arch_center: tuple[float, float]
    sternum_center: tuple[float, float, float]
    sternum_semi: tuple[float, float, float]
    hila: dict[LungSide, np.ndarray]
    great_vessels: list[Tube] = field(default_factory=list)
    airways: list[Tube] = field(default_factory=list)
    lung_hu: float = -860.0


def build_layout(anatomy: AnatomySpec) -> Layout:
    """Derive every shape of the phantom from the body habitus.

    Args:
        anatomy: the habitus.

    Returns:
        The layout (anatomy frame, millimetres).
    """
    ax, ay = anatomy.body_semi_axes_mm
    sx, sy = ax / 165.0, ay / 118.0
    inner = (ax - anatomy.fat_mm, ay - anatomy.fat_mm)
    rib_ring = (inner[0] - 14.0 * sx, inner[1] - 14.0 * sy)
    cavity = (rib_ring[0] - 7.0, rib_ring[1] - 7.0)
    if min(cavity) < 50.0:
        raise InputError("The body is too small for its fat layer; reduce fat_mm or enlarge body_semi_axes_mm.")
    hz = anatomy.lung_height_mm / 2.0
    band = (32.0 * sx, 1.2 * cavity[1])
    lungs, domes = {}, {}
    lung_x = (cavity[0] - 30.0 * sx) / 2.0 * 1.12
    for side in _SIDES:
        sign = _SIGN[side]
        center = np.array([sign * (30.0 * sx + lung_x * 0.9), -0.03 * cavity[1], 0.0])
        semi = np.array([lung_x, cavity[1] * 1.05, hz])
        lungs[side] = (center, semi)
        dome_top = (-0.42 if side is LungSide.RIGHT else -0.52) * hz  # the liver pushes the right dome up
        dome_semi = np.array([lung_x * 1.1, semi[1] * 0.8, 0.3 * hz])
        domes[side] = (np.array([center[0] - sign * 0.1 * lung_x, 0.1 * semi[1], dome_top - dome_semi[2]]), dome_semi)
    hs = anatomy.heart_scale
    heart_center = np.array([-15.0 * sx, 22.0 * sy, -0.45 * hz])
    heart_semi = np.array([60.0 * sx, 48.0 * sy, 0.46 * hz]) * hs
    z_heart_top = heart_center[2] + 0.8 * heart_semi[2]
    z_carina = 0.3 * hz
    z_arch = 0.45 * hz
    hila = {
        LungSide.RIGHT: np.array([42.0 * sx, -6.0 * sy, z_carina - 25.0]),
        LungSide.LEFT: np.array([-42.0 * sx, -6.0 * sy, z_carina - 35.0]),
    }
    spine_center = (0.0, -62.0 * sy)
    layout = Layout(
        origin_ras=np.asarray(anatomy.center_ras, dtype=float),
        body=(ax, ay),
        inner=inner,
        rib_ring=rib_ring,
        cavity=cavity,
        lung_half_height=hz,
        band=band,
        lungs=lungs,
        domes=domes,
        heart_center=heart_center,
        heart_semi=heart_semi,
        pericardium_semi=heart_semi + 4.0,
        spine_center=spine_center,
        spine_semi=(20.0, 17.0),
        arch_center=(0.0, spine_center[1] - 17.0 - 11.0),
        sternum_center=(0.0, cavity[1] + 9.0, 0.1 * hz),
        sternum_semi=(16.0, 7.0, 0.55 * hz),
        hila=hila,
        lung_hu=anatomy.lung_hu,
    )
    x_aorta, y_aorta = -18.0 * sx, -32.0 * sy
    layout.great_vessels = [
        Tube((10.0 * sx, 20.0 * sy, z_heart_top - 20.0), (8.0 * sx, 18.0 * sy, z_arch), 14.0, 13.0),
        Tube((8.0 * sx, 18.0 * sy, z_arch), (-20.0 * sx, 5.0 * sy, z_arch + 8.0), 12.5, 12.0),
        Tube((-20.0 * sx, 5.0 * sy, z_arch + 8.0), (x_aorta, y_aorta, z_arch), 12.0, 11.5),
        Tube((x_aorta, y_aorta, z_arch), (x_aorta, y_aorta - 2.0, -hz - 150.0), 11.5, 10.5),
        Tube((-5.0 * sx, 35.0 * sy, z_heart_top - 10.0), (-15.0 * sx, 18.0 * sy, z_carina - 12.0), 13.0, 12.0),
        Tube((-15.0 * sx, 18.0 * sy, z_carina - 12.0), tuple(hila[LungSide.RIGHT] + [0.0, 8.0, -4.0]), 9.0, 7.0),
        Tube((-15.0 * sx, 18.0 * sy, z_carina - 12.0), tuple(hila[LungSide.LEFT] + [0.0, 8.0, -4.0]), 9.0, 7.0),
    ]
    carina = (2.0 * sx, -12.0 * sy, z_carina)
    layout.airways = [
        Tube((2.0 * sx, -10.0 * sy, hz + 200.0), carina, 9.0, 8.5),
        Tube(carina, tuple(hila[LungSide.RIGHT] + [4.0, -6.0, 0.0]), 6.5, 5.5),
        Tube(carina, tuple(hila[LungSide.LEFT] + [-4.0, -6.0, 0.0]), 6.0, 5.0),
    ]
    return layout


def mediastinum_sdf(
    layout: Layout, x: np.ndarray, y: np.ndarray, z: np.ndarray, grid: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The central band between the lungs (elliptic cylinder over the lungs' height): ``(d, w)``."""
    d, w = _sdf.ellipsoid(x, y, None, (0.0, 0.0), layout.band, grid)
    return _sdf.capped(d, z, 0.0, layout.lung_half_height), w


def lung_parts(
    layout: Layout, side: LungSide, x: np.ndarray, y: np.ndarray, z: np.ndarray, grid: Any = None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``(d, w)`` of the parts whose intersection is one lung field; exclusions come with d negated.

    The lung is a tapered ellipsoid clipped by the thoracic cavity, minus the mediastinum, the pericardium and
    the diaphragmatic dome.
    """
    center, semi = layout.lungs[side]
    parts = [
        _sdf.ellipsoid(x, y, z, center, semi, grid, taper=_LUNG_TAPER),
        _sdf.ellipsoid(x, y, None, (0.0, 0.0), layout.cavity, grid),
    ]
    excluded = (
        mediastinum_sdf(layout, x, y, z, grid),
        _sdf.ellipsoid(x, y, z, layout.heart_center, layout.pericardium_semi, grid),
        _sdf.ellipsoid(x, y, z, *layout.domes[side], grid),
    )
    parts.extend((np.negative(d, out=d), w) for d, w in excluded)
    return parts


def lung_bounds(layout: Layout, side: LungSide) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box (anatomy frame) that contains one lung field."""
    center, semi = layout.lungs[side]
    grow = np.array([semi[0] * _LUNG_TAPER, semi[1] * _LUNG_TAPER, 0.0])
    return center - semi - grow, center + semi + grow


def lung_sdf(layout: Layout, side: LungSide, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) of one lung field; its sign is exact."""
    parts = lung_parts(layout, side, x, y, z)
    d = parts[0][0]
    for other, _ in parts[1:]:
        np.maximum(d, other, out=d)
    return d


def _point_sdf(layout: Layout, side: LungSide, point: np.ndarray) -> float:
    p = np.asarray(point, dtype=float).reshape(3, 1)
    return float(lung_sdf(layout, side, p[0], p[1], p[2])[0])


def nodule_center(layout: Layout, nodule: NoduleSpec) -> np.ndarray:
    """Centre of a nodule in the anatomy frame (absolute, relative to a lung, or pushed to the pleura).

    Raises:
        InputError: if the centre does not lie inside a lung.
    """
    radius = nodule.radius_mm
    if nodule.center_ras is not None:
        point = np.asarray(nodule.center_ras, dtype=float) - layout.origin_ras
    else:
        assert nodule.lung is not None and nodule.position is not None  # NoduleSpec places it one way or the other
        side = LungSide(nodule.lung)
        center, semi = layout.lungs[side]
        lateral, anterior, superior = nodule.position
        point = center + np.array([_SIGN[side] * lateral, anterior, superior]) * semi
        if nodule.juxta_pleural:
            point = _push_to_pleura(layout, side, center, point, radius)
    if min(_point_sdf(layout, side, point) for side in _SIDES) > 0.0:
        where = np.round(point + layout.origin_ras, 1).tolist()
        raise InputError(
            f"The {nodule.diameter_mm:g} mm nodule centred at RAS {where} lies outside both lungs; "
            "move it into a lung (use lung='right'|'left' with a smaller relative position)."
        )
    return point


def _push_to_pleura(layout: Layout, side: LungSide, center: np.ndarray, point: np.ndarray, radius: float) -> np.ndarray:
    """Move ``point`` along the ray from the lung centre until the sphere abuts the pleura (slightly embedded)."""
    direction = point - center
    if np.linalg.norm(direction) < 1e-9:
        direction = np.array([_SIGN[side], 0.0, 0.0])
    direction = direction / np.linalg.norm(direction)
    target = -(radius - min(0.25 * radius, 1.5))  # protrude at most 1.5 mm into the chest wall
    good, t = 0.0, 0.0
    if _point_sdf(layout, side, center) > target:
        raise InputError(f"A {2 * radius:g} mm nodule does not fit inside the lung; make it smaller.")
    while t < 1000.0:
        t += 2.0
        if _point_sdf(layout, side, center + t * direction) > target:
            break
        good = t
    bad = t
    for _ in range(40):
        mid = 0.5 * (good + bad)
        if _point_sdf(layout, side, center + mid * direction) <= target:
            good = mid
        else:
            bad = mid
    return center + good * direction
