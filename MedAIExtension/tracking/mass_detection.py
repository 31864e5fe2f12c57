"""Lung masses (lesions over 30 mm): found by what makes them masses, not by a nodule detector stretched further.

A lesion larger than 3 cm is a mass (Fleischner Society glossary); it must be reported, never dropped for being
outside the nodule size range. Nodule detectors look for blobs at nodule scales and stop there (ours at 30 mm).
Masses are found by thickness instead:

1. On a working grid of about 3 mm, voxels denser than aerated lung (smoothed HU above ``dense_hu``, low enough
   for the ground-glass part of a sub-solid mass) inside the lungs.
2. A morphological opening in millimetres with a ball of ``opening_fraction`` x the smallest mass diameter
   (9 mm radius for 30 mm): every vessel, airway wall and fissure is thinner than that and goes; a mass, however
   irregular or necrotic its inside, keeps a thick core. The opening is the core (voxels deeper than the radius in
   the dense region, by an exact Euclidean distance map) grown back by the radius inside the dense region.
3. Each opened component whose volume-equivalent diameter reaches ``min_diameter_mm`` and whose surface touches
   aerated lung over at least ``min_lung_contact`` of it is a mass candidate, centred on its centroid.

The lung mask of :func:`MedAIExtension.tracking.lungs.lung_mask` fills notches of nodule size only: a mass against
the chest wall or the mediastinum pushes the lung away and lies mostly outside it. So the dense region of step 1 is
taken inside the lungs *closed* with a ball of ``closing_fraction`` x the smallest mass diameter, which fills such
a mass's bed but not the convex outline of the chest wall, the heart or the space between the lungs.

Limits: consolidation or dependent atelectasis thicker than the opening ball is dense lung too and comes out as a
mass candidate; the report calls these candidates, for the reader to confirm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.tracking.lungs import array_spacing, block_factors, block_mean
from MedAIExtension.tracking.types import MASS_DIAMETER_MM, Candidate, NoduleMask

__all__ = ["MASS_MIN_DIAMETER_MM", "MassOptions", "mass_candidates", "mass_masks"]

#: Fleischner: a lesion larger than 3 cm is a mass.
MASS_MIN_DIAMETER_MM = MASS_DIAMETER_MM
_WORKING_SPACING_MM = 3.0
_SMOOTH_MM = 1.5


@dataclass(frozen=True)
class MassOptions:
    """How masses are looked for (see the module docstring)."""

    min_diameter_mm: float = MASS_MIN_DIAMETER_MM
    dense_hu: float = -650.0
    opening_fraction: float = 0.3
    closing_fraction: float = 0.7
    min_lung_contact: float = 0.2

    def __post_init__(self) -> None:
        if not 10.0 <= self.min_diameter_mm <= 200.0:
            raise InputError(f"min_diameter_mm must be in [10, 200] mm, got {self.min_diameter_mm}.")
        if not 0.05 <= self.opening_fraction <= 0.5:
            raise InputError(f"opening_fraction must be in [0.05, 0.5], got {self.opening_fraction}.")
        if not 0.0 <= self.min_lung_contact <= 1.0:
            raise InputError(f"min_lung_contact must be in [0, 1], got {self.min_lung_contact}.")


def _opened(dense: np.ndarray, radius_mm: float, sampling: np.ndarray) -> np.ndarray:
    """Opening of ``dense`` with a ball of ``radius_mm``: deep voxels grown back by the radius, inside ``dense``."""
    if not dense.any():
        return dense
    depth = ndimage.distance_transform_edt(dense, sampling=sampling)
    core = depth >= radius_mm
    if not core.any():
        return core
    reach = ndimage.distance_transform_edt(~core, sampling=sampling)
    return (reach <= radius_mm) & dense


def _lung_contact(inside: np.ndarray, lung_near: np.ndarray) -> float:
    """Share of a component's surface voxels that touch aerated lung."""
    surface = inside & ~ndimage.binary_erosion(inside, border_value=0)
    return float(lung_near[surface].mean()) if surface.any() else 0.0


def _closed(mask: np.ndarray, radius_mm: float, sampling: np.ndarray) -> np.ndarray:
    """Closing of ``mask`` with a ball of ``radius_mm`` (exact distance maps, padded so borders do not erode)."""
    pad = int(np.ceil(radius_mm / float(np.min(sampling)))) + 1
    padded = np.pad(mask, pad)
    grown = ndimage.distance_transform_edt(~padded, sampling=sampling) <= radius_mm
    closed = ndimage.distance_transform_edt(grown, sampling=sampling) > radius_mm
    return closed[pad:-pad, pad:-pad, pad:-pad] | mask


@dataclass(frozen=True)
class _Component:
    """One mass candidate on the working grid: its voxels (``inside`` within ``box``), volume and candidate."""

    box: tuple[slice, ...]
    inside: np.ndarray
    volume_mm3: float
    candidate: Candidate


@dataclass(frozen=True)
class _Search:
    """The working grid of one search: block factors, spacing, the closed lung hull and the components."""

    factors: tuple[int, int, int]
    sampling: np.ndarray
    hull: np.ndarray
    components: list[_Component]


def _search(image: Image, lungs: np.ndarray, options: MassOptions) -> _Search | None:
    if np.shape(lungs) != image.shape:
        raise InputError(
            f"The lung mask has shape {np.shape(lungs)} but the image has {image.shape} (k, j, i); "
            "pass the lung mask computed on this image."
        )
    lungs = np.asarray(lungs, dtype=bool)
    if not lungs.any():
        return None
    spacing = array_spacing(image)
    factors = block_factors([float(s) for s in spacing], _WORKING_SPACING_MM)
    sampling = np.asarray(spacing, dtype=float) * np.asarray(factors)
    hu = block_mean(np.asarray(image.array, dtype=np.float32), factors)
    lung = block_mean(lungs, factors) >= 0.5
    hull = _closed(lung, options.closing_fraction * options.min_diameter_mm, sampling)
    reach_mm = options.opening_fraction * options.min_diameter_mm
    smooth = ndimage.gaussian_filter(hu, sigma=_SMOOTH_MM / sampling)
    dense = (smooth > options.dense_hu) & hull
    opened = _opened(dense, reach_mm, sampling)
    components, _ = ndimage.label(opened, structure=np.ones((3, 3, 3), dtype=bool))
    lung_near = ndimage.binary_dilation(lung & ~dense, iterations=1)
    voxel_mm3 = float(np.prod(sampling))
    found: list[_Component] = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        inside = components[box] == index
        volume = float(inside.sum()) * voxel_mm3
        diameter = float(np.cbrt(6.0 * volume / np.pi))
        if diameter < options.min_diameter_mm:
            continue
        if _lung_contact(inside, lung_near[box]) < options.min_lung_contact:
            continue  # hardly any aerated lung around it: not a lung lesion
        kji = np.argwhere(inside).mean(axis=0) + np.array([s.start for s in box])
        # working-grid index -> image index: block b covers voxels b*f .. b*f + f - 1
        image_kji = kji * np.asarray(factors) + (np.asarray(factors) - 1) / 2.0
        ras = image.ijk_to_ras @ np.append(image_kji[::-1], 1.0)
        candidate = Candidate((float(ras[0]), float(ras[1]), float(ras[2])), round(diameter, 1), 1.0, "mass")
        found.append(_Component(box, inside, volume, candidate))
    found.sort(key=lambda c: -c.volume_mm3)
    k, j, i = (int(f) for f in factors)
    return _Search((k, j, i), sampling, hull, found)


def mass_candidates(image: Image, lungs: np.ndarray, options: MassOptions | None = None) -> list[Candidate]:
    """Mass candidates (source ``"mass"``) in a CT in HU with its lung mask, largest first."""
    search = _search(image, lungs, options or MassOptions())
    return [] if search is None else [c.candidate for c in search.components]


def mass_masks(
    image: Image, lungs: np.ndarray, options: MassOptions | None = None
) -> list[tuple[Candidate, NoduleMask]]:
    """Each mass candidate with its voxels on the image grid, largest first.

    The mask is the detector's opened component brought to the image grid, grown by one working voxel and
    thresholded at full resolution half-way between the aerated lung and the mass's own (median) attenuation,
    inside the closed lung hull (so it stops at the chest wall and the mediastinum); the connected part that
    holds the component's core is kept. A mass too irregular for a seed-grown nodule segmentation keeps its
    necrotic or lobulated parts this way (they are inside the thick component).
    """
    options = options or MassOptions()
    search = _search(image, lungs, options)
    if search is None:
        return []
    lungs = np.asarray(lungs, dtype=bool)
    spacing = np.asarray(array_spacing(image), dtype=float)
    factors = search.factors
    out: list[tuple[Candidate, NoduleMask]] = []
    for component in search.components:
        # the component grown by one working voxel, as an index box of the image
        box = tuple(
            slice(max(0, (s.start - 1) * f), min(n, (s.stop + 1) * f))
            for s, f, n in zip(component.box, factors, image.shape, strict=True)
        )
        index = np.ix_(
            *(np.minimum(np.arange(b.start, b.stop) // f, n - 1) for b, f, n in zip(box, factors, search.hull.shape))
        )
        whole = np.zeros(search.hull.shape, dtype=bool)
        whole[component.box] = component.inside
        core, hull = whole[index], search.hull[index]
        reach = ndimage.distance_transform_edt(~core, sampling=spacing) <= float(np.max(search.sampling))
        hu = ndimage.gaussian_filter(np.asarray(image.array[box], dtype=np.float32), sigma=_SMOOTH_MM / 2 / spacing)
        inside_hu = hu[core]
        lung_hu = hu[lungs[box] & ~reach]
        level = float(np.median(inside_hu)) if inside_hu.size else 0.0
        parenchyma = float(np.median(lung_hu)) if lung_hu.size else -850.0
        threshold = max(0.5 * (level + parenchyma), options.dense_hu)
        mask = reach & (hu > threshold) & (hull | lungs[box])
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        held = np.unique(labels[core & mask])
        mask = np.isin(labels, held[held > 0])
        if not mask.any():
            continue
        out.append((component.candidate, _tight(box, mask)))
    return out


def _tight(box: tuple[slice, ...], mask: np.ndarray) -> NoduleMask:
    """``mask`` cut to its own bounding box, as a :class:`NoduleMask` of the image."""
    found = ndimage.find_objects(mask.astype(np.uint8))[0]
    assert found is not None, "the mask is not empty"
    k, j, i = (slice(b.start + f.start, b.start + f.stop) for b, f in zip(box, found, strict=True))
    return NoduleMask((k, j, i), mask[found])
