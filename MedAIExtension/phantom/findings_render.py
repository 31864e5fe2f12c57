"""Painting the lung findings of :mod:`MedAIExtension.phantom.lung_findings` into a slab of the phantom.

The renderer calls :meth:`FindingsPainter.parenchyma` before it draws the vessels (disease changes the lung
tissue, not the vessels crossing it), :meth:`FindingsPainter.structures` after them, and
:meth:`FindingsPainter.streaks` once the whole slab is drawn, before the noise. All work is on the lung's index
block of the slab; partial volume follows the voxel's extent along each surface normal, as everywhere else.
"""

from __future__ import annotations

import math

import numpy as np

from MedAIExtension.phantom import _sdf
from MedAIExtension.phantom.anatomy import Layout
from MedAIExtension.phantom.grid import Block, ChunkGrid, intersect
from MedAIExtension.phantom.lung_findings import FindingsLayout
from MedAIExtension.phantom.tube_boxes import TubeBoxes
from MedAIExtension.tracking.types import LungSide

__all__ = ["FindingsPainter"]

_HU = {
    "emphysema": -965.0,
    "fibrosis_haze": -650.0,
    "reticulation": -250.0,
    "atelectasis": 15.0,
    "pleura": -50.0,
    "airway_wall": 10.0,
    "air": -995.0,
    "scar": -80.0,
    "fluid": 10.0,
}
_FISSURE_MM = 0.7
_FIBROSIS_DEPTH_MM = 15.0


def _ramp(d: np.ndarray, w: np.ndarray | float | None) -> np.ndarray:
    """:func:`_sdf.ramp` for shapes drawn with a grid (their ramp width is never None)."""
    assert w is not None
    return _sdf.ramp(d, w)


def _lerp(hu: np.ndarray, fraction: np.ndarray, value: float) -> None:
    hu += fraction * (np.float32(value) - hu)


class FindingsPainter:
    """Paints one phantom's findings; built once per render."""

    def __init__(self, grid: ChunkGrid, layout: Layout, findings: FindingsLayout, margin: float) -> None:
        self.grid = grid
        self.layout = layout
        self.findings = findings
        self.spec = findings.spec
        self.airway_boxes = {
            side: TubeBoxes(grid, tubes, margin + 0.3 * 4.5 + 0.5) for side, tubes in findings.airways.items()
        }
        self.scar_boxes = TubeBoxes(grid, findings.scars, margin)

    @property
    def needs_lung_distance(self) -> bool:
        """Whether :meth:`parenchyma` uses the signed distance to the pleura."""
        return self.spec.fibrosis > 0.0 or self.spec.atelectasis_mm > 0.0

    def _texture(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, waves: slice) -> np.ndarray:
        """A band-limited random field of about unit variance (sum of plane waves of 4-14 mm wavelength)."""
        value = np.zeros_like(x)
        chosen = self.findings.texture_waves[waves]
        for (kx, ky, kz), phase in zip(chosen, self.findings.texture_phases[waves], strict=True):
            arg = x * np.float32(kx)
            arg += y * np.float32(ky)
            arg += z * np.float32(kz)
            arg += np.float32(phase)
            value += np.cos(arg, out=arg)
        value *= np.float32(math.sqrt(2.0 / max(len(chosen), 1)))
        return value

    # ---- before the vessels ---------------------------------------------------------------------------------
    def parenchyma(
        self,
        hu: np.ndarray,
        side: LungSide,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray,
        lung: np.ndarray,
        distance: np.ndarray | None,
    ) -> None:
        """Emphysema, fibrosis and atelectasis in the lung tissue (``lung``: the lung's partial-volume fraction)."""
        spec = self.spec
        centre, semi = self.layout.lungs[side]
        height = (z - np.float32(centre[2])) / np.float32(semi[2])  # -1 at the base, +1 at the apex
        if spec.emphysema > 0.0:
            field = self._texture(x, y, z, slice(0, 10))
            threshold = np.float32(2.0 - 1.7 * spec.emphysema) + np.float32(0.5) * (1.0 - height)  # upper lobes
            field -= threshold
            field *= np.float32(1.0 / 0.35)
            np.clip(field, 0.0, 1.0, out=field)
            field *= lung
            _lerp(hu, field, _HU["emphysema"])
        if spec.fibrosis > 0.0 and distance is not None:
            band = distance / np.float32(_FIBROSIS_DEPTH_MM)
            band += np.float32(1.0)
            np.clip(band, 0.0, 1.0, out=band)
            band *= np.clip(np.float32(0.6) - height, 0.0, 1.0)  # basal predominance
            band *= lung
            _lerp(hu, band * np.float32(0.6 * spec.fibrosis), _HU["fibrosis_haze"])
            lines = np.abs(self._texture(x * 2.0, y * 2.0, z * 2.0, slice(0, 5)))
            lines = np.clip(np.float32(1.0) - lines / np.float32(0.3), 0.0, 1.0)
            lines *= band
            _lerp(hu, lines * np.float32(spec.fibrosis), _HU["reticulation"])
        if spec.atelectasis_mm > 0.0 and distance is not None:
            thickness = np.cos(x / np.float32(23.0) + z / np.float32(31.0))
            thickness *= np.float32(0.4 * spec.atelectasis_mm)
            thickness += np.float32(0.6 * spec.atelectasis_mm)
            band = _ramp(-distance - thickness, 2.0)
            band *= np.clip((np.float32(centre[1]) - y) / np.float32(30.0), 0.0, 1.0)  # dependent: posterior
            band *= lung
            _lerp(hu, band, _HU["atelectasis"])

    # ---- after the vessels ----------------------------------------------------------------------------------
    def structures(
        self,
        hu: np.ndarray,
        side: LungSide,
        block: Block,
        k0: int,
        k1: int,
        coordinates: tuple[np.ndarray, np.ndarray, np.ndarray],
        slab_coordinates: tuple[np.ndarray, np.ndarray, np.ndarray],
        lung: np.ndarray,
        inside: np.ndarray,
    ) -> None:
        """Fissures, airways, scars, granulomas and effusion; effusion voxels leave ``inside`` (not lung)."""
        x, y, z = coordinates
        self._fissures(hu, side, x, y, z, lung)
        tube_sets = []
        if side in self.airway_boxes:
            tube_sets.append((self.airway_boxes[side], True))
        tube_sets.append((self.scar_boxes, False))
        for boxes, airway in tube_sets:
            for tube, sub in boxes.overlapping(k0, k1):
                both = intersect(sub, block)
                if both is None:
                    continue
                absolute, relative = both
                sx, sy, sz = (c[absolute] for c in slab_coordinates)
                if airway:
                    wall0, wall1 = 0.3 * tube.r0 + 0.3, 0.3 * tube.r1 + 0.3
                    d, w = _sdf.segment(sx, sy, sz, tube.p0, tube.p1, tube.r0 + wall0, tube.r1 + wall1, self.grid)
                    f = _ramp(d, w) * lung[relative]
                    _lerp(hu[relative], f, _HU["airway_wall"])
                    d, w = _sdf.segment(sx, sy, sz, tube.p0, tube.p1, tube.r0, tube.r1, self.grid)
                    _lerp(hu[relative], _ramp(d, w) * lung[relative], _HU["air"])
                else:
                    d, w = _sdf.segment(sx, sy, sz, tube.p0, tube.p1, tube.r0, tube.r1, self.grid)
                    _lerp(hu[relative], _ramp(d, w) * lung[relative], _HU["scar"])
        for blob in self.findings.granulomas:
            near = (np.abs(x - np.float32(blob.center[0])) < blob.radius + 6.0) & (
                np.abs(z - np.float32(blob.center[2])) < blob.radius + 6.0
            )
            if not near.any():
                continue
            d, w = _sdf.sphere(x[near], y[near], z[near], blob.center, blob.radius, self.grid)
            values = hu[near]
            _lerp(values, _ramp(d, w) * lung[near], blob.hu)
            hu[near] = values
        level = self.findings.effusion_level_y.get(side)
        if level is not None:
            width = float(self.grid.width(np.zeros(1), np.ones(1), np.zeros(1))[0])
            fluid = _ramp(y - np.float32(level), width)
            fluid *= lung
            _lerp(hu, fluid, _HU["fluid"])
            inside &= y >= np.float32(level)

    def _fissures(
        self, hu: np.ndarray, side: LungSide, x: np.ndarray, y: np.ndarray, z: np.ndarray, lung: np.ndarray
    ) -> None:
        planes = self.findings.fissures
        for fissure in planes:
            if fissure.side is not side:
                continue
            nx, ny, nz = (np.float32(v) for v in fissure.normal)
            px, py, pz = (np.float32(v) for v in fissure.point)
            d = (x - px) * nx + (y - py) * ny + (z - pz) * nz
            width = float(self.grid.width(np.array([nx]), np.array([ny]), np.array([nz]))[0])
            f = _ramp(np.abs(d) - np.float32(_FISSURE_MM / 2.0), width)
            f *= np.float32(min(1.0, _FISSURE_MM / width))  # a sub-voxel sheet: its share of the voxel
            if fissure.anterior_of is not None:
                other = planes[fissure.anterior_of]
                ox, oy, oz = (np.float32(v) for v in other.normal)
                qx, qy, qz = (np.float32(v) for v in other.point)
                f *= ((x - qx) * ox + (y - qy) * oy + (z - qz) * oz) > 0.0
            f *= lung
            _lerp(hu, f, _HU["pleura"])

    # ---- whole slab, before the noise -----------------------------------------------------------------------
    def streaks(self, hu: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        """Beam-hardening streaks: thin dark (and some bright) lines through the spine across the body."""
        if self.spec.streaks_hu <= 0.0 or not len(self.findings.streak_angles):
            return
        cx, cy = self.layout.spine_center
        px, py = x - np.float32(cx), y - np.float32(cy)
        radial = np.sqrt(px * px + py * py)
        body = hu > np.float32(-500.0)  # streaks live in the patient, not in the air around
        sigma = np.float32(1.2 + float(np.min(self.grid.spacing[:2])))
        total = np.zeros_like(hu)
        for n, (angle, sign) in enumerate(zip(self.findings.streak_angles, self.findings.streak_signs, strict=True)):
            theta = np.float32(angle) + np.float32(0.15) * np.sin(z / np.float32(40.0) + np.float32(n))
            distance = np.abs(px * np.sin(theta) - py * np.cos(theta))
            distance /= sigma
            np.square(distance, out=distance)
            total += np.float32(sign) * np.exp(np.float32(-0.5) * distance)
        total *= np.exp(-radial / np.float32(200.0))
        total *= body
        total *= np.float32(self.spec.streaks_hu)
        hu += total
