"""Lung masks of chest CT in HU: both lungs with their vessels and nodules, juxta-pleural nodules included.

The mask is built in three passes:

1. On a working grid of whole-voxel blocks of about ``working_spacing_mm`` (2x2x1 voxels for a 0.7 x 0.7 x
   1.25 mm CT): air inside the body (outside air is the air that touches the border of an axial slice), minus
   the trachea and main bronchi (small cross-sections of nearly pure air), split into 3D components of which
   the large, lung-like ones are kept.
2. Each lung is closed with a ball of ``closing_radius_mm`` (a rolling ball along the pleura; exact Euclidean
   distance maps in millimetres) and its holes are filled, so vessels, nodules, and nodules that touch the
   chest wall or the mediastinum lie inside.
3. On the image's own voxels the boundary against the chest wall follows the air threshold; blocks deep inside
   or filled in by the ball are taken whole, and slice-wise hole filling puts the vessels of the boundary layer
   inside.

Slice-wise steps run across the array axis closest to the patient's superior-inferior axis and morphology
works in millimetres, so sagittal, coronal and oblique grids give the same lungs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.progress import Progress

__all__ = ["array_spacing", "axial_axis", "block_factors", "block_mean", "fill_holes_slicewise", "lung_mask"]

_MAX_AIRWAY_AREA_MM2 = 700.0  # trachea up to ~28 mm diameter
_PURE_AIR_FRACTION = 0.6  # airways and gas: most voxels below ``airway_hu``; lung parenchyma: few
_MIN_PART_FRACTION = 0.02  # a lung part smaller than 2 % of the largest is noise (table, clothes, bowel)
_MIN_PART_ML = 2.0
_LUNG_SIZED_FRACTION = 0.2  # gas components at least this fraction of the largest air component are lungs too


# ---- grid helpers (shared with detection) ---------------------------------------------------------------------
def axial_axis(image: Image) -> int:
    """The array axis (0 = k, 1 = j, 2 = i) whose direction is closest to the patient's S axis."""
    column = int(np.argmax(np.abs(image.direction_ras[2])))  # 0 = i, 1 = j, 2 = k
    return 2 - column


def array_spacing(image: Image) -> np.ndarray:
    """Voxel spacing in millimetres in array order (k, j, i)."""
    return np.asarray(image.spacing, dtype=float)[::-1].copy()


def block_factors(spacing_kji: Sequence[float] | np.ndarray, target_mm: float) -> tuple[int, int, int]:
    """Integer block sizes per array axis that bring the spacing close to ``target_mm`` (never below 1)."""
    k, j, i = (max(1, int(math.floor(target_mm / float(s) + 0.5))) for s in spacing_kji)
    return k, j, i


def block_mean(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over blocks of ``factors`` voxels (float32); the last partial block repeats the edge voxels.

    For a boolean array this is the fraction of true voxels per block.
    """
    factors = tuple(int(f) for f in factors)
    count = math.prod(factors)
    accumulate: type[np.uint16] | type[np.float32]
    if array.dtype == bool and count < 1 << 16:
        source, accumulate = array.view(np.uint8), np.uint16
    else:
        source, accumulate = array, np.float32
    if count == 1:
        return source.astype(np.float32)
    pad = [(0, (-n) % f) for n, f in zip(source.shape, factors, strict=True)]
    if any(p[1] for p in pad):
        source = np.pad(source, pad, mode="edge")
    out: np.ndarray = source
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        parts = []
        for offset in range(f):
            index: list[slice] = [slice(None)] * 3
            index[axis] = slice(offset, None, f)
            parts.append(out[tuple(index)])
        total = np.add(parts[0], parts[1], dtype=accumulate)
        for part in parts[2:]:
            total += part
        out = total
    result = out.astype(np.float32, copy=False)
    result *= np.float32(1.0 / count)
    return result


def _upsample(block: np.ndarray, factors: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Repeat each block value over its voxels and crop to ``shape`` (the block grid starts at voxel 0)."""
    out = block
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    return out[: shape[0], : shape[1], : shape[2]]


def _slice_structure(axis: int, connectivity: int) -> np.ndarray:
    """A 3x3x3 structure that connects voxels only within planes perpendicular to ``axis``."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    index: list[int | slice] = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndimage.generate_binary_structure(2, connectivity)
    return structure


def _side_labels(labels: np.ndarray, axis: int) -> np.ndarray:
    """Labels that touch the in-plane border of their slice (the four faces not across ``axis``)."""
    faces = []
    for other in range(3):
        if other == axis:
            continue
        faces.append(np.take(labels, 0, axis=other).ravel())
        faces.append(np.take(labels, -1, axis=other).ravel())
    found = np.unique(np.concatenate(faces))
    return found[found > 0]


def fill_holes_slicewise(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill the holes of ``mask`` in every slice across ``axis`` (background not connected to the slice border)."""
    labels, count = ndimage.label(~mask, structure=_slice_structure(axis, 1))
    outside = np.zeros(count + 1, dtype=bool)
    outside[_side_labels(labels, axis)] = True
    hole = ~outside
    hole[0] = True  # label 0 is the mask itself
    return hole[labels]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """3D hole filling through labelling (faster than scipy's iterative ``binary_fill_holes``)."""
    labels, count = ndimage.label(~mask)
    outside = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        outside[np.take(labels, 0, axis=axis).ravel()] = True
        outside[np.take(labels, -1, axis=axis).ravel()] = True
    outside[0] = False
    return ~outside[labels]


# ---- the mask -------------------------------------------------------------------------------------------------
def lung_mask(
    image: Image,
    threshold_hu: float = -400.0,
    progress: Callable[[float, str], None] | None = None,
    *,
    closing_radius_mm: float = 15.0,
    airway_hu: float = -950.0,
    min_volume_ml: float = 50.0,
    working_spacing_mm: float = 1.25,
) -> np.ndarray:
    """Mask of both lungs of a chest CT in Hounsfield units.

    The mask holds the air-like voxels inside the body (not the outside air, not the trachea and main bronchi)
    with everything they enclose: vessels, airways, nodules, and nodules that touch the chest wall or the
    mediastinum (a ball of ``closing_radius_mm`` rolled along the pleura fills their notch).

    Args:
        image: chest CT in HU, any orientation; the lungs must lie inside the field of view in-plane.
        threshold_hu: voxels below it are air-like (lung parenchyma, airways, outside air).
        progress: optional ``callback(fraction, message)``; a :class:`~MedAIExtension.progress.Progress` also
            cancels.
        closing_radius_mm: radius of the rolling ball; nodules up to about twice this diameter that touch the
            pleura end up inside the mask.
        airway_hu: voxels below it count as pure air (airway lumen, gas); lung parenchyma is denser.
        min_volume_ml: smallest total lung volume accepted; below it the image is not taken for a chest CT.
        working_spacing_mm: the coarse steps run on blocks of whole voxels about this size.

    Returns:
        Boolean array on the image grid, indexed ``[k, j, i]``.

    Raises:
        InputError: if the image holds no lungs (not a chest CT, not in HU, or the lungs are cut by the field of
            view), or an option is out of range.
    """
    if not closing_radius_mm >= 0.0 or not working_spacing_mm > 0.0 or not min_volume_ml >= 0.0:
        raise InputError(
            "closing_radius_mm and min_volume_ml must be >= 0 and working_spacing_mm > 0 "
            f"(got {closing_radius_mm}, {min_volume_ml}, {working_spacing_mm})."
        )
    report = Progress.of(progress)
    ct = image.array
    axis = axial_axis(image)
    spacing = array_spacing(image)
    factors = block_factors(spacing, working_spacing_mm)
    work_spacing = spacing * np.array(factors)
    report(0.0, "Lung mask: air and body")
    air_fine = ct < threshold_hu
    if not air_fine.any():
        raise InputError(
            f"No voxel is below {threshold_hu:g} HU, so the image holds no air-filled lungs. Use a chest CT in "
            "Hounsfield units (apply the DICOM rescale slope/intercept)."
        )
    air_fraction = block_mean(air_fine, factors)
    air = air_fraction >= 0.5
    candidates = air & _inside_body(air, axis)
    del air
    box_w = _box(candidates, margin=1)
    if box_w is None:
        raise InputError(
            "No lungs found: the body holds no air-filled region. Use a chest CT in Hounsfield units whose field "
            "of view contains the lungs (lungs cut by the in-plane border of the image are taken for outside air)."
        )
    # From here on only the box around the air inside the body matters.
    candidates, air_fraction = candidates[box_w], air_fraction[box_w]
    box = _fine_box(box_w, factors, ct.shape)
    pure_fraction = block_mean(ct[box] < airway_hu, factors)[: candidates.shape[0], : candidates.shape[1]]
    pure_fraction = pure_fraction[:, :, : candidates.shape[2]]
    report(0.3, "Lung mask: airways")
    pixel_area = float(np.prod(work_spacing) / work_spacing[axis])
    candidates &= ~_airway_sections(candidates, air_fraction, pure_fraction, axis, pixel_area)
    report(0.4, "Lung mask: lung components")
    voxel_ml = float(np.prod(work_spacing)) / 1000.0
    labels, kept = _lung_components(candidates, air_fraction, pure_fraction, voxel_ml, min_volume_ml)
    del candidates, pure_fraction, air_fraction
    report(0.5, "Lung mask: rolling ball along the pleura")
    lungs_w = np.isin(labels, kept)
    closed_w = np.zeros_like(lungs_w)
    at_edge = [(b.start == 0, b.stop == n) for b, n in zip(box, ct.shape, strict=True)]
    objects = ndimage.find_objects(labels)
    for n, label in enumerate(kept):
        report(0.5 + 0.3 * n / len(kept), "Lung mask: rolling ball along the pleura")
        region = objects[label - 1]
        edges = [(lo and r.start == 0, hi and r.stop == size) for (lo, hi), r, size in
                 zip(at_edge, region, labels.shape, strict=True)]  # fmt: skip
        closed_w[region] |= _closed(labels[region] == label, closing_radius_mm, work_spacing, edges)
    del labels
    report(0.8, "Lung mask: boundary on the image grid")
    mask = np.zeros(ct.shape, dtype=bool)
    mask[box] = _refine(air_fine[box], lungs_w, closed_w, factors, axis)
    report(1.0, "Lung mask done")
    return mask


def _box(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice] | None:
    """Bounding box of ``mask`` grown by ``margin`` voxels (clipped to the array); None if it is empty."""
    found = ndimage.find_objects(mask.view(np.uint8))
    if not found or found[0] is None:
        return None
    return tuple(  # type: ignore[return-value]
        slice(max(b.start - margin, 0), min(b.stop + margin, n)) for b, n in zip(found[0], mask.shape, strict=True)
    )


def _fine_box(box_w: tuple[slice, ...], factors: Sequence[int], shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """The image-grid box covered by a box of working blocks."""
    return tuple(  # type: ignore[return-value]
        slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box_w, factors, shape, strict=True)
    )


def _inside_body(air: np.ndarray, axis: int) -> np.ndarray:
    """Voxels well inside the patient's outline: the largest tissue component, slice-wise hole-filled.

    Runs on blocks of 2x2x2 voxels (the outline needs no detail); the result is eroded by one block so that
    no outside air next to the skin counts as inside.
    """
    coarse = block_mean(air, (2, 2, 2)) >= 0.5
    labels, count = ndimage.label(coarse, structure=_slice_structure(axis, 1))
    outside = np.zeros(count + 1, dtype=bool)
    outside[_side_labels(labels, axis)] = True
    outside_air = outside[labels]
    del labels
    tissue = ~coarse & ~outside_air
    labels, count = ndimage.label(tissue)
    if count == 0:
        raise InputError(
            "The image holds no tissue (everything is air). Use a chest CT in Hounsfield units that shows the patient."
        )
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    del labels
    inside = fill_holes_slicewise(body, axis)
    inside = ndimage.binary_erosion(inside, iterations=1, border_value=1)
    return _upsample(inside, (2, 2, 2), air.shape)


def _airway_sections(
    candidates: np.ndarray, air_fraction: np.ndarray, pure_fraction: np.ndarray, axis: int, pixel_area: float
) -> np.ndarray:
    """Slice-wise components of nearly pure air with a trachea-sized area or less (trachea, bronchi, gas)."""
    labels, count = ndimage.label(candidates, structure=_slice_structure(axis, 2))
    if count == 0:
        return np.zeros_like(candidates)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=count + 1) * pixel_area
    air = np.bincount(flat, weights=air_fraction.ravel(), minlength=count + 1)
    pure = np.bincount(flat, weights=pure_fraction.ravel(), minlength=count + 1)
    airway = (area <= _MAX_AIRWAY_AREA_MM2) & (pure >= _PURE_AIR_FRACTION * np.maximum(air, 1e-9))
    airway[0] = False
    return airway[labels]


def _lung_components(
    candidates: np.ndarray,
    air_fraction: np.ndarray,
    pure_fraction: np.ndarray,
    voxel_ml: float,
    min_volume_ml: float,
) -> tuple[np.ndarray, list[int]]:
    """3D components of the lung candidates and the labels of the lung-like ones (large, not pure gas)."""
    labels, count = ndimage.label(candidates)
    if count == 0:
        raise InputError(
            "No lungs found: the body holds no air-filled region. Use a chest CT in Hounsfield units whose field "
            "of view contains the lungs (lungs cut by the in-plane border of the image are taken for outside air)."
        )
    flat = labels.ravel()
    volume = np.bincount(flat, minlength=count + 1) * voxel_ml
    air = np.bincount(flat, weights=air_fraction.ravel(), minlength=count + 1)
    pure = np.bincount(flat, weights=pure_fraction.ravel(), minlength=count + 1)
    volume[0] = 0.0
    # Pure gas (bowel, stomach) is dropped unless it is as large as a lung (emphysema makes lungs nearly pure air).
    gas = pure >= _PURE_AIR_FRACTION * np.maximum(air, 1e-9)
    largest = float(volume.max())
    lung_like = np.where(gas & (volume < _LUNG_SIZED_FRACTION * largest), 0.0, volume)
    kept = [int(n) for n in np.nonzero(lung_like >= max(_MIN_PART_ML, _MIN_PART_FRACTION * largest))[0] if n > 0]
    total = float(lung_like[kept].sum()) if kept else 0.0
    if not kept or total < min_volume_ml:
        raise InputError(
            f"No lungs found: the air inside the body amounts to {total:.0f} ml of lung-like tissue (at least "
            f"{min_volume_ml:g} ml expected). Use a chest CT in Hounsfield units whose field of view contains the "
            "lungs."
        )
    return labels, kept


def _refine(
    air_fine: np.ndarray,
    lungs_w: np.ndarray,
    closed_w: np.ndarray,
    factors: tuple[int, int, int],
    axis: int,
) -> np.ndarray:
    """The mask on the image grid (of the box): lung air voxels and closed-in blocks, slice-wise hole-filled.

    Blocks deep inside the closed lungs or filled in by the rolling ball are taken whole; along the rest of the
    boundary only the air voxels count, so the mask follows the pleura at the image's resolution.
    """
    shape = air_fine.shape
    near_lung = _upsample(ndimage.binary_dilation(lungs_w, iterations=1), factors, shape)
    whole_blocks = ndimage.binary_erosion(closed_w, iterations=1)
    whole_blocks |= closed_w & ~lungs_w
    mask = air_fine & near_lung
    del near_lung
    mask |= _upsample(whole_blocks, factors, shape)
    return fill_holes_slicewise(mask, axis)


def _closed(lung: np.ndarray, radius_mm: float, spacing: np.ndarray, edges: Sequence[tuple[bool, bool]]) -> np.ndarray:
    """Morphological closing of one lung with a ball of ``radius_mm`` (exact distances in mm), holes filled.

    ``edges`` tells, per axis and side, whether the array ends at the image border there: the lung is then
    continued beyond it (edge padding) so that the ball does not round off a lung cut by the field of view.
    """
    if radius_mm <= 0:
        return _fill_holes(lung)
    margin = [int(math.ceil(radius_mm / s)) + 2 for s in spacing]
    edge_pad = [(m if lo else 0, m if hi else 0) for m, (lo, hi) in zip(margin, edges, strict=True)]
    zero_pad = [(0 if lo else m, 0 if hi else m) for m, (lo, hi) in zip(margin, edges, strict=True)]
    padded = np.pad(np.pad(lung, edge_pad, mode="edge"), zero_pad)
    grown = _distance_outside(padded, spacing) <= radius_mm
    closed = _distance_outside(~grown, spacing) > radius_mm
    del grown
    closed |= padded
    inner = tuple(slice(m, n - m) for m, n in zip(margin, closed.shape, strict=True))
    return _fill_holes(closed[inner])


def _distance_outside(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) of every voxel outside ``mask`` to the nearest mask voxel (<= 0 inside).

    SimpleITK's Maurer distance map: exact, multi-threaded and several times faster than scipy's transform.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.view(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    distance = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True, backgroundValue=0.0
    )
    return sitk.GetArrayFromImage(distance)
