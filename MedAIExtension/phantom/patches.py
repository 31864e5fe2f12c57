"""Labelled 3D patches cut from chest phantoms: nodules (class 1) and pulmonary vessels (class 2).

The patches train and test the shipped nodule-vs-vessel classifier and give the explanation methods an object
with known voxels (:attr:`LabelledPatch.object_mask`) that drives the class score. Every patch lies on an LPS
grid of 32³ voxels of 1 mm (:func:`patch_grid`), the grid the classifier expects.

>>> from MedAIExtension.phantom.patches import nodule_vessel_patches
>>> patches = nodule_vessel_patches(seed=1, count=4)  # doctest: +SKIP
>>> [p.label for p in patches]  # doctest: +SKIP
[1, 1, 2, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts, physical_to_ijk, ras_to_lps
from MedAIExtension.io.image import Image
from MedAIExtension.models.preprocessing import (
    crop_image,
    grid_corners,
    orientation_direction_lps,
    resample_to_grid,
)
from MedAIExtension.phantom.anatomy import build_layout, lung_bounds, nodule_center
from MedAIExtension.phantom.chest import LABEL_LUNG, Phantom, generate_chest_phantom
from MedAIExtension.phantom.sampling import random_phantom_spec
from MedAIExtension.phantom.spec import LungSide, PhantomSpec, _size_triple, _triple
from MedAIExtension.progress import null_progress

__all__ = [
    "CLASS_NAMES",
    "CLASS_NODULE",
    "CLASS_VESSEL",
    "PATCH_SIZE",
    "PATCH_SPACING",
    "VESSEL_THRESHOLD_HU",
    "LabelledPatch",
    "extract_patch",
    "nodule_vessel_patches",
    "patch_grid",
    "patches_from_phantom",
    "phantom_for_patches",
]

#: Patch shape ``(K, J, I)`` (the classifier's ``patch_size`` with axis order kji).
PATCH_SIZE: tuple[int, int, int] = (32, 32, 32)
#: Patch voxel spacing along i, j, k in mm.
PATCH_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
#: Class value of a patch centred on a nodule.
CLASS_NODULE = 1
#: Class value of a patch centred on a pulmonary vessel.
CLASS_VESSEL = 2
#: Names of the class values (as in the classifier's catalogue labels).
CLASS_NAMES: dict[int, str] = {CLASS_NODULE: "Nodule", CLASS_VESSEL: "Vessel"}
#: Lung voxels brighter than this (HU) that are not nodule count as vessel.
VESSEL_THRESHOLD_HU = -600.0

_LUNG_MARGIN_MM = 12.0
#: Field of view (voxels of 2 mm) in which random specs place their nodules: the whole chest.
_PLACEMENT_SIZE = (210, 160, 200)
_MAX_PHANTOMS = 64
_SPEC_DRAWS = 16
_VESSEL_MASK_RADIUS_MM = 8.0
_VESSEL_SEED_RADIUS_MM = 2.0
_VESSEL_DRAWS_PER_PATCH = 20
_MIN_VESSEL_VOXELS = 12


@dataclass(frozen=True, eq=False)
class LabelledPatch:
    """A CT patch with the class of the object at its centre.

    Attributes:
        ct: the CT in HU (float32) on the patch grid (:func:`patch_grid` around ``center_ras``).
        label: :data:`CLASS_NODULE` (1) or :data:`CLASS_VESSEL` (2).
        object_mask: boolean ``[k, j, i]`` mask of the object that drives the class: the nodule's voxels for a
            nodule patch, the vessel voxels near the centre (connected to it) for a vessel patch.
        center_ras: the RAS point (mm) the patch is centred on.
        kind: ``"solid"``, ``"part-solid"``, ``"ground-glass"`` or ``"vessel"``.
        diameter_mm: the nodule's diameter (None for vessels).
        phantom_seed: seed of the phantom the patch was cut from.
    """

    ct: Image
    label: int
    object_mask: np.ndarray
    center_ras: tuple[float, float, float]
    kind: str = ""
    diameter_mm: float | None = None
    phantom_seed: int = -1

    def __post_init__(self) -> None:
        if self.label not in CLASS_NAMES:
            raise InputError(
                f"Patch label must be {CLASS_NODULE} (Nodule) or {CLASS_VESSEL} (Vessel), got {self.label}."
            )
        mask = np.asarray(self.object_mask, dtype=bool)
        if mask.shape != self.ct.shape:
            raise InputError(f"object_mask shape {mask.shape} differs from the patch grid {self.ct.shape}.")
        object.__setattr__(self, "object_mask", mask)
        object.__setattr__(self, "center_ras", tuple(float(v) for v in self.center_ras))

    @property
    def name(self) -> str:
        """The class name (``"Nodule"`` or ``"Vessel"``)."""
        return CLASS_NAMES[self.label]


def patch_grid(
    center_ras: Sequence[float] | np.ndarray,
    size: Sequence[int] = PATCH_SIZE,
    spacing: Sequence[float] = PATCH_SPACING,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An LPS-axis grid centred on a point: i → patient left, j → posterior, k → superior.

    The point lies midway between the first and last voxel centres, i.e. at continuous index ``(size - 1) / 2``
    (between the two middle voxels for an even size).

    Args:
        center_ras: the centre in RAS mm.
        size: grid shape ``(K, J, I)``.
        spacing: voxel spacing along i, j, k in mm.

    Returns:
        ``(ijk_to_ras, shape_kji)``.

    Raises:
        InputError: if the size, spacing or centre are not three positive (finite) numbers.
    """
    center = np.asarray(center_ras, dtype=float)
    shape = tuple(int(v) for v in size)
    step = np.asarray(spacing, dtype=float)
    if center.shape != (3,) or not np.isfinite(center).all():
        raise InputError(f"center_ras must be three finite numbers (RAS mm), got {center_ras!r}.")
    if len(shape) != 3 or min(shape) < 2 or step.shape != (3,) or not np.all(step > 0):
        raise InputError(f"A patch needs three sizes >= 2 and three positive spacings, got {size!r}, {spacing!r}.")
    direction = orientation_direction_lps("LPS")
    size_ijk = np.array(shape[::-1], dtype=float)
    origin_lps = ras_to_lps(center[None, :])[0] - direction @ (step * (size_ijk - 1.0) / 2.0)
    affine = LPS_TO_RAS @ affine_from_parts(origin_lps, step, direction)
    return affine, (shape[0], shape[1], shape[2])


def extract_patch(
    image: Image,
    center_ras: Sequence[float],
    size: Sequence[int] = PATCH_SIZE,
    spacing: Sequence[float] = PATCH_SPACING,
    linear: bool | None = None,
    fill: float | None = None,
) -> Image:
    """Resample ``image`` onto the :func:`patch_grid` around ``center_ras``.

    Only the block of the image around the patch is resampled, so cutting many patches from a large volume
    stays cheap.

    Args:
        image: any image (CT, label map, ...).
        center_ras: the patch centre in RAS mm.
        size: patch shape ``(K, J, I)``.
        spacing: patch spacing along i, j, k in mm.
        linear: linear interpolation (True) or nearest neighbour (False); default: linear for CT/MR and
            floating-point images, nearest for integer label maps.
        fill: value outside the image (default: the image minimum).

    Returns:
        The patch (float32 when linear, the image's voxel type when nearest).
    """
    affine, shape = patch_grid(center_ras, size, spacing)
    if linear is None:
        linear = image.modality in ("CT", "MR") or bool(np.issubdtype(image.array.dtype, np.floating))
    corners = grid_corners(affine, shape[::-1], pad=0.5)
    index = physical_to_ijk(image.ijk_to_ras, corners)
    limit = np.array(image.size_ijk)
    start = np.floor(index.min(axis=0)).astype(int) - 1
    stop = np.ceil(index.max(axis=0)).astype(int) + 2
    outside = bool(np.any(start < 0) or np.any(stop > limit))
    if fill is None and outside:
        fill = float(image.array.min())
    start = np.clip(start, 0, limit - 1)
    stop = np.clip(stop, start + 1, limit)
    if np.any(stop - start < 2):  # entirely outside: keep a valid (2-voxel) block; everything becomes ``fill``
        start = np.minimum(start, limit - 2)
        stop = start + 2
    box = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
    return resample_to_grid(crop_image(image, box), affine, shape, linear=linear, fill=fill)


def _random_spec(seed: int, max_nodules: int) -> PhantomSpec | None:
    """A random spec with nodules anywhere in the lungs; None for the rare habitus that cannot be built."""
    try:
        return random_phantom_spec(seed, _PLACEMENT_SIZE, (2.0, 2.0, 2.0), max_nodules=max_nodules)
    except InputError:
        return None


def phantom_for_patches(
    seed: int, spacing: Sequence[float] = (1.25, 1.25, 1.25), max_nodules: int = 20, min_nodules: int = 10
) -> Phantom:
    """A random chest phantom with many nodules, rendered on an axial grid that just covers both lungs.

    Specs from :func:`~MedAIExtension.phantom.random_phantom_spec` are drawn (seeds derived from ``seed``)
    until one holds at least ``min_nodules`` nodules (or after a few draws, the one with the most).

    Args:
        seed: non-negative integer; the same seed gives the same phantom.
        spacing: voxel spacing of the rendered grid along i, j, k (mm).
        max_nodules: most nodules per phantom (solid, part-solid and ground-glass, 4–20 mm).
        min_nodules: fewest nodules wanted.

    Returns:
        The rendered phantom.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    rng = np.random.default_rng([int(seed), 0x7061])
    best: PhantomSpec | None = None
    for _ in range(_SPEC_DRAWS):
        candidate = _random_spec(int(rng.integers(0, 2**31 - 1)), max_nodules)
        if candidate is None:
            continue
        if best is None or len(candidate.nodules) > len(best.nodules):
            best = candidate
        if len(best.nodules) >= min_nodules:
            break
    if best is None:
        raise InputError(f"No chest phantom could be drawn for seed {seed}; try another seed.")
    layout = build_layout(best.anatomy)
    boxes = [lung_bounds(layout, side) for side in LungSide]
    low = np.min([b[0] for b in boxes], axis=0) + layout.origin_ras - _LUNG_MARGIN_MM
    high = np.max([b[1] for b in boxes], axis=0) + layout.origin_ras + _LUNG_MARGIN_MM
    step = np.asarray(spacing, dtype=float)
    size = np.ceil((high - low) / step).astype(int) + 1
    spec = replace(
        best,
        size_ijk=_size_triple(size),
        spacing=_triple(step, "spacing"),
        center_ras=_triple((low + high) / 2.0, "center_ras"),
    )
    return generate_chest_phantom(spec)


def _inside(image: Image, center_ras: np.ndarray, size: Sequence[int], spacing: Sequence[float]) -> bool:
    """Whether the patch around ``center_ras`` lies entirely inside the image's voxel centres."""
    affine, shape = patch_grid(center_ras, size, spacing)
    index = physical_to_ijk(image.ijk_to_ras, grid_corners(affine, shape[::-1]))
    return bool(np.all(index >= 0.0) and np.all(index <= np.array(image.size_ijk) - 1.0))


def _random_offset(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A point uniformly distributed in a ball of ``radius`` mm."""
    direction = rng.normal(size=3)
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    return direction * radius * float(rng.random()) ** (1.0 / 3.0)


def _nodule_like_points(phantom: Phantom, rng: np.random.Generator, count: int) -> np.ndarray:
    """About ``count`` RAS points spread over the phantom's lungs as random nodules are (juxta-pleural too).

    The nodules of other random specs, placed relative to the lungs, are put into this phantom's anatomy.
    """
    layout = build_layout(phantom.spec.anatomy)
    found: list[np.ndarray] = []
    for _ in range(_SPEC_DRAWS):
        if len(found) >= count:
            break
        spec = _random_spec(int(rng.integers(0, 2**31 - 1)), 20)
        if spec is None:
            continue
        for nodule in spec.nodules:
            try:
                found.append(nodule_center(layout, nodule) + layout.origin_ras)
            except InputError:
                continue
    return np.array(found).reshape(-1, 3)


def _vessel_mask(ct: np.ndarray, labels: np.ndarray, affine: np.ndarray, center_ras: np.ndarray) -> np.ndarray:
    """Bright lung voxels within a few mm of the centre, connected to the voxels right at the centre."""
    bright = (labels == LABEL_LUNG) & (ct > VESSEL_THRESHOLD_HU)
    k, j, i = np.indices(ct.shape, dtype=float)
    points = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
    distance = np.linalg.norm(points - center_ras, axis=-1)
    bright &= distance <= _VESSEL_MASK_RADIUS_MM
    components, _ = ndimage.label(bright)
    seeds = np.unique(components[bright & (distance <= _VESSEL_SEED_RADIUS_MM)])
    return np.isin(components, seeds[seeds > 0])


def patches_from_phantom(
    phantom: Phantom,
    nodule_count: int,
    vessel_count: int,
    rng: np.random.Generator,
    patches_per_nodule: int = 1,
    offset_mm: float = 4.0,
    vessel_clearance_mm: float = 15.0,
    size: Sequence[int] = PATCH_SIZE,
    spacing: Sequence[float] = PATCH_SPACING,
) -> list[LabelledPatch]:
    """Cut up to ``nodule_count`` nodule patches and up to ``vessel_count`` vessel patches from one phantom.

    Nodules are taken in random order, each centred with a random offset (uniform in a ball of ``offset_mm``);
    nodules whose patch leaves the image or shows another nodule are skipped. Vessel patches are centred on
    lung voxels brighter than :data:`VESSEL_THRESHOLD_HU` (not nodule) at least ``vessel_clearance_mm``
    from every nodule's surface, with no nodule voxel inside the patch: a third of them random such voxels (mostly
    large central vessels), the others the such voxel nearest to a place where a random nodule could lie (so
    vessel patches show the pleura and ribs as often as nodule patches do). A vessel patch's mask holds at least
    12 voxels.

    Args:
        phantom: the phantom (from :func:`phantom_for_patches` or
            :func:`~MedAIExtension.phantom.generate_chest_phantom`).
        nodule_count: most nodule patches.
        vessel_count: most vessel patches.
        rng: random generator (seeded by the caller).
        patches_per_nodule: patches per nodule, each with its own offset.
        offset_mm: largest distance of the patch centre from the nodule centre.
        vessel_clearance_mm: smallest distance of a vessel patch's centre from any nodule's surface.
        size: patch shape ``(K, J, I)``.
        spacing: patch spacing along i, j, k in mm.

    Returns:
        Nodule patches first, then vessel patches.
    """
    seed = int(phantom.spec.seed)
    out: list[LabelledPatch] = []
    nodules = phantom.truth["nodules"]
    for index in rng.permutation(len(nodules)):
        if len(out) >= nodule_count:
            break
        nodule = nodules[int(index)]
        if not nodule["mask_voxels"]:
            continue
        for _ in range(patches_per_nodule):
            if len(out) >= nodule_count:
                break
            center = np.asarray(nodule["center_ras"], dtype=float) + _random_offset(rng, offset_mm)
            if not _inside(phantom.ct, center, size, spacing):
                continue
            ids = extract_patch(phantom.nodule_ids, center, size, spacing, linear=False).array
            mask = ids == nodule["id"]
            if not mask.any() or np.any((ids > 0) & ~mask):
                continue
            ct = extract_patch(phantom.ct, center, size, spacing, linear=True)
            out.append(
                LabelledPatch(ct, CLASS_NODULE, mask, tuple(center), nodule["kind"], nodule["diameter_mm"], seed)
            )
    if vessel_count <= 0:
        return out
    candidates = np.flatnonzero((phantom.labels.array == LABEL_LUNG) & (phantom.ct.array > VESSEL_THRESHOLD_HU))
    ijk = np.stack(np.unravel_index(candidates, phantom.ct.shape)[::-1], axis=-1).astype(float)
    points = ijk @ phantom.ct.ijk_to_ras[:3, :3].T + phantom.ct.ijk_to_ras[:3, 3]
    keep = np.ones(len(points), dtype=bool)
    for nodule in nodules:
        reach = nodule["diameter_mm"] / 2.0 + vessel_clearance_mm
        keep &= np.sum((points - np.asarray(nodule["center_ras"])) ** 2, axis=1) >= reach * reach
    points = points[keep]
    if not len(points):
        return out
    tree = cKDTree(points)
    references = _nodule_like_points(phantom, rng, vessel_count)
    vessels = 0
    voxel = phantom.ct.spacing
    for draw in range(vessel_count * _VESSEL_DRAWS_PER_PATCH):
        if vessels >= vessel_count:
            break
        if draw % 3 and len(references):  # the vessel nearest to where a nodule could be: as near the pleura
            reference = references[int(rng.integers(len(references)))] + _random_offset(rng, offset_mm)
            point = points[int(tree.query(reference)[1])]
        else:  # a random vessel voxel: mostly the large central vessels
            point = points[int(rng.integers(len(points)))]
        center = point + phantom.ct.direction_ras @ (rng.uniform(-0.5, 0.5, size=3) * voxel)
        if not _inside(phantom.ct, center, size, spacing):
            continue
        if np.any(extract_patch(phantom.nodule_ids, center, size, spacing, linear=False).array):
            continue
        ct = extract_patch(phantom.ct, center, size, spacing, linear=True)
        labels = extract_patch(phantom.labels, center, size, spacing, linear=False).array
        mask = _vessel_mask(ct.array, labels, ct.ijk_to_ras, center)
        if np.count_nonzero(mask) < _MIN_VESSEL_VOXELS:
            continue
        out.append(LabelledPatch(ct, CLASS_VESSEL, mask, tuple(center), "vessel", None, seed))
        vessels += 1
    return out


def nodule_vessel_patches(
    seed: int,
    count: int,
    spacing: Sequence[float] = (1.25, 1.25, 1.25),
    patches_per_nodule: int = 1,
    offset_mm: float = 4.0,
    vessel_clearance_mm: float = 15.0,
    max_nodules: int = 20,
    progress: Callable[[float, str], None] | None = None,
) -> list[LabelledPatch]:
    """``count`` labelled patches, half nodule (class 1) and half vessel (class 2), from random chest phantoms.

    Phantoms (seeds derived from ``seed``) are generated one after another until the count is reached; each
    gives about as many vessel patches as nodule patches. The result depends only on the arguments.

    Args:
        seed: non-negative integer.
        count: number of patches (``count // 2`` nodule patches, the rest vessel patches).
        spacing: voxel spacing (mm) the phantoms are rendered at before resampling to the 1 mm patch grid.
        patches_per_nodule: patches cut around each nodule (different offsets).
        offset_mm: largest distance of a nodule patch's centre from the nodule centre.
        vessel_clearance_mm: smallest distance of a vessel patch's centre from any nodule's surface.
        max_nodules: most nodules per phantom.
        progress: optional ``callback(fraction, message)``; a :class:`~MedAIExtension.progress.Progress` raises
            ``CancelledError`` from it when the user cancels.

    Returns:
        The patches: per phantom, its nodule patches then its vessel patches.

    Raises:
        InputError: for a bad seed or count, or when the phantoms give too few patches.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise InputError(f"count must be a positive integer, got {count!r}.")
    if patches_per_nodule < 1:
        raise InputError(f"patches_per_nodule must be at least 1, got {patches_per_nodule}.")
    report = progress or null_progress
    want_nodules, want_vessels = count // 2, count - count // 2
    rng = np.random.default_rng([int(seed), 0x7061746368])
    out: list[LabelledPatch] = []
    have_nodules = have_vessels = 0
    for _ in range(_MAX_PHANTOMS):
        report(len(out) / count, f"Generating phantom patches ({len(out)}/{count})")
        phantom = phantom_for_patches(int(rng.integers(0, 2**31 - 1)), spacing, max_nodules)
        nodule_part = patches_from_phantom(
            phantom, want_nodules - have_nodules, 0, rng, patches_per_nodule, offset_mm, vessel_clearance_mm
        )
        have_nodules += len(nodule_part)
        vessel_count = want_vessels - have_vessels
        if have_nodules < want_nodules:
            vessel_count = min(vessel_count, max(len(nodule_part), 1))
        vessel_part = patches_from_phantom(phantom, 0, vessel_count, rng, offset_mm=offset_mm,
                                           vessel_clearance_mm=vessel_clearance_mm)  # fmt: skip
        have_vessels += len(vessel_part)
        out.extend(nodule_part + vessel_part)
        if have_nodules >= want_nodules and have_vessels >= want_vessels:
            break
    else:
        raise InputError(
            f"{_MAX_PHANTOMS} phantoms gave only {have_nodules} nodule and {have_vessels} vessel patches of the "
            f"{count} asked for; ask for fewer patches or allow more nodules per phantom (max_nodules)."
        )
    report(1.0, f"Generated {len(out)} phantom patches")
    return out
