"""The built-in synthetic-data generator: lung nodules inserted into a real or phantom CT.

A nodule is drawn the way :mod:`MedAIExtension.phantom` draws its nodules, computed in RAS millimetres so any
grid orientation works:

- attenuation by type (``phantom.render.HU``): solid 30 HU; ground-glass -600 HU where the lung is darker
  (vessels stay visible through it); part-solid = a ground-glass nodule with a 20 HU solid core of
  ``solid_fraction`` times its size;
- a soft edge: each voxel takes the fraction of it inside the nodule, a linear ramp of the signed distance over
  the voxel's extent along the surface normal (``phantom._sdf.ramp`` and ``ChunkGrid.width``), so thick slices
  blur the rim as a real slice profile does;
- slight lobulation: the radius varies with direction by a seeded low-frequency perturbation (RMS
  ``lobulation``, default 6 %), rescaled so the volume stays that of the nominal sphere;
- the image's own noise inside the nodule: its level is the MAD of the high-pass residual of the flat lung/air
  voxels (low gradient, away from vessels) around the insertion site, its texture (correlation along each array
  axis) is measured there too, and matching correlated Gaussian noise is added with weight ``sqrt(f (2 - f))``
  at fraction ``f`` so the total noise variance stays that of the image, also across the rim.

Voxels the nodule does not touch keep their values bit for bit. Each insertion records its provenance.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from scipy import ndimage

from MedAIExtension import __version__
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import _sdf
from MedAIExtension.phantom.grid import ChunkGrid
from MedAIExtension.phantom.render import HU
from MedAIExtension.phantom.spec import NoduleKind, NoduleSpec
from MedAIExtension.progress import Progress
from MedAIExtension.tracking.lungs import (
    array_spacing,
    axial_axis,
    block_factors,
    block_mean,
    fill_holes_slicewise,
)
from MedAIExtension.tracking.lungs import lung_mask as compute_lung_mask

__all__ = [
    "GENERATOR",
    "GENERATOR_VERSION",
    "Blend",
    "InsertedLesion",
    "insert_nodule",
    "insertion_lung_mask",
    "random_insertions",
]

GENERATOR = "medai-lesion-insertion"
#: Version of the insertion model; bump it when the same seed would give other voxels.
GENERATOR_VERSION = "1.0"

_LOBES = 5  # low-frequency waves of the radius perturbation
_DIRECTIONS = 4096  # directions used to normalise the lobulated volume
_NOISE_MARGIN_MM = 15.0  # the noise is measured in a box this much larger than the nodule
_HIGH_PASS_MM = 1.5  # residual = image - Gaussian(image, 1.5 mm, >= 2 voxels): removes anatomy, keeps noise
_AIR_LIKE_HU = -500.0
_MIN_NOISE_VOXELS = 200
_MAX_NOISE_SIGMA_VOXELS = 3.0
# Lung-like air of a cropped volume (see insertion_lung_mask).
_AIR_HU = -400.0  # below: air-like (lung parenchyma, airways, gas, outside air)
_PURE_AIR_HU = -950.0  # below: pure air (outside air, airway lumen, bowel gas); lung parenchyma is denser
_GAS_FRACTION = 0.6  # a component with at least this fraction of pure air is gas or outside air, no lung
_WORK_MM = 1.25  # working grid of whole-voxel blocks
_SMOOTH_MM = 1.0
_CLOSING_MM = 4.0  # closes vessels and fissures into the lung
_MIN_PART_ML = 2.0
_MIN_LUNG_ML = 10.0
_UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")


class Blend(StrEnum):
    """How the nodule meets its surroundings."""

    PARTIAL_VOLUME = "partial-volume"  # soft edge: fraction of each voxel inside the nodule
    HARD = "hard"  # binary edge at the voxel centres (for comparison; looks pasted)


@dataclass(frozen=True, eq=False)
class InsertedLesion:
    """A CT with one inserted nodule.

    Attributes:
        image: the new CT (same grid, dtype and modality as the source; UIDs of the source removed).
        mask: uint8 label map on the same grid, 1 where the voxel centre lies inside the nodule.
        provenance: JSON-ready facts of the insertion: generator, version, seed, parent, geometry, type, HU,
            estimated noise, nominal and mask volumes.
    """

    image: Image
    mask: Image
    provenance: dict[str, Any]


def _fibonacci_sphere(count: int) -> np.ndarray:
    """``count`` nearly uniform unit vectors (N x 3)."""
    n = np.arange(count) + 0.5
    z = 1.0 - 2.0 * n / count
    r = np.sqrt(1.0 - z * z)
    phi = math.pi * (3.0 - math.sqrt(5.0)) * n
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


class _Shape:
    """A lobulated sphere: radius ``r(u) = base * (1 + g(u))`` along unit direction u."""

    def __init__(self, radius: float, lobulation: float, rng: np.random.Generator) -> None:
        self.directions = rng.normal(size=(_LOBES, 3))
        self.directions /= np.linalg.norm(self.directions, axis=1, keepdims=True)
        self.frequencies = rng.uniform(1.5, 3.5, size=_LOBES)
        self.phases = rng.uniform(0.0, 2.0 * math.pi, size=_LOBES)
        samples = _fibonacci_sphere(_DIRECTIONS)
        raw = self._raw(samples[:, 0], samples[:, 1], samples[:, 2])
        self.offset = float(raw.mean())
        rms = float(np.sqrt(np.mean((raw - self.offset) ** 2)))
        self.scale = lobulation / rms if lobulation > 0.0 and rms > 0.0 else 0.0
        g = (raw - self.offset) * self.scale
        g = np.maximum(g, -0.5)
        # Volume of r(u) = base (1 + g) is base³ 4π/3 mean((1 + g)³): choose base to keep the nominal volume.
        self.base = radius / float(np.cbrt(np.mean((1.0 + g) ** 3)))
        self.max_radius = self.base * (1.0 + float(g.max()) + 0.01)

    def _raw(self, ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        out = np.zeros(np.shape(ux))
        for (dx, dy, dz), f, p in zip(self.directions, self.frequencies, self.phases, strict=True):
            out += np.cos(f * (dx * ux + dy * uy + dz * uz) + p)
        return out

    def radius(self, ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        """Radius (mm) along the unit directions."""
        g = (self._raw(ux, uy, uz) - self.offset) * self.scale
        return self.base * (1.0 + np.maximum(g, -0.5))


def _parent_identifier(ct: Image) -> str:
    for key in ("SeriesInstanceUID", "SourceFile"):
        value = ct.metadata.get(key)
        if value:
            return str(value)
    return "sha256:" + _content_hash(ct)


def _content_hash(ct: Image) -> str:
    digest = hashlib.sha256()
    digest.update(str(ct.array.dtype).encode())
    digest.update(np.asarray(ct.shape, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(ct.ijk_to_ras, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(ct.array).tobytes())
    return digest.hexdigest()


def _index_box(ct: Image, center_ras: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous index range (i, j, k) of a ball: centre index -/+ the ball's extent along each index axis."""
    inverse = np.linalg.inv(ct.ijk_to_ras)
    center = inverse[:3, :3] @ center_ras + inverse[:3, 3]
    extent = radius * np.linalg.norm(inverse[:3, :3], axis=1)
    return center - extent, center + extent


def _block(low: np.ndarray, high: np.ndarray, size_ijk: Sequence[int]) -> tuple[slice, slice, slice]:
    first = np.clip(np.floor(low), 0, size_ijk).astype(int)
    last = np.clip(np.ceil(high) + 1, 0, size_ijk).astype(int)
    return slice(first[2], last[2]), slice(first[1], last[1]), slice(first[0], last[0])


def _noise_model(ct: Image, box: tuple[slice, slice, slice]) -> tuple[float, tuple[float, float, float], str]:
    """Noise level (HU) and Gaussian correlation widths (voxels, array order) measured in ``box``."""
    values = ct.array[box].astype(np.float32)
    spacing = np.asarray(ct.spacing, dtype=float)[::-1]
    smooth = ndimage.gaussian_filter(values, sigma=np.maximum(_HIGH_PASS_MM / spacing, 2.0), mode="nearest")
    residual = values - smooth
    # Flat parenchyma only: air-like after smoothing and a gradient below the median (away from vessels).
    gradient = np.sqrt(sum(g * g for g in np.gradient(smooth, *spacing)))
    select = smooth < _AIR_LIKE_HU
    where = "lung/air"
    if np.count_nonzero(select) < _MIN_NOISE_VOXELS:
        select = np.ones_like(select)
        where = "all tissue"
    select &= gradient <= np.median(gradient[select])
    picked = residual[select]
    level = 1.4826 * float(np.median(np.abs(picked - np.median(picked))))
    if level <= 0.0:
        return 0.0, (0.0, 0.0, 0.0), where
    clipped = np.clip(residual, -4.0 * level, 4.0 * level)
    widths = []
    for axis in range(3):
        if clipped.shape[axis] < 2:
            widths.append(0.0)
            continue
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        both = select[tuple(a)] & select[tuple(b)]
        x, y = clipped[tuple(a)][both], clipped[tuple(b)][both]
        rho = float(np.mean(x * y) / max(np.sqrt(np.mean(x * x) * np.mean(y * y)), 1e-12)) if x.size else 0.0
        # Gaussian-filtered white noise of width s has lag-1 correlation exp(-1 / (4 s²)).
        width = math.sqrt(-1.0 / (4.0 * math.log(rho))) if 0.05 < rho < 1.0 else 0.0
        widths.append(min(width, _MAX_NOISE_SIGMA_VOXELS))
    return level, (widths[0], widths[1], widths[2]), where


def _correlated_noise(shape: tuple[int, ...], widths: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise with Gaussian correlation ``widths`` (voxels per array axis)."""
    pad = [int(math.ceil(4.0 * w)) for w in widths]
    big = rng.standard_normal(tuple(n + 2 * p for n, p in zip(shape, pad, strict=True)))
    if any(w > 0.0 for w in widths):
        big = ndimage.gaussian_filter(big, sigma=list(widths), mode="wrap")
    noise = big[tuple(slice(p, p + n) for n, p in zip(shape, pad, strict=True))]
    std = float(noise.std())
    return noise / std if std > 0.0 else noise


def insert_nodule(
    ct: Image,
    center_ras: Sequence[float],
    diameter_mm: float,
    kind: NoduleKind | str = NoduleKind.SOLID,
    *,
    seed: int,
    solid_fraction: float = 0.5,
    blend: Blend | str = Blend.PARTIAL_VOLUME,
    lobulation: float = 0.06,
    noise_hu: float | None = None,
    parent: str | None = None,
) -> InsertedLesion:
    """Insert one synthetic lung nodule into a CT.

    Args:
        ct: CT in Hounsfield units, any grid orientation (also oblique).
        center_ras: nodule centre in RAS mm; must lie inside the image.
        diameter_mm: diameter of the sphere of equal volume (0 < d <= 60 mm).
        kind: ``"solid"``, ``"part-solid"`` or ``"ground-glass"``.
        seed: seed of the lobulation and the noise; the same inputs and seed give the same voxels.
        solid_fraction: part-solid only: core size / nodule size, in (0, 1).
        blend: ``"partial-volume"`` (soft edge, default) or ``"hard"`` (binary edge).
        lobulation: RMS relative variation of the radius with direction (0 = a perfect sphere, at most 0.2).
        noise_hu: noise level to add inside the nodule; default: measured around the site (MAD).
        parent: identifier of the source image for the provenance; default its SeriesInstanceUID, its source
            file, or the sha256 of its voxels and geometry.

    Returns:
        The new image, the nodule mask and the provenance.

    Raises:
        InputError: if the centre lies outside the image, the nodule would leave the image, or an option is
            invalid.
    """
    spec = NoduleSpec(
        diameter_mm,
        kind,
        solid_fraction=solid_fraction if NoduleKind(_kind(kind)) is NoduleKind.PART_SOLID else None,
        center_ras=tuple(center_ras),  # type: ignore[arg-type]
    )
    nodule_kind = NoduleKind(spec.kind)
    try:
        blend_mode = Blend(blend)
    except ValueError:
        raise InputError(f"blend {blend!r} is not 'partial-volume' or 'hard'.") from None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    if not 0.0 <= float(lobulation) <= 0.2:
        raise InputError(f"lobulation must be in [0, 0.2] (relative RMS radius variation), got {lobulation!r}.")
    if noise_hu is not None and not 0.0 <= float(noise_hu) <= 500.0:
        raise InputError(f"noise_hu must be in [0, 500] HU or None (measure it), got {noise_hu!r}.")
    center = np.asarray(spec.center_ras, dtype=float)
    size = np.asarray(ct.size_ijk, dtype=float)
    low, high = _index_box(ct, center, 0.0)
    if np.any(low < -0.5) or np.any(high > size - 0.5):
        raise InputError(
            f"The nodule centre {tuple(round(v, 1) for v in center)} (RAS mm) lies outside the image (voxel "
            f"{tuple(round(v, 1) for v in low)} of {ct.size_ijk}); choose a centre inside the volume."
        )
    rng = np.random.default_rng([int(seed), 0])
    shape = _Shape(spec.radius_mm, float(lobulation), rng)
    grid = ChunkGrid(ct.ijk_to_ras, ct.shape, center)
    reach = shape.max_radius + float(np.sum(grid.spacing)) / 2.0
    low, high = _index_box(ct, center, shape.max_radius)
    if np.any(low < -0.5) or np.any(high > size - 0.5):
        raise InputError(
            f"A {spec.diameter_mm:g} mm nodule at {tuple(round(v, 1) for v in center)} (RAS mm) would leave the "
            "image; move it at least its radius away from the border or make it smaller."
        )
    block = _block(*_index_box(ct, center, reach), ct.size_ijk)
    x, y, z = grid.slab_float64(block, 0)
    dist, width = _sdf.sphere(x, y, z, (0.0, 0.0, 0.0), 0.0, grid)
    assert width is not None  # sphere() gives the voxel widths when given a grid
    safe = np.maximum(dist, 1e-12)
    radius = shape.radius(x / safe, y / safe, z / safe)
    d = dist - radius
    inside = d <= 0.0
    if blend_mode is Blend.PARTIAL_VOLUME:
        fraction = _sdf.ramp(d.copy(), width)
    else:
        fraction = inside.astype(np.float64)
    touched = fraction > 0.0
    original = ct.array[block].astype(np.float64)
    values = original.copy()
    hu_used: dict[str, float] = {}
    if nodule_kind is NoduleKind.SOLID:
        hu_used["solid"] = HU["solid_nodule"]
        values += fraction * (HU["solid_nodule"] - values)
    else:
        hu_used["ground_glass"] = HU["ground_glass"]
        values += fraction * (np.maximum(values, HU["ground_glass"]) - values)
        if nodule_kind is NoduleKind.PART_SOLID:
            hu_used["solid_core"] = HU["solid_core"]
            core_d = dist - radius * float(spec.solid_fraction)  # type: ignore[arg-type]
            core = _sdf.ramp(core_d, width) if blend_mode is Blend.PARTIAL_VOLUME else (core_d <= 0.0) * 1.0
            values += core * (HU["solid_core"] - values)
    measured_where = "given"
    widths: tuple[float, float, float] = (0.0, 0.0, 0.0)
    if noise_hu is None:
        margin = _index_box(ct, center, shape.max_radius + _NOISE_MARGIN_MM)
        noise_level, widths, measured_where = _noise_model(ct, _block(*margin, ct.size_ijk))
    else:
        noise_level = float(noise_hu)
    if noise_level > 0.0:
        noise = _correlated_noise(values.shape, widths, np.random.default_rng([int(seed), 1]))
        values += noise_level * np.sqrt(fraction * (2.0 - fraction)) * noise
    out = ct.array.copy()
    target = out[block]
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    target[touched] = values[touched].astype(out.dtype)
    mask = np.zeros(ct.shape, dtype=np.uint8)
    mask[block] = inside
    mask_voxels = int(np.count_nonzero(inside))
    provenance: dict[str, Any] = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "software_version": __version__,
        "seed": int(seed),
        "parent": parent if parent is not None else _parent_identifier(ct),
        "parent_sha256": _content_hash(ct),
        "center_ras": [float(v) for v in center],
        "diameter_mm": spec.diameter_mm,
        "kind": nodule_kind.value,
        "solid_fraction": float(spec.solid_fraction),  # type: ignore[arg-type]
        "blend": blend_mode.value,
        "lobulation": float(lobulation),
        "hu": hu_used,
        "noise_hu": round(noise_level, 3),
        "noise_correlation_voxels_kji": [round(w, 3) for w in widths],
        "noise_measured_in": measured_where,
        "volume_mm3": round(spec.volume_mm3, 3),
        "mask_voxels": mask_voxels,
        "mask_volume_mm3": round(mask_voxels * ct.voxel_volume_mm3, 3),
    }
    metadata = {k: v for k, v in ct.metadata.items() if k not in _UID_KEYS and k != "SourceFile"}
    description = f"{ct.metadata.get('description', 'CT')} + synthetic {nodule_kind.value} nodule"
    metadata.update({"description": description, "synthetic": True, "provenance": provenance})
    image = Image(out, ct.ijk_to_ras.copy(), modality=ct.modality, metadata=metadata)
    mask_image = Image(
        mask, ct.ijk_to_ras.copy(), metadata={"description": "inserted nodule", "provenance": provenance}
    )
    return InsertedLesion(image=image, mask=mask_image, provenance=provenance)


def _kind(kind: Any) -> Any:
    try:
        return NoduleKind(kind.value if isinstance(kind, NoduleKind) else kind)
    except ValueError:
        options = ", ".join(repr(m.value) for m in NoduleKind)
        raise InputError(f"Nodule kind {kind!r} is not one of {options}.") from None


def insertion_lung_mask(ct: Image, progress: Progress | Callable[[float, str], None] | None = None) -> np.ndarray:
    """Where nodules may go: the lungs of a whole chest CT, or the lung-like air of a cropped sub-volume.

    The whole-chest mask (:func:`MedAIExtension.tracking.lungs.lung_mask`) tells outside air from lung by the
    air that touches the in-plane border of a slice, so a sub-volume cropped inside the chest, whose lung reaches
    the border, has "no lungs" for it. When it finds none, the lung is taken by its density instead: the
    components of air-like voxels (below -400 HU after a 1 mm smoothing, on blocks of about 1.25 mm) that are not
    mostly pure air (below -950 HU: outside air, trachea, bowel gas), closed with a 4 mm ball (vessels, fissures)
    and hole-filled; lung cut by any face of the volume counts.

    Args:
        ct: CT in Hounsfield units, whole chest or any cropped part of it.
        progress: optional ``callback(fraction, message)``.

    Returns:
        Boolean mask on the CT grid, ``[k, j, i]``.

    Raises:
        InputError: if the image shows no lung (less than 10 ml of lung-like tissue) or is not in HU.
    """
    try:
        return compute_lung_mask(ct, progress=progress)
    except InputError:
        pass  # not a whole chest: a cropped volume, judged by density alone
    spacing = array_spacing(ct)
    factors = block_factors(spacing, _WORK_MM)
    work_spacing = spacing * np.asarray(factors, dtype=float)
    values = ndimage.gaussian_filter(block_mean(ct.array, factors), sigma=_SMOOTH_MM / work_spacing, mode="nearest")
    pure = block_mean(ct.array < _PURE_AIR_HU, factors)
    labels, count = ndimage.label(values < _AIR_HU)
    voxel_ml = float(np.prod(work_spacing)) / 1000.0
    voxels = np.bincount(labels.ravel(), minlength=count + 1).astype(float)
    pure_voxels = np.bincount(labels.ravel(), weights=pure.ravel(), minlength=count + 1)
    keep = (pure_voxels < _GAS_FRACTION * voxels) & (voxels * voxel_ml >= _MIN_PART_ML)
    keep[0] = False
    total_ml = float(voxels[keep].sum()) * voxel_ml
    if total_ml < _MIN_LUNG_ML:
        hint = (
            " (No voxel is below -400 HU at all; if the image holds raw stored values rather than HU, apply the "
            "DICOM rescale slope/intercept first.)"
            if not np.any(values < _AIR_HU)
            else ""
        )
        raise InputError(
            f"No lung found: the image holds {total_ml:.0f} ml of lung-like tissue (air-like voxels below "
            f"{_AIR_HU:g} HU that are not mostly pure air below {_PURE_AIR_HU:g} HU; at least {_MIN_LUNG_ML:g} ml "
            f"needed).{hint} Use a CT in Hounsfield units that shows lung (whole chest or a crop of it)."
        )
    lung = keep[labels]
    margin = [int(math.ceil(_CLOSING_MM / s)) + 1 for s in work_spacing]
    padded = np.pad(lung, [(m, m) for m in margin], mode="edge")  # lung cut by a face continues beyond it
    grown = ndimage.distance_transform_edt(~padded, sampling=work_spacing) <= _CLOSING_MM
    closed = ndimage.distance_transform_edt(grown, sampling=work_spacing) > _CLOSING_MM
    closed = closed[tuple(slice(m, n - m) for m, n in zip(margin, closed.shape, strict=True))] | lung
    closed = fill_holes_slicewise(ndimage.binary_fill_holes(closed), axial_axis(ct))
    for axis, f in enumerate(factors):
        if f > 1:
            closed = np.repeat(closed, f, axis=axis)
    return np.ascontiguousarray(closed[: ct.shape[0], : ct.shape[1], : ct.shape[2]])


def random_insertions(
    ct: Image,
    lung_mask: np.ndarray | None,
    count: int,
    seed: int,
    sizes: tuple[float, float] = (4.0, 20.0),
    kinds: Sequence[NoduleKind | str] = tuple(NoduleKind),
    progress: Progress | Callable[[float, str], None] | None = None,
) -> list[InsertedLesion]:
    """Insert ``count`` random nodules, each into its own copy of ``ct`` (one synthetic image per nodule).

    Centres are drawn among the lung voxels whose distance to the edge of the lung mask is at least the
    nodule's radius plus 1 mm, so each nodule lies inside the lung; diameters are uniform in ``sizes`` and
    kinds uniform among ``kinds``. Each insertion's seed is drawn from ``seed`` and recorded in its provenance
    (with ``batch_seed`` and ``batch_index``), so any one can be regenerated alone with :func:`insert_nodule`.

    Args:
        ct: chest CT in HU.
        lung_mask: boolean lung mask on the CT grid (``[k, j, i]``); None computes it with
            :func:`insertion_lung_mask` (whole chest CT or a cropped part of one).
        count: number of insertions (>= 1).
        seed: seed of the whole batch.
        sizes: (smallest, largest) diameter in mm.
        kinds: nodule types to draw from.
        progress: optional ``callback(fraction, message)``; a :class:`Progress` also cancels.

    Returns:
        One :class:`InsertedLesion` per nodule.

    Raises:
        InputError: on bad options, a mask of another shape, or lungs too small for the nodules.
    """
    report = Progress.of(progress)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise InputError(f"count must be a positive integer, got {count!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    smallest, largest = (float(v) for v in sizes)
    if not 0.0 < smallest <= largest <= 60.0:
        raise InputError(f"sizes must be (smallest, largest) diameters with 0 < smallest <= largest <= 60 mm, "
                         f"got {tuple(sizes)!r}.")  # fmt: skip
    kind_list = [_kind(k) for k in kinds]
    if not kind_list:
        raise InputError("kinds is empty; give at least one of 'solid', 'part-solid', 'ground-glass'.")
    if lung_mask is None:
        lung_mask = insertion_lung_mask(ct, progress=report.stage(0.0, 0.3))
    lungs = np.asarray(lung_mask, dtype=bool)
    if lungs.shape != ct.shape:
        raise InputError(f"The lung mask has shape {lungs.shape} but the CT has {ct.shape}; use a mask of the CT grid.")
    report(0.3, "Lesion insertion: distance to the pleura")
    spacing = np.asarray(ct.spacing, dtype=float)[::-1]
    depth = ndimage.distance_transform_edt(np.pad(lungs, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    rng = np.random.default_rng([int(seed), 7])
    out = []
    stage = report.stage(0.35, 1.0)
    for n in range(count):
        stage(n / count, f"Inserting nodule {n + 1} of {count}")
        diameter = float(rng.uniform(smallest, largest))
        kind = kind_list[int(rng.integers(len(kind_list)))]
        candidates = np.flatnonzero(depth >= diameter / 2.0 + 1.0)
        if candidates.size == 0:
            raise InputError(
                f"No place in the lungs fits a {diameter:.1f} mm nodule; use smaller sizes or a CT that shows "
                "the whole lungs."
            )
        k, j, i = np.unravel_index(int(candidates[rng.integers(candidates.size)]), ct.shape)
        center = ct.ijk_to_ras[:3, :3] @ np.array([i, j, k], dtype=float) + ct.ijk_to_ras[:3, 3]
        child_seed = int(rng.integers(2**31))
        lesion = insert_nodule(ct, center, diameter, kind, seed=child_seed)
        lesion.provenance.update({"batch_seed": int(seed), "batch_index": n})
        out.append(lesion)
    stage(1.0, "Lesion insertion done")
    return out
