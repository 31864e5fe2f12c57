"""Sampling the phantom's anatomy on a voxel grid, a few slices at a time.

Every structure is painted in order (air -> body -> mediastinum -> bones -> lungs -> airways -> nodules -> ribs)
with a partial-volume fraction: a linear ramp of the signed distance over the voxel's extent along the surface
normal. Label maps use the exact inside test of the same shapes at the voxel centres. Work is confined to the
index block that covers each structure's bounding box, so memory stays at a few slab-sized float32 arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from MedAIExtension.phantom import _sdf
from MedAIExtension.phantom.anatomy import Layout, Tube, lung_bounds, lung_parts, mediastinum_sdf
from MedAIExtension.phantom.ct_noise import ReconKernel, ct_noise_slices
from MedAIExtension.phantom.findings_render import FindingsPainter
from MedAIExtension.phantom.grid import Block, ChunkGrid, intersect
from MedAIExtension.phantom.lesion_shape import LobedShape
from MedAIExtension.phantom.lung_findings import FindingsLayout
from MedAIExtension.phantom.spec import LungSide
from MedAIExtension.phantom.tube_boxes import TubeBoxes
from MedAIExtension.tracking.types import NoduleKind

__all__ = ["HU", "LABEL_LUNG", "LABEL_NODULE", "NoduleTruth", "Renderer"]

LABEL_LUNG = 1
LABEL_NODULE = 2

#: Attenuation of each tissue (HU) before partial volume and noise.
HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -100.0,
    "mediastinal_fat": -85.0,
    "pericardial_fat": -90.0,
    "muscle": 45.0,
    "blood": 40.0,
    "airway_wall": 10.0,
    "cortical_bone": 700.0,
    "cartilage": 130.0,
    "marrow": 230.0,
    "vertebra_cortex": 450.0,
    "disc": 90.0,
    "solid_nodule": 30.0,
    "ground_glass": -600.0,
    "solid_core": 20.0,
    "necrosis": 12.0,
}

_SLAB_VOXELS = 1 << 20
_AIRWAY_WALL_MM = 1.8
_NOISE_SIGMA_VOXELS = 0.7
_N_RIBS = 12
_N_TEXTURE_WAVES = 6
_HETEROGENEOUS_RADIUS_MM = 15.0


@dataclass
class NoduleTruth:
    """A nodule as rendered: geometry in the anatomy frame plus voxel statistics gathered while rendering."""

    index: int
    kind: NoduleKind
    center: np.ndarray
    radius: float
    core_radius: float
    shape: LobedShape | None = None  # None: a sphere
    necrosis_radius: float = 0.0  # a necrotic centre of this radius (solid lesions), 0: none
    voxels: int = 0
    core_voxels: int = 0
    index_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class _Slab:
    k0: int
    k1: int
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    hu: np.ndarray
    labels: np.ndarray
    ids: np.ndarray


def _lerp(hu: np.ndarray, fraction: np.ndarray, value: float | np.ndarray) -> None:
    """hu <- hu + fraction * (value - hu), in place."""
    hu += fraction * (value - hu)


class Renderer:
    """Renders one phantom; call :meth:`run` once."""

    def __init__(
        self,
        grid: ChunkGrid,
        layout: Layout,
        vessels: dict[LungSide, list[Tube]],
        nodules: list[NoduleTruth],
        seed: int,
        noise_hu: float,
        noise_seed: int | None = None,
        noise_kernel: ReconKernel | None = None,
        slice_thickness_mm: float | None = None,
        findings: FindingsLayout | None = None,
    ) -> None:
        self.grid = grid
        self.layout = layout
        self.nodules = nodules
        self.seed = seed
        self.noise_seed = seed if noise_seed is None else noise_seed
        self.noise_hu = noise_hu
        self.noise_kernel = noise_kernel
        self.slice_thickness_mm = slice_thickness_mm
        self.lung_voxels = {side: 0 for side in LungSide}
        rng = np.random.default_rng([seed, 1])
        wave_dirs = rng.normal(size=(_N_TEXTURE_WAVES, 3))
        wave_dirs /= np.linalg.norm(wave_dirs, axis=1, keepdims=True)
        self.waves = wave_dirs * (2.0 * math.pi / rng.uniform(12.0, 60.0, size=(_N_TEXTURE_WAVES, 1)))
        self.wave_phases = rng.uniform(0.0, 2.0 * math.pi, size=_N_TEXTURE_WAVES)
        self.max_width = float(np.sum(grid.spacing))
        self.vessel_boxes = {side: TubeBoxes(grid, vessels[side], self.max_width) for side in LungSide}
        self.great_vessel_boxes = TubeBoxes(grid, layout.great_vessels, self.max_width)
        self.airway_wall_boxes = TubeBoxes(grid, layout.airways, self.max_width + _AIRWAY_WALL_MM)
        self.findings = None
        if findings is not None and findings.spec.any:
            self.findings = FindingsPainter(grid, layout, findings, self.max_width)

    # ---- driver ---------------------------------------------------------------------------------------------
    def run(self, progress: Callable[[float, str], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render the whole grid; returns (ct int16, labels uint8, nodule ids uint8), all ``[k, j, i]``."""
        nk, nj, ni = self.grid.shape
        ct = np.empty((nk, nj, ni), dtype=np.int16)
        labels = np.zeros((nk, nj, ni), dtype=np.uint8)
        ids = np.zeros((nk, nj, ni), dtype=np.uint8)
        step = max(1, _SLAB_VOXELS // (nj * ni))
        painters = (
            self._mediastinum, self._heart, self._great_vessels, self._spine, self._lungs, self._airways,
            self._nodules, self._ribs, self._sternum,
        )  # fmt: skip
        for k0 in range(0, nk, step):
            k1 = min(k0 + step, nk)
            x, y, z = self.grid.slab(k0, k1)
            slab = _Slab(k0, k1, x, y, z, self._body(x, y), labels[k0:k1], ids[k0:k1])
            for painter in painters:
                painter(slab)
            if self.findings is not None:
                self.findings.streaks(slab.hu, x, y, z)
            del x, y, z
            self._add_noise(slab)
            np.rint(slab.hu, out=slab.hu)
            np.clip(slab.hu, -1024.0, 3071.0, out=slab.hu)
            ct[k0:k1] = slab.hu
            progress(k1 / nk, "Rendering phantom slices")
        return ct, labels, ids

    def _block(self, slab: _Slab, low: np.ndarray, high: np.ndarray) -> Block | None:
        margin = self.max_width
        return self.grid.block(np.asarray(low) - margin, np.asarray(high) + margin, slab.k0, slab.k1)

    def _fraction(self, d: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        return _sdf.ramp(d, self.grid.mean_width if w is None else w)

    # ---- soft tissue ----------------------------------------------------------------------------------------
    def _body(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        d, w = _sdf.ellipsoid(x, y, None, (0.0, 0.0), self.layout.body, self.grid)
        hu = self._fraction(d, w)
        hu *= HU["fat"] - HU["air"]
        hu += HU["air"]
        d, w = _sdf.ellipsoid(x, y, None, (0.0, 0.0), self.layout.inner, self.grid)
        _lerp(hu, self._fraction(d, w), HU["muscle"])
        return hu

    def _mediastinum(self, slab: _Slab) -> None:
        lay = self.layout
        half = np.array([*lay.band, lay.lung_half_height])
        b = self._block(slab, -half, half)
        if b is None:
            return
        x, y, z = slab.x[b], slab.y[b], slab.z[b]
        f = self._fraction(*mediastinum_sdf(lay, x, y, z, self.grid))
        np.minimum(f, self._fraction(*_sdf.ellipsoid(x, y, None, (0.0, 0.0), lay.cavity, self.grid)), out=f)
        _lerp(slab.hu[b], f, HU["mediastinal_fat"])

    def _heart(self, slab: _Slab) -> None:
        lay = self.layout
        b = self._block(slab, lay.heart_center - lay.pericardium_semi, lay.heart_center + lay.pericardium_semi)
        if b is None:
            return
        x, y, z, hu = slab.x[b], slab.y[b], slab.z[b], slab.hu[b]
        pericardium = _sdf.ellipsoid(x, y, z, lay.heart_center, lay.pericardium_semi, self.grid)
        _lerp(hu, self._fraction(*pericardium), HU["pericardial_fat"])
        _lerp(hu, self._fraction(*_sdf.ellipsoid(x, y, z, lay.heart_center, lay.heart_semi, self.grid)), HU["blood"])

    def _tubes(self, slab: _Slab, boxes: TubeBoxes, value: float, grow: float = 0.0) -> None:
        for tube, b in boxes.overlapping(slab.k0, slab.k1):
            x, y, z = slab.x[b], slab.y[b], slab.z[b]
            d, w = _sdf.segment(x, y, z, tube.p0, tube.p1, tube.r0 + grow, tube.r1 + grow, self.grid)
            _lerp(slab.hu[b], self._fraction(d, w), value)

    def _great_vessels(self, slab: _Slab) -> None:
        self._tubes(slab, self.great_vessel_boxes, HU["blood"])

    def _airways(self, slab: _Slab) -> None:
        self._tubes(slab, self.airway_wall_boxes, HU["airway_wall"], grow=_AIRWAY_WALL_MM)
        self._tubes(slab, self.airway_wall_boxes, HU["air"])

    # ---- bones ----------------------------------------------------------------------------------------------
    def _spine(self, slab: _Slab) -> None:
        lay = self.layout
        (cx, cy), (sx, sy) = lay.spine_center, lay.spine_semi
        ax, ay = lay.arch_center
        low = np.array([-32.0, ay - 22.0, -1e6])
        high = np.array([32.0, cy + sy, 1e6])
        b = self._block(slab, low, high)
        if b is None:
            return
        x, y, z, hu = slab.x[b], slab.y[b], slab.z[b], slab.hu[b]
        pitch, disc_half = 26.0, 2.6
        phase = np.abs(np.mod(z, pitch) - pitch / 2.0) - disc_half
        disc = 1.0 - _sdf.ramp(phase, float(self.grid.width(np.zeros(1), np.zeros(1), np.ones(1))[0]))
        cortex = HU["vertebra_cortex"] + disc * (HU["disc"] - HU["vertebra_cortex"])
        marrow = HU["marrow"] + disc * (HU["disc"] - HU["marrow"])
        _lerp(hu, self._fraction(*_sdf.ellipsoid(x, y, None, (cx, cy), (sx, sy), self.grid)), cortex)
        _lerp(hu, self._fraction(*_sdf.ellipsoid(x, y, None, (cx, cy), (sx - 1.5, sy - 1.5), self.grid)), marrow)
        ring = self._fraction(*_sdf.ellipsoid(x, y, None, (ax, ay), (14.0, 14.0), self.grid))
        ring *= 1.0 - self._fraction(*_sdf.ellipsoid(x, y, None, (ax, ay), (8.0, 8.0), self.grid))
        flat_z = np.zeros_like(z)
        for end, radius in (((0.0, ay - 24.0), 3.5), ((27.0, ay - 4.0), 4.5), ((-27.0, ay - 4.0), 4.5)):
            d, w = _sdf.segment(x, y, flat_z, (ax, ay, 0.0), (*end, 0.0), radius, radius * 0.8, self.grid)
            np.maximum(ring, self._fraction(d, w), out=ring)
        _lerp(hu, ring, cortex)

    def _sternum(self, slab: _Slab) -> None:
        lay = self.layout
        center, semi = np.array(lay.sternum_center), np.array(lay.sternum_semi)
        b = self._block(slab, center - semi, center + semi)
        if b is None:
            return
        x, y, z, hu = slab.x[b], slab.y[b], slab.z[b], slab.hu[b]
        for value, shrink in ((HU["cortical_bone"], 0.0), (HU["marrow"], 1.5)):
            d, w = _sdf.ellipsoid(x, y, None, center[:2], semi[:2] - shrink, self.grid)
            _lerp(hu, self._fraction(_sdf.capped(d, z, center[2], semi[2] - shrink), w), value)

    def _ribs(self, slab: _Slab) -> None:
        """Twelve ribs per side sloping down from the spine to the costal cartilages next to the sternum."""
        lay = self.layout
        hz = lay.lung_half_height
        z_first, pitch, tilt = -0.7 * hz, 1.65 * hz / (_N_RIBS - 1), 0.5 * hz
        half_radial, half_vertical = 4.0, 5.5
        rx, ry = lay.rib_ring
        reach = max(half_radial, half_vertical) + self.max_width
        low = np.array([-rx - reach, -ry - reach, z_first - tilt - reach])
        high = np.array([rx + reach, ry + reach, z_first + (_N_RIBS - 1) * pitch + reach])
        b = self._block(slab, low, high)
        if b is None:
            return
        x, y, z = slab.x[b], slab.y[b], slab.z[b]
        d_ring, _ = _sdf.ellipsoid(x, y, None, (0.0, 0.0), lay.rib_ring)
        near = np.nonzero(np.abs(d_ring) < reach)
        if near[0].size == 0:
            return
        px, py, pz, dr = x[near], y[near], z[near], d_ring[near]
        from_spine = np.abs(np.arctan2(px / rx, -py / ry))  # 0 at the spine, pi at the sternum
        height = (pz - z_first + tilt * from_spine / np.float32(math.pi)) / np.float32(pitch)
        rib = np.rint(height)
        dz = (height - rib) * np.float32(pitch)
        present = (rib >= 0) & (rib < _N_RIBS) & (from_spine > 0.27)
        cartilage = from_spine > math.pi - 0.5
        normal_x, normal_y = px / (rx * rx), py / (ry * ry)
        norm = np.maximum(np.hypot(normal_x, normal_y), 1e-12)
        hu = slab.hu[b]
        flat = hu[near]
        bone = np.where(cartilage, np.float32(HU["cartilage"]), np.float32(HU["cortical_bone"]))
        for value, shrink, where in ((bone, 0.0, present), (HU["marrow"], 1.3, present & ~cartilage)):
            gr = dr / np.float32((half_radial - shrink) ** 2)
            gz = dz / np.float32((half_vertical - shrink) ** 2)
            g = np.maximum(np.hypot(gr, gz), np.float32(1e-12))
            d = (dr * gr + dz * gz - 1.0) / (2.0 * g)
            w = self.grid.width(gr / g * normal_x / norm, gr / g * normal_y / norm, gz / g)
            f = _sdf.ramp(d, w)
            f *= where
            _lerp(flat, f, value)
        hu[near] = flat

    # ---- lungs and nodules ----------------------------------------------------------------------------------
    def _lungs(self, slab: _Slab) -> None:
        for side in LungSide:
            self._lung(slab, side)

    def _lung(self, slab: _Slab, side: LungSide) -> None:
        lay = self.layout
        b = self._block(slab, *lung_bounds(lay, side))
        if b is None:
            return
        x, y, z = slab.x[b], slab.y[b], slab.z[b]
        parts = lung_parts(lay, side, x, y, z, self.grid)
        inside = parts[0][0] <= 0.0
        distance = None
        if self.findings is not None and self.findings.needs_lung_distance:
            distance = parts[0][0].copy()
            for d, _ in parts[1:]:
                np.maximum(distance, d, out=distance)
        f = self._fraction(*parts[0])
        for d, w in parts[1:]:
            inside &= d <= 0.0
            np.minimum(f, self._fraction(d, w), out=f)
        del parts
        _lerp(slab.hu[b], f, self._lung_hu(x, y, z))
        if self.findings is not None:
            self.findings.parenchyma(slab.hu[b], side, x, y, z, f, distance)
        del distance
        vessels = np.zeros_like(f)
        for tube, sub in self.vessel_boxes[side].overlapping(slab.k0, slab.k1):
            both = intersect(sub, b)
            if both is None:
                continue
            absolute, relative = both
            d, w = _sdf.segment(slab.x[absolute], slab.y[absolute], slab.z[absolute], tube.p0, tube.p1,
                                tube.r0, tube.r1, self.grid)  # fmt: skip
            np.maximum(vessels[relative], self._fraction(d, w), out=vessels[relative])
        vessels *= f
        _lerp(slab.hu[b], vessels, HU["blood"])
        del vessels
        if self.findings is not None:
            coordinates = (slab.x, slab.y, slab.z)
            self.findings.structures(slab.hu[b], side, b, slab.k0, slab.k1, (x, y, z), coordinates, f, inside)
        slab.labels[b][inside] = LABEL_LUNG
        self.lung_voxels[side] += int(np.count_nonzero(inside))

    def _lung_hu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Lung attenuation: denser posteriorly (gravity) plus low-frequency texture of about ±30 HU."""
        value = y * np.float32(-25.0 / self.layout.cavity[1])
        value += np.float32(self.layout.lung_hu)
        for (kx, ky, kz), phase in zip(self.waves, self.wave_phases, strict=True):
            arg = x * np.float32(kx)
            arg += y * np.float32(ky)
            arg += z * np.float32(kz)
            arg += np.float32(phase)
            value += np.float32(7.0) * np.cos(arg, out=arg)
        return value

    def _nodules(self, slab: _Slab) -> None:
        for nodule in self.nodules:
            reach = nodule.radius * (nodule.shape.max_relative_radius if nodule.shape is not None else 1.0)
            b = self._block(slab, nodule.center - reach, nodule.center + reach)
            if b is None:
                continue
            x, y, z = self.grid.slab_float64(b, slab.k0)
            d, w = self._nodule_distance(x, y, z, nodule)
            inside = d <= 0.0
            slab.labels[b][inside] = LABEL_NODULE
            slab.ids[b][inside] = nodule.index
            count = int(np.count_nonzero(inside))
            if count:
                k, j, i = np.nonzero(inside)
                nodule.voxels += count
                nodule.index_sum += [
                    float(i.sum() + count * b[2].start),
                    float(j.sum() + count * b[1].start),
                    float(k.sum() + count * (b[0].start + slab.k0)),
                ]
            hu = slab.hu[b]
            f = self._fraction(d, w).astype(np.float32)
            if nodule.kind is NoduleKind.SOLID:
                value: float | np.ndarray = HU["solid_nodule"]
                if nodule.radius >= _HETEROGENEOUS_RADIUS_MM:  # masses enhance unevenly
                    value = (np.cos(x * 0.23 + nodule.index) * np.cos(y * 0.19 - z * 0.17) * 12.0 + value).astype(
                        np.float32
                    )
                _lerp(hu, f, value)
                if nodule.necrosis_radius > 0.0:
                    d, w = _sdf.sphere(x, y, z, nodule.center, nodule.necrosis_radius, self.grid)
                    _lerp(hu, self._fraction(d, w).astype(np.float32), HU["necrosis"])
                continue
            _lerp(hu, f, np.maximum(hu, np.float32(HU["ground_glass"])))  # vessels stay visible through GGO
            if nodule.kind is NoduleKind.PART_SOLID:
                d, w = _sdf.sphere(x, y, z, nodule.center, nodule.core_radius, self.grid)
                nodule.core_voxels += int(np.count_nonzero(d <= 0.0))
                _lerp(hu, self._fraction(d, w).astype(np.float32), HU["solid_core"])

    def _nodule_distance(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, nodule: NoduleTruth
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Signed distance to the nodule's outline (exact for a sphere, radial for a lobulated one)."""
        if nodule.shape is None:
            return _sdf.sphere(x, y, z, nodule.center, nodule.radius, self.grid)
        px, py, pz = x - nodule.center[0], y - nodule.center[1], z - nodule.center[2]
        dist = np.maximum(np.sqrt(px * px + py * py + pz * pz), 1e-9)
        ux, uy, uz = px / dist, py / dist, pz / dist
        return dist - nodule.radius * nodule.shape.relative_radius(ux, uy, uz), self.grid.width(ux, uy, uz)

    # ---- noise ----------------------------------------------------------------------------------------------
    def _add_noise(self, slab: _Slab) -> None:
        """Add correlated Gaussian noise; each slice's noise depends only on seed and k.

        With a reconstruction kernel the noise has that kernel's noise power spectrum (and z correlation from the
        slice thickness, :mod:`MedAIExtension.phantom.ct_noise`); without one it is white noise smoothed in-plane.
        """
        if self.noise_hu <= 0.0:
            return
        _, nj, ni = self.grid.shape
        if self.noise_kernel is not None:
            spacing_i, spacing_j, spacing_k = (float(v) for v in self.grid.spacing)
            slab.hu += ct_noise_slices(
                self.noise_seed,
                range(slab.k0, slab.k1),
                (nj, ni),
                (spacing_j, spacing_i),
                self.noise_hu,
                self.noise_kernel,
                slice_thickness_mm=self.slice_thickness_mm,
                slice_increment_mm=spacing_k,
            )
            return
        noise = np.empty(slab.hu.shape, dtype=np.float32)
        for n, k in enumerate(range(slab.k0, slab.k1)):
            rng = np.random.default_rng([self.noise_seed, 2, k])
            noise[n] = rng.standard_normal((nj, ni), dtype=np.float32)
        ndimage.gaussian_filter(noise, sigma=(0.0, _NOISE_SIGMA_VOXELS, _NOISE_SIGMA_VOXELS), output=noise)
        noise *= np.float32(self.noise_hu / _smoothed_noise_std(_NOISE_SIGMA_VOXELS))
        slab.hu += noise


def _smoothed_noise_std(sigma: float) -> float:
    """Standard deviation of unit white noise after a 2D Gaussian filter (as scipy builds its kernel)."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    return float(np.sum(taps**2))
