"""Random but reproducible phantom specs, for training sets with varied habitus, nodules and noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.phantom.anatomy import Layout, build_layout, lung_sdf, nodule_center
from MedAIExtension.phantom.grid import make_affine
from MedAIExtension.phantom.spec import AnatomySpec, LungSide, NoduleSpec, PhantomSpec, _size_triple, _triple
from MedAIExtension.tracking.types import NoduleKind

__all__ = ["random_phantom_spec"]

_KINDS = (NoduleKind.SOLID, NoduleKind.PART_SOLID, NoduleKind.GROUND_GLASS)
_KIND_WEIGHTS = (0.5, 0.25, 0.25)
_ATTEMPTS_PER_NODULE = 400
_MIN_GAP_MM = 3.0


def random_phantom_spec(
    seed: int,
    size_ijk: Sequence[int] = (128, 128, 64),
    spacing: Sequence[float] = (2.5, 2.5, 2.5),
    direction_ras: Sequence[Sequence[float]] | np.ndarray | None = None,
    center_ras: Sequence[float] = (0.0, 0.0, 0.0),
    max_nodules: int = 4,
    diameter_range_mm: tuple[float, float] = (4.0, 20.0),
    masses: int = 0,
    mass_range_mm: tuple[float, float] = (30.0, 70.0),
) -> PhantomSpec:
    """A random phantom spec: habitus, lung position, 1..``max_nodules`` nodules, kinds, sizes and noise.

    Nodules lie inside the lungs and entirely inside the field of view; about a third abut the pleura
    (juxta-pleural), the others keep 2 mm of lung around them. The same arguments give the same spec.

    Args:
        seed: non-negative integer; also the seed of the returned spec.
        size_ijk: voxels along i, j, k.
        spacing: voxel spacing along i, j, k in mm.
        direction_ras: 3x3 direction (columns = i, j, k axes); default axial.
        center_ras: RAS centre of the field of view.
        max_nodules: largest number of nodules (at least 1 is always placed).
        diameter_range_mm: smallest and largest nodule diameter.
        masses: lesions of ``mass_range_mm`` placed before the nodules (0 by default: the v1 training sets).
        mass_range_mm: smallest and largest mass diameter.

    Returns:
        A validated :class:`PhantomSpec`.

    Raises:
        InputError: if no nodule fits in the field of view (e.g. a grid that misses the lungs).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    if max_nodules < 1:
        raise InputError(f"max_nodules must be at least 1, got {max_nodules}.")
    low_d, high_d = (float(v) for v in diameter_range_mm)
    if not 0.0 < low_d <= high_d:
        raise InputError(f"diameter_range_mm must be (min, max) with 0 < min <= max, got {diameter_range_mm}.")
    rng = np.random.default_rng([int(seed), 0x7068])
    affine = make_affine(size_ijk, spacing, direction_ras, center_ras)
    ax = rng.uniform(140.0, 185.0)
    lung_height = rng.uniform(210.0, 280.0)
    shift = rng.uniform(-0.4, 0.4) * lung_height / 2.0  # the field of view's centre stays inside the lungs
    anatomy = AnatomySpec(
        center_ras=(
            float(center_ras[0]) + rng.uniform(-15.0, 15.0),
            float(center_ras[1]) + rng.uniform(-15.0, 15.0),
            float(center_ras[2]) + shift,
        ),
        body_semi_axes_mm=(ax, ax * rng.uniform(0.62, 0.8)),
        fat_mm=rng.uniform(6.0, 25.0),
        lung_height_mm=lung_height,
        heart_scale=rng.uniform(0.85, 1.15),
        lung_hu=rng.uniform(-885.0, -825.0),
    )
    layout = build_layout(anatomy)
    count = int(rng.integers(1, max_nodules + 1))
    nodules: list[NoduleSpec] = []
    centers: list[tuple[np.ndarray, float]] = []
    for _ in range(masses):  # drawn after the nodule count, so masses=0 leaves the v1 specs as they were
        mass = _place_nodule(rng, layout, affine, size_ijk, centers, mass_range_mm)
        if mass is not None:
            nodules.append(mass)
    for _ in range(count):
        nodule = _place_nodule(rng, layout, affine, size_ijk, centers, (low_d, high_d))
        if nodule is not None:
            nodules.append(nodule)
    if not nodules:
        raise InputError(
            "No nodule fits inside both the lungs and this field of view; centre the grid on the chest "
            "(center_ras) or make it larger."
        )
    return PhantomSpec(
        size_ijk=_size_triple(size_ijk),
        spacing=_triple(spacing, "spacing"),
        direction_ras=affine[:3, :3] / np.asarray(spacing, dtype=float),
        center_ras=_triple(center_ras, "center_ras"),
        seed=int(seed),
        nodules=tuple(nodules),
        noise_hu=float(rng.uniform(8.0, 40.0)),
        anatomy=anatomy,
    )


def _place_nodule(
    rng: np.random.Generator,
    layout: Layout,
    affine: np.ndarray,
    size_ijk: Sequence[int],
    placed: list[tuple[np.ndarray, float]],
    diameters: tuple[float, float],
) -> NoduleSpec | None:
    inverse = np.linalg.inv(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    size = np.asarray(size_ijk, dtype=float)
    for attempt in range(_ATTEMPTS_PER_NODULE):
        shrink = 1.0 if attempt < _ATTEMPTS_PER_NODULE // 2 else 0.5
        diameter = max(diameters[0], rng.uniform(*diameters) * shrink)
        kind = _KINDS[int(rng.choice(len(_KINDS), p=_KIND_WEIGHTS))]
        side = LungSide.RIGHT if rng.random() < 0.5 else LungSide.LEFT
        juxta = bool(rng.random() < 0.35)
        direction = rng.normal(size=3)
        direction[0] = abs(direction[0]) + 0.3  # mostly lateral: medially lie the mediastinum and the heart
        position = direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.9) ** (1.0 / 3.0)
        nodule = NoduleSpec(
            diameter,
            kind,
            solid_fraction=float(rng.uniform(0.3, 0.8)) if kind is NoduleKind.PART_SOLID else None,
            lung=side,
            position=tuple(float(v) for v in position),  # type: ignore[arg-type]
            juxta_pleural=juxta,
        )
        try:
            center = nodule_center(layout, nodule)
        except InputError:
            continue
        radius = nodule.radius_mm
        if not juxta and lung_sdf(layout, side, *center.reshape(3, 1))[0] > -(radius + 2.0):
            continue
        ijk = inverse[:3, :3] @ (center + layout.origin_ras) + inverse[:3, 3]
        margin = radius / spacing + 1.0
        if np.any(ijk - margin < 0.0) or np.any(ijk + margin > size - 1.0):
            continue
        if any(np.linalg.norm(center - c) < radius + r + _MIN_GAP_MM for c, r in placed):
            continue
        placed.append((center, radius))
        return nodule
    return None
