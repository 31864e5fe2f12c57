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
from MedAIExtension.phantom.anatomy import Layout, Tube
from MedAIExtension.phantom.grid import Block, ChunkGrid, intersect
from MedAIExtension.phantom.spec import LungSide, NoduleType

__all__ = ["HU", "LABEL_LUNG", "LABEL_NODULE", "NoduleTruth", "Renderer"]

LABEL_LUNG = 1
LABEL_NODULE = 2

#: Attenuation of each tissue (HU) before partial volume and noise.
HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -100.0,
    "mediastinal_fat": -85.0,
    "muscle": 45.0,
    "blood": 40.0,
    "airway_wall": 10.0,
    "cortical_bone": 700.0,
    "marrow": 230.0,
    "vertebra_cortex": 450.0,
    "disc": 90.0,
    "solid_nodule": 30.0,
    "ground_glass": -600.0,
    "solid_core": 20.0,
}

_SLAB_VOXELS = 1 << 20
_NOISE_SIGMA_VOXELS = 0.7
_N_RIBS = 12
_N_TEXTURE_WAVES = 6


@dataclass
class NoduleTruth:
    """A nodule as rendered: geometry in the anatomy frame plus voxel statistics gathered while rendering."""

    index: int
    kind: NoduleType
    center: np.ndarray
    radius: float
    core_radius: float
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
    ) -> None:
        self.grid = grid
        self.layout = layout
        self.vessels = vessels
        self.nodules = nodules
        self.seed = seed
        self.noise_hu = noise_hu
        self.lung_voxels = {side: 0 for side in LungSide}
        rng = np.random.default_rng([seed, 1])
        wave_dirs = rng.normal(size=(_N_TEXTURE_WAVES, 3))
        wave_dirs /= np.linalg.norm(wave_dirs, axis=1, keepdims=True)
        self.waves = wave_dirs * (2.0 * math.pi / rng.uniform(12.0, 60.0, size=(_N_TEXTURE_WAVES, 1)))
        self.wave_phases = rng.uniform(0.0, 2.0 * math.pi, size=_N_TEXTURE_WAVES)
        self.max_width = float(np.sum(grid.spacing))

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
        center, half = np.array(lay.band_center), np.array(lay.band_half)
        b = self._block(slab, center - half, center + half)
        if b is None:
            return
        x, y, z = slab.x[b], slab.y[b], slab.z[b]
        f = self._fraction(_sdf.box(x, y, z, center, half), None)
        np.minimum(f, self._fraction(*_sdf.ellipsoid(x, y, None, (0.0, 0.0), lay.cavity, self.grid)), out=f)
        _lerp(slab.hu[b], f, HU["mediastinal_fat"])

    def _heart(self, slab: _Slab) -> None:
        lay = self.layout
        b = self._block(slab, lay.heart_center - lay.pericardium_semi, lay.heart_center + lay.pericardium_semi)
        if b is None:
            return
        x, y, z, hu = slab.x[b], slab.y[b], slab.z[b], slab.hu[b]
        _lerp(hu, self._fraction(*_sdf.ellipsoid(x, y, z, lay.heart_center, lay.pericardium_semi, self.grid)), -90.0)
        _lerp(hu, self._fraction(*_sdf.ellipsoid(x, y, z, lay.heart_center, lay.heart_semi, self.grid)), HU["blood"])

    def _tubes(self, slab: _Slab, tubes: list[Tube], value: float, grow: float = 0.0) -> None:
        for tube in tubes:
            b = self._block(slab, *tube.bounds(grow))
            if b is None:
                continue
            x, y, z = slab.x[b], slab.y[b], slab.z[b]
            d, w = _sdf.segment(x, y, z, tube.p0, tube.p1, tube.r0 + grow, tube.r1 + grow, self.grid)
            _lerp(slab.hu[b], self._fraction(d, w), value)

    def _great_vessels(self, slab: _Slab) -> None:
        self._tubes(slab, self.layout.great_vessels, HU["blood"])

    def _airways(self, slab: _Slab) -> None:
        self._tubes(slab, self.layout.airways, HU["airway_wall"], grow=1.8)
        self._tubes(slab, self.layout.airways, HU["air"])

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
        for center, half in (((0.0, ay - 19.0), (3.5, 7.0)), ((0.0, ay + 2.0), (30.0, 4.0))):
            process = self._fraction(_sdf.box(x, y, z, (*center, 0.0), (*half, 1e7)), None)
            np.maximum(ring, process, out=ring)
        _lerp(hu, ring, cortex)

    def _sternum(self, slab: _Slab) -> None:
        lay = self.layout
        center, half = np.array(lay.sternum_center), np.array(lay.sternum_half)
        b = self._block(slab, center - half, center + half)
        if b is None:
            return
        x, y, z, hu = slab.x[b], slab.y[b], slab.z[b], slab.hu[b]
        _lerp(hu, self._fraction(_sdf.box(x, y, z, center, half), None), HU["cortical_bone"])
        _lerp(hu, self._fraction(_sdf.box(x, y, z, center, half - 1.5), None), HU["marrow"])

    def _ribs(self, slab: _Slab) -> None:
        lay = self.layout
        hz = lay.lung_half_height
        z_first, pitch, tilt = -0.95 * hz, 1.75 * hz / (_N_RIBS - 1), 0.22 * hz
        half_radial, half_vertical = 4.5, 6.5
        rx, ry = lay.rib_ring
        reach = max(half_radial, half_vertical) + self.max_width
        low = np.array([-rx - reach, -ry - reach, z_first - reach])
        high = np.array([rx + reach, ry + reach, z_first + (_N_RIBS - 1) * pitch + tilt + reach])
        b = self._block(slab, low, high)
        if b is None:
            return
        x, y, z = slab.x[b], slab.y[b], slab.z[b]
        d_ring, _ = _sdf.ellipsoid(x, y, None, (0.0, 0.0), lay.rib_ring)
        near = np.nonzero(np.abs(d_ring) < reach)
        if near[0].size == 0:
            return
        px, py, pz, dr = x[near], y[near], z[near], d_ring[near]
        theta = np.arctan2(py / ry, px / rx)
        height = (pz - z_first + tilt * np.sin(theta)) / pitch
        rib = np.rint(height)
        dz = (height - rib) * pitch
        valid = (rib >= 0) & (rib < _N_RIBS)
        valid &= np.abs(theta + math.pi / 2) > 0.27  # the spine
        valid &= np.abs(theta - math.pi / 2) > 0.45  # costal cartilage next to the sternum
        normal_x, normal_y = px / (rx * rx), py / (ry * ry)
        norm = np.maximum(np.hypot(normal_x, normal_y), 1e-12)
        hu = slab.hu[b]
        flat = hu[near]
        for value, shrink in ((HU["cortical_bone"], 0.0), (HU["marrow"], 1.3)):
            gr = dr / (half_radial - shrink) ** 2
            gz = dz / (half_vertical - shrink) ** 2
            e2 = dr * gr + dz * gz
            g = np.maximum(np.hypot(gr, gz), 1e-12)
            d = (e2 - 1.0) / (2.0 * g)
            w = self.grid.width(gr / g * normal_x / norm, gr / g * normal_y / norm, gz / g)
            f = _sdf.ramp(d, w)
            f *= valid
            _lerp(flat, f, value)
        hu[near] = flat

    # ---- lungs and nodules ----------------------------------------------------------------------------------
    def _lungs(self, slab: _Slab) -> None:
        for side in LungSide:
            self._lung(slab, side)

    def _lung(self, slab: _Slab, side: LungSide) -> None:
        lay = self.layout
        center, semi = lay.lungs[side]
        b = self._block(slab, center - semi, center + semi)
        if b is None:
            return
        x, y, z = slab.x[b], slab.y[b], slab.z[b]
        d, w = _sdf.ellipsoid(x, y, z, center, semi, self.grid)
        inside = d <= 0.0
        f = self._fraction(d, w)
        d, w = _sdf.ellipsoid(x, y, None, (0.0, 0.0), lay.cavity, self.grid)
        inside &= d <= 0.0
        np.minimum(f, self._fraction(d, w), out=f)
        band_c, band_h = np.array(lay.band_center), np.array(lay.band_half)
        heart_c, heart_s = lay.heart_center, lay.pericardium_semi
        for low, high, sdf in (
            (band_c - band_h, band_c + band_h, lambda xx, yy, zz: (_sdf.box(xx, yy, zz, band_c, band_h), None)),
            (heart_c - heart_s, heart_c + heart_s, lambda xx, yy, zz: _sdf.ellipsoid(xx, yy, zz, heart_c, heart_s, self.grid)),
        ):  # fmt: skip
            sub = self._block(slab, low, high)
            both = None if sub is None else intersect(sub, b)
            if both is None:
                continue
            absolute, relative = both
            d, w = sdf(slab.x[absolute], slab.y[absolute], slab.z[absolute])
            inside[relative] &= d > 0.0
            np.minimum(f[relative], 1.0 - self._fraction(d, w), out=f[relative])
        slab.labels[b][inside] = LABEL_LUNG
        self.lung_voxels[side] += int(np.count_nonzero(inside))
        _lerp(slab.hu[b], f, self._lung_hu(x, y, z))
        vessels = np.zeros_like(f)
        for tube in self.vessels[side]:
            sub = self._block(slab, *tube.bounds(0.0))
            both = None if sub is None else intersect(sub, b)
            if both is None:
                continue
            absolute, relative = both
            d, w = _sdf.segment(slab.x[absolute], slab.y[absolute], slab.z[absolute], tube.p0, tube.p1,
                                tube.r0, tube.r1, self.grid)  # fmt: skip
            np.maximum(vessels[relative], self._fraction(d, w), out=vessels[relative])
        vessels *= f
        _lerp(slab.hu[b], vessels, HU["blood"])

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
            b = self._block(slab, nodule.center - nodule.radius, nodule.center + nodule.radius)
            if b is None:
                continue
            x, y, z = self.grid.slab_float64(b, slab.k0)
            d, w = _sdf.sphere(x, y, z, nodule.center, nodule.radius, self.grid)
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
            if nodule.kind is NoduleType.SOLID:
                _lerp(hu, f, HU["solid_nodule"])
                continue
            _lerp(hu, f, np.maximum(hu, np.float32(HU["ground_glass"])))  # vessels stay visible through GGO
            if nodule.kind is NoduleType.PART_SOLID:
                d, w = _sdf.sphere(x, y, z, nodule.center, nodule.core_radius, self.grid)
                nodule.core_voxels += int(np.count_nonzero(d <= 0.0))
                _lerp(hu, self._fraction(d, w).astype(np.float32), HU["solid_core"])

    # ---- noise ----------------------------------------------------------------------------------------------
    def _add_noise(self, slab: _Slab) -> None:
        """Add correlated (in-plane smoothed) Gaussian noise; each slice's noise depends only on seed and k."""
        if self.noise_hu <= 0.0:
            return
        _, nj, ni = self.grid.shape
        noise = np.empty(slab.hu.shape, dtype=np.float32)
        for n, k in enumerate(range(slab.k0, slab.k1)):
            rng = np.random.default_rng([self.seed, 2, k])
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
