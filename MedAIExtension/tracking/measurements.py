"""Measure a segmented nodule: sub-voxel surface, volume, axial long/short axes, attenuation class, solid part.

The nodule surface is the half-way surface between its rim attenuation and the local parenchyma. Each voxel of
the boundary layer whose HU lies on the partial-volume ramp says how far its centre is from that surface
(``d = w (0.5 - f)``, ``f`` its nodule fraction, ``w`` the voxel's extent along the surface normal), which gives
one sub-voxel surface point per voxel. A star-shaped surface ``r(direction)`` is fitted through these points
around the nodule centre with a robust angular smoother, so a vessel touching the nodule (whose voxels give
points off the smooth surface, or are left out as leaving the nodule) does not add volume.

A thin vessel lying along the surface is subtler: it shares the partial volume of the nodule's boundary
voxels next to it, which only ever raises their HU and so pushes their points outwards, by up to half a voxel,
in an elongated band. On a small nodule that band can cover a third of the surface, too much for a robust
smoother. Its voxels are found from the foreign density around them: with the current surface, every voxel
just outside it should hold the local parenchyma plus the nodule's own linear partial-volume ramp; a boundary
voxel with an outside neighbour denser than that by more than the image noise allows (four standard
deviations, and a tenth of the contrast) is set aside, whatever the other boundary voxels look like. The
centre and surface are fitted to the rest; then the set-aside points that lie on that surface within the
points' noise (1.5 standard deviations outwards: the vessel does not reach into their voxel) are taken back
and the surface refitted, so the surface under the vessel rests on measured points where there are any and
on the smooth continuation of the clean surface only where there are none (on a small nodule with a vessel
along a third of it, the volume then scatters by about 1.5 % SD with noise, mostly from the centre, which
points on part of a sphere pin down less well). Boundary voxels whose outside neighbours (lightly smoothed)
stand out from the other boundary voxels are set aside (and may come back) the same way; a whole cap of
directions whose points stand outwards from the surface fitted to the rest while the tissue outside it is
denser than around the other caps is left out. Where the lung field ends (a juxta-pleural nodule against
the chest wall) the surface stops at the lung boundary.

From the surface: volume = ∫ r³/3 dΩ (independent of the voxel grid); long and short axes on RAS-axial planes
(Lung-RADS); the same is done for the solid core of a part-solid nodule.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.tracking.axes import AxialAxes, axial_axes
from MedAIExtension.tracking.nodule_segmentation import (
    SOLID_RIM_HU,
    SOLID_TISSUE_HU,
    LocalRegion,
    check_grid,
    crop_region,
    crossing_vessels,
    edt_mm,
    lung_field,
    rim_band,
    tissue_level,
)
from MedAIExtension.tracking.surface_fit import (
    _MIN_POINTS,
    RadialSurface,
    _polar_directions,
    _raised_patches,
    fit_radial_surface,
    sphere_centre,
)
from MedAIExtension.tracking.types import NoduleKind, NoduleMask, NoduleMeasurement
from MedAIExtension.tracking.vessel_rejection import (
    _CUBE,
    _Background,
    _background,
    _consistent,
    _expected_ramp,
    _outside_excess,
    _shadowed,
    _vessel_junctions,
)

__all__ = ["AxialAxes", "RadialSurface", "axial_axes", "fit_radial_surface", "measure_nodule"]

#: A solid component smaller than this (mm³; a 2 mm sphere) is not reported: vessel or noise.
MIN_SOLID_MM3 = 4.0 / 3.0 * math.pi
#: Slices thicker than this (mm) make the volume of nodules below ``SMALL_NODULE_MM`` unreliable.
THICK_SLICE_MM = 2.5
SMALL_NODULE_MM = 8.0
_CONTEXT_MM = 6.0


def measure_nodule(image: Image, mask: NoduleMask, lungs: np.ndarray | None = None) -> NoduleMeasurement:
    """Volume, axes, attenuation class and solid component of one segmented nodule.

    Args:
        image: CT in HU (the one the mask was made on).
        mask: the nodule (from :func:`~MedAIExtension.tracking.nodule_segmentation.segment_nodule` or any
            other segmentation of it on this image).
        lungs: boolean lung mask on the image grid, or None (air-containing voxels are the lung side).

    Returns:
        The measurement: centre = mask centroid in RAS, volume in mm³ (inside the half-way surface),
        axes on RAS-axial planes, diameters rounded to 0.1 mm.

    Raises:
        InputError: if the mask is empty or does not fit the image, or the lung mask has another shape.
        GeometryError: if the image grid is sheared.
    """
    check_grid(image)
    box, nodule = _checked(image, mask, lungs)
    region = crop_region(image, box)
    inner = tuple(slice(m.start - b.start, m.stop - b.start) for m, b in zip(mask.box, box))
    inside = np.zeros(region.hu.shape, dtype=bool)
    inside[inner] = nodule
    sampling = region.sampling
    reach = _reach_mm(inside, sampling)
    lung = lung_field(region.smooth, None if lungs is None else lungs[box], sampling, 2.0 * reach + 2.0) | inside
    outside = edt_mm(~inside, sampling)
    background = _background(region, lung & ~inside, outside, np.argwhere(inside).mean(axis=0))
    own = inside & ~crossing_vessels(region.smooth, inside, sampling)
    rim = _rim_hu(region, inside, own, lung)
    own_lung = own & ndimage.binary_erosion(lung, _CUBE, border_value=1)
    for _ in range(6):  # the rim level, then the surface it defines, then the rim just inside that surface
        warnings: list[str] = []
        fitted = _nodule_surface(region, inside, lung, outside, background, rim, warnings)
        refined = _surface_rim(region, fitted, own_lung)
        if refined is None or abs(refined - rim) < 2.0:
            break
        rim = refined
    surface = fitted.clipped(_lung_limit(lung, sampling, fitted.centre, fitted.radius.shape))
    volume = surface.volume_mm3()
    axes = axial_axes(surface, region.ijk_to_ras, sampling)
    long_mm, short_mm = round(axes.long_mm, 1), round(axes.short_mm, 1)
    mean_diameter = round(0.5 * (long_mm + short_mm), 1)
    kind, solid_volume, solid_diameter = _solid_component(region, inside, own, lung, rim, image.voxel_volume_mm3)
    if kind is NoduleKind.SOLID:
        solid_volume, solid_diameter = volume, mean_diameter
    touches = _touches_pleura(region, inside, None if lungs is None else lungs[box], reach)
    _warn(image, region, inside, mean_diameter, warnings)
    return NoduleMeasurement(
        center_ras=_centroid_ras(inside, region.ijk_to_ras),
        volume_mm3=round(volume, 1),
        long_axis_mm=long_mm,
        short_axis_mm=short_mm,
        mean_diameter_mm=mean_diameter,
        mean_hu=round(float(region.hu[inside].mean()), 1),
        kind=kind,
        solid_volume_mm3=round(solid_volume, 1),
        solid_mean_diameter_mm=solid_diameter,
        touches_pleura=touches,
        warnings=tuple(warnings),
    )


def _touches_pleura(region: LocalRegion, inside: np.ndarray, lungs: np.ndarray | None, reach: float) -> bool:
    """Whether the nodule abuts the chest wall: a neighbour voxel outside the lung field and not nodule.

    The lung mask is taken as given (a closing would flatten the nodule's bump into the wall); without one,
    the air-containing lung closed just enough to hold the nodule stands in.
    """
    field = (
        np.asarray(lungs, dtype=bool) if lungs is not None else lung_field(region.smooth, None, region.sampling, reach)
    )
    return bool(np.any(ndimage.binary_dilation(inside, _CUBE) & ~inside & ~field))


def _checked(image: Image, mask: NoduleMask, lungs: np.ndarray | None) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    if lungs is not None and np.shape(lungs) != image.shape:
        raise InputError(
            f"The lung mask has shape {np.shape(lungs)} but the image has {image.shape} (k, j, i); "
            "pass the lung mask computed on this image."
        )
    box = mask.box
    if len(box) != 3 or any(not isinstance(s, slice) or s.step not in (None, 1) for s in box):
        raise InputError("NoduleMask.box must be three contiguous index slices (k, j, i).")
    bounds = [s.indices(n) for s, n in zip(box, image.shape)]
    if any(lo != s.start or hi != s.stop for (lo, hi, _), s in zip(bounds, box)):
        raise InputError(
            f"NoduleMask box {box} does not lie inside the image {image.shape}; use the mask made on this image."
        )
    nodule = np.asarray(mask.mask, dtype=bool)
    if nodule.shape != tuple(s.stop - s.start for s in box):
        raise InputError(f"NoduleMask.mask has shape {nodule.shape}, which does not match its box {box}.")
    if not nodule.any():
        raise InputError("The nodule mask is empty; segment the nodule first (segment_nodule returned nothing).")
    sampling = np.asarray(image.spacing, dtype=float)[::-1]
    grow = np.ceil(_CONTEXT_MM / sampling).astype(int)
    context = tuple(slice(max(s.start - int(g), 0), min(s.stop + int(g), n)) for s, g, n in zip(box, grow, image.shape))
    return context, nodule  # type: ignore[return-value]


def _reach_mm(inside: np.ndarray, sampling: np.ndarray) -> float:
    """Largest distance (mm) of a mask voxel from the mask centroid."""
    idx = np.argwhere(inside).astype(float)
    offsets = (idx - idx.mean(axis=0)) * sampling
    return float(np.sqrt((offsets**2).sum(axis=1)).max())


def _rim_hu(region: LocalRegion, inside: np.ndarray, own: np.ndarray, lung: np.ndarray) -> float:
    """HU of the nodule's outermost voxels free of partial volume (its ground glass, if any).

    ``own`` are the nodule voxels that are not vessels crossing it. Depth counts from the lung side only.
    """
    depth = edt_mm(inside | ~lung, region.sampling)
    start, stop = rim_band(region.sampling)
    band = own & (depth >= start) & (depth < stop)
    if np.count_nonzero(band) < 4:
        band = own & (depth >= 0.75 * float(depth[own].max()))
    return tissue_level(region.hu[band], region.hu[own & (depth >= start)])


def _surface_rim(region: LocalRegion, surface: RadialSurface, own: np.ndarray) -> float | None:
    """HU of the nodule just inside its fitted surface, beyond the partial-volume ramp (0.5 mm deep band)."""
    sampling = region.sampling
    reach = float(surface.radius.max())
    low = np.maximum(np.floor((surface.centre - reach) / sampling).astype(int), 0)
    high = np.minimum(np.ceil((surface.centre + reach) / sampling).astype(int) + 1, region.hu.shape)
    block = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in block], indexing="ij"), axis=-1)
    positions = grid.reshape(-1, 3) * sampling
    distance = surface.signed_distance(positions)
    radial = positions - surface.centre
    radial /= np.maximum(np.linalg.norm(radial, axis=1), 1e-9)[:, None]
    half_width = 0.5 * (np.abs(radial) @ sampling)
    pure = (distance <= -half_width - 0.05) & own[block].reshape(-1)
    band = pure & (distance >= -half_width - 0.55)
    if np.count_nonzero(band) < 8:
        return None
    values = region.hu[block].reshape(-1)
    return tissue_level(values[band], values[pure])


def _layers(mask: np.ndarray, depth: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Inner and outer boundary layers of a mask, ``depth`` voxels each (26-neighbourhood)."""
    inner = mask & ~ndimage.binary_erosion(mask, _CUBE, iterations=depth, border_value=1)
    outer = ndimage.binary_dilation(mask, _CUBE, iterations=depth) & ~mask
    return inner, outer


def _nodule_surface(
    region: LocalRegion,
    inside: np.ndarray,
    lung: np.ndarray,
    outside: np.ndarray,
    background: _Background,
    rim: float,
    warnings: list[str],
) -> RadialSurface:
    """The nodule's half-way surface, limited by the lung field."""
    sampling = region.sampling
    near = ndimage.binary_dilation(inside, _CUBE, iterations=3) & ~ndimage.binary_erosion(
        inside, _CUBE, iterations=3, border_value=1
    )
    usable = near & ndimage.binary_erosion(lung, _CUBE, border_value=1)
    usable &= ~_vessel_junctions(region, inside, lung, outside, background, rim)
    where = np.argwhere(usable)
    parenchyma = background.at(usable)
    contrast = rim - parenchyma
    centre = np.argwhere(inside).mean(axis=0) * sampling
    fraction = (region.hu[usable] - parenchyma) / np.maximum(contrast, 1e-6)
    points = None
    clear = bool(contrast.size) and float(np.min(contrast)) > 3.0 * max(background.noise, 10.0)
    if clear:
        inner, outer = _layers(inside, 1)
        layer = (inner | outer)[usable]
        noise = background.noise / float(np.min(contrast))
        margin = float(np.clip(2.0 * noise, 0.1, 0.35))
        on_ramp = layer & (fraction >= margin) & (fraction <= 1.0 - margin)
        points = _ramp_points(region, where, fraction, centre, on_ramp)
    if points is None or len(points) < _MIN_POINTS:
        warnings.append("too few partial-volume voxels on the nodule surface: volume from the voxel mask")
        points = _mask_points(inside, sampling)
        clear = False
    fitted = sphere_centre(points, centre)
    if _inside_mask(inside, fitted, sampling):
        centre = fitted
    surface = fit_radial_surface(points, centre)
    if clear:
        # Second pass: pick the ramp voxels by their place relative to the first surface, not by their noisy
        # value, and keep their value unclipped: no selection bias, and every ramp voxel counts. Voxels with
        # dense tissue next to them outside the surface (a thin vessel along it) are set aside: its partial
        # volume only ever pushes their points outwards. The centre and surface are refitted without them, then
        # the set-aside points that lie on that surface within the points' noise (the vessel does not reach
        # into their voxels) are taken back, so the surface under a vessel is not left to extrapolation alone.
        contrast_level = float(np.median(contrast))
        for _ in range(2):
            ramp = _expected_ramp(where, sampling, surface) & (fraction > -1.0) & (fraction < 2.0)
            shadowed = _shadowed(region, where, ramp, surface, background, contrast_level)[ramp]
            ramp_points = _ramp_points(region, where, fraction, centre, ramp)
            if ramp_points is None or np.count_nonzero(~shadowed) < _MIN_POINTS:
                break
            second = ramp_points[~shadowed]
            excess = _outside_excess(region, where[ramp][~shadowed], surface, background)
            second = second[~_raised_patches(second, centre, excess, contrast_level)]
            centre = _refit_centre(second, centre, inside, sampling)
            aside = ramp_points[shadowed]
            back = _consistent(aside, second, centre)
            if back.any():
                second = np.concatenate([second, aside[back]])
                centre = _refit_centre(second, centre, inside, sampling)
            surface = fit_radial_surface(second, centre)
    return surface


def _refit_centre(points: np.ndarray, centre: np.ndarray, inside: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """The centre of the sphere through ``points`` if it lies in the mask, else ``centre``."""
    fitted = sphere_centre(points, centre)
    return fitted if _inside_mask(inside, fitted, sampling) else centre


def _inside_mask(mask: np.ndarray, point: np.ndarray, sampling: np.ndarray) -> bool:
    index = np.rint(point / sampling).astype(int)
    return bool(np.all((index >= 0) & (index < mask.shape)) and mask[tuple(index)])


def _ramp_points(
    region: LocalRegion, where: np.ndarray, fraction: np.ndarray, centre: np.ndarray, on_ramp: np.ndarray
) -> np.ndarray | None:
    """Sub-voxel surface points of the voxels ``on_ramp``: each centre moved by ``w (0.5 - f)`` along the normal."""
    where, fraction = where[on_ramp], fraction[on_ramp]
    if len(where) == 0:
        return None
    sampling = region.sampling
    smooth = ndimage.gaussian_filter(region.hu, sigma=0.8 / sampling, truncate=3.0)
    gradient = np.stack(
        [ndimage.correlate1d(smooth, [-0.5, 0.0, 0.5], axis=a)[tuple(where.T)] / sampling[a] for a in range(3)],
        axis=1,
    )
    positions = where * sampling
    radial = positions - centre
    radial /= np.maximum(np.linalg.norm(radial, axis=1), 1e-9)[:, None]
    normal = -gradient / np.maximum(np.linalg.norm(gradient, axis=1), 1e-9)[:, None]
    bad = np.einsum("ij,ij->i", normal, radial) < 0.5
    normal[bad] = radial[bad]
    width = np.abs(normal) @ sampling
    return positions - (width * (0.5 - fraction))[:, None] * normal


def _mask_points(inside: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Surface points of a binary mask: midway between boundary voxels and their outside face neighbours."""
    points = []
    for axis in range(3):
        for step in (-1, 1):
            shifted = np.roll(inside, -step, axis=axis)
            edge = inside & ~shifted
            if step == 1:
                edge[(slice(None),) * axis + (-1,)] = inside[(slice(None),) * axis + (-1,)]
            else:
                edge[(slice(None),) * axis + (0,)] = inside[(slice(None),) * axis + (0,)]
            where = np.argwhere(edge).astype(float)
            where[:, axis] += 0.5 * step
            points.append(where * sampling)
    return np.concatenate(points)


def _lung_limit(lung: np.ndarray, sampling: np.ndarray, centre: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance (mm) from the centre to the end of the lung field along each polar direction."""
    directions = _polar_directions(*shape)
    step = 0.25 * float(np.min(sampling))
    reach = float(np.linalg.norm(np.asarray(lung.shape) * sampling))
    limit = np.full(len(directions), reach)
    open_rays = np.ones(len(directions), dtype=bool)
    size = np.asarray(lung.shape)
    for t in np.arange(step, reach, step):
        index = np.rint((centre + t * directions[open_rays]) / sampling).astype(int)
        inside_box = np.all((index >= 0) & (index < size), axis=1)
        hit = np.zeros(len(index), dtype=bool)
        hit[inside_box] = ~lung[tuple(index[inside_box].T)]
        ended = hit | ~inside_box
        rays = np.nonzero(open_rays)[0]
        limit[rays[ended]] = np.where(hit[ended], t - 0.5 * step, reach)
        open_rays[rays[ended]] = False
        if not open_rays.any():
            break
    return limit.reshape(shape)


def _solid_component(
    region: LocalRegion, inside: np.ndarray, own: np.ndarray, lung: np.ndarray, rim: float, voxel_mm3: float
) -> tuple[NoduleKind, float, float]:
    """Attenuation class, solid-core volume (mm³) and core mean diameter (mm, 0.1 mm).

    Solid tissue inside a ground-glass nodule counts as a core only where it does not continue outside the
    nodule (a vessel crossing the halo does).
    """
    if rim >= SOLID_RIM_HU:
        return NoduleKind.SOLID, 0.0, 0.0
    sampling = region.sampling
    threshold = rim + 0.5 * (SOLID_TISSUE_HU - rim)
    dense = (region.smooth >= threshold) & lung
    radius = max(float(np.min(sampling)), 0.75)
    depth = edt_mm(dense, sampling)
    seeds = depth > radius
    opened = dense & (edt_mm(~seeds, sampling) <= radius + 0.5 * float(np.sqrt(np.sum(sampling**2))))
    labels, count = ndimage.label(opened, structure=_CUBE)
    near = ndimage.binary_dilation(inside, _CUBE)
    wall = ndimage.binary_dilation(~lung, _CUBE)  # solid tissue against the chest wall is not a core
    escaping = np.unique(labels[opened & (~near | wall)])
    core = (labels > 0) & ~np.isin(labels, escaping) & inside
    if count == 0 or not core.any():
        return NoduleKind.GROUND_GLASS, 0.0, 0.0
    interior = ndimage.binary_erosion(core, _CUBE, border_value=1)
    pure = core & (edt_mm(core, sampling) >= rim_band(sampling)[0])
    # A small core shows no voxel free of partial volume: then soft tissue's nominal attenuation is the level.
    solid_level = float(np.median(region.hu[pure])) if np.count_nonzero(pure) >= 20 else SOLID_TISSUE_HU
    inner, outer = _layers(core, 1)
    usable = (inner | outer) & own & ndimage.binary_erosion(lung, _CUBE, border_value=1)
    fraction = (region.hu[usable] - rim) / (solid_level - rim)
    centre = np.argwhere(core).mean(axis=0) * sampling
    points = _ramp_points(region, np.argwhere(usable), fraction, centre, (fraction >= 0.15) & (fraction <= 0.85))
    if points is None or len(points) < _MIN_POINTS:
        volume = float((np.count_nonzero(interior) + float(np.clip(fraction, 0.0, 1.0).sum())) * voxel_mm3)
        diameter = round((6.0 * volume / math.pi) ** (1.0 / 3.0), 1)
    else:
        fitted = sphere_centre(points, centre)
        surface = fit_radial_surface(points, fitted if _inside_mask(core, fitted, sampling) else centre)
        volume = surface.volume_mm3()
        axes = axial_axes(surface, region.ijk_to_ras, sampling)
        diameter = round(0.5 * (round(axes.long_mm, 1) + round(axes.short_mm, 1)), 1)
    if volume < MIN_SOLID_MM3:
        return NoduleKind.GROUND_GLASS, 0.0, 0.0
    return NoduleKind.PART_SOLID, volume, diameter


def _centroid_ras(inside: np.ndarray, ijk_to_ras: np.ndarray) -> tuple[float, float, float]:
    kji = np.argwhere(inside).mean(axis=0)
    ras = ijk_to_ras[:3, :3] @ kji[::-1] + ijk_to_ras[:3, 3]
    return float(round(ras[0], 2)), float(round(ras[1], 2)), float(round(ras[2], 2))


def _warn(image: Image, region: LocalRegion, inside: np.ndarray, mean_diameter: float, warnings: list[str]) -> None:
    thickness = float(image.spacing[2])
    if thickness > THICK_SLICE_MM and mean_diameter < SMALL_NODULE_MM:
        warnings.append(
            f"slices too thick for reliable small-nodule volumetry ({thickness:.2g} mm slices, "
            f"{mean_diameter:.1f} mm nodule); use thin-slice (<= {THICK_SLICE_MM:g} mm) reconstructions"
        )
    for axis, s in enumerate(region.box):
        edge = (s.start == 0 and inside.take(0, axis=axis).any()) or (
            s.stop == image.shape[axis] and inside.take(-1, axis=axis).any()
        )
        if edge:
            warnings.append("nodule reaches the edge of the image: volume and axes are truncated")
            break
