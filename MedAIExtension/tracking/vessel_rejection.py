"""Background and vessel rejection for the nodule surface: the parenchyma around the nodule as a smooth
polynomial with its noise (:class:`_Background`), and the tests that set aside boundary voxels shadowed by a
vessel or other foreign density (:func:`_shadowed`, :func:`_vessel_junctions`) and take back those consistent
with the clean surface (:func:`_consistent`).

Helpers of :mod:`MedAIExtension.tracking.measurements`, where the method is described.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.tracking.nodule_segmentation import (
    LocalRegion,
    parenchyma_level,
    robust_std,
)
from MedAIExtension.tracking.surface_fit import _MIN_POINTS, RadialSurface, _kernel_width, _smooth, _trimmed_mean_fit

__all__: list[str] = []  # private helpers of tracking.measurements

#: Largest standard error (HU) of the fitted parenchyma level at the nodule for a richer background model.
_BACKGROUND_ERROR_HU = 3.0
_SHELL_MM = 3.5
#: A ramp voxel is shadowed when an outside neighbour is denser than the surface predicts by this many noise
#: standard deviations and this fraction of the nodule's contrast (see :func:`_shadowed`).
_FOREIGN_NOISE = 4.0
_FOREIGN_CONTRAST = 0.1
#: Set-aside surface points within this many noise standard deviations outside the clean surface come back.
_CONSISTENT_SD = 1.5
_CUBE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class _Background:
    """Parenchyma attenuation around the nodule as a quadratic in position (mm), with the image noise.

    The lung's own texture and gravity gradient vary over a few centimetres; a quadratic fitted to the shell
    around the nodule interpolates them across it.
    """

    origin: np.ndarray  # box index (k, j, i) of the expansion point
    sampling: np.ndarray
    coefficients: np.ndarray
    noise: float

    def terms(self, idx: np.ndarray) -> np.ndarray:
        """Design matrix of the polynomial at box indices (N x 3)."""
        x = (np.asarray(idx, dtype=float) - self.origin) * self.sampling / 10.0
        columns = [np.ones(len(x)), x[:, 0], x[:, 1], x[:, 2]]
        if len(self.coefficients) == 10:
            columns += [x[:, 0] ** 2, x[:, 1] ** 2, x[:, 2] ** 2]
            columns += [x[:, 0] * x[:, 1], x[:, 0] * x[:, 2], x[:, 1] * x[:, 2]]
        return np.column_stack(columns)[:, : len(self.coefficients)]

    def at(self, where: np.ndarray) -> np.ndarray:
        """Parenchyma HU at the voxels of a boolean mask (in ``np.nonzero`` order)."""
        return self.terms(np.argwhere(where)) @ self.coefficients


def _background(region: LocalRegion, lung: np.ndarray, outside: np.ndarray, origin: np.ndarray) -> _Background:
    """Fit the parenchyma in a shell around the nodule (beyond its partial volume; vessels and air left out)."""
    start = 1.5 * float(np.max(region.sampling))
    shell = lung & (outside > start) & (outside <= start + _SHELL_MM)
    level = parenchyma_level(region.smooth[shell])
    if level is None:
        level = parenchyma_level(region.smooth[lung])
    if level is None:
        raise InputError(
            "There is no lung parenchyma around this nodule mask, so its boundary cannot be measured; "
            "check that the mask and the lung mask belong to this image."
        )
    # Partial volume with vessels and the chest wall only ever raises the HU: keep clear of both.
    clear = ndimage.binary_erosion(lung, _CUBE, iterations=2, border_value=1)
    clear &= ~ndimage.binary_dilation(region.smooth > level + 100.0, _CUBE, iterations=2)
    near = shell & (np.abs(region.smooth - level) < 150.0)
    if np.count_nonzero(near & clear) >= 100:
        near &= clear
    values = region.hu[near].astype(float)
    fallback = _Background(origin, region.sampling, np.array([level]), robust_std(values))
    best = fallback
    for count in (10, 4):  # quadratic, then linear: the richest model the shell pins down at the nodule
        if values.size < 10 * count:
            continue
        model = _Background(origin, region.sampling, np.zeros(count), fallback.noise)
        design = model.terms(np.argwhere(near))
        keep = np.ones(len(values), dtype=bool)
        for _ in range(3):
            coefficients, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
            residual = values - design @ coefficients
            keep = np.abs(residual) < 3.0 * max(robust_std(residual[keep]), 1.0)
        noise = robust_std(residual[keep])
        # Standard error of the fitted level at the nodule centre (noise is correlated over ~3 voxels).
        centre = model.terms(origin[None, :])[0]
        gram = design[keep].T @ design[keep]
        error = noise * math.sqrt(3.0 * max(float(centre @ np.linalg.pinv(gram) @ centre), 0.0))
        best = _Background(origin, region.sampling, coefficients, noise)
        if error <= _BACKGROUND_ERROR_HU:
            return best
    return best


def _consistent(candidates: np.ndarray, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Which ``candidates`` (set-aside surface points) lie on the surface fitted to ``points`` within their noise.

    The surface is that of :func:`fit_radial_surface` around ``centre``, evaluated at the points' own
    directions only (a robust angular median, then the mean of the points within 2.5 robust standard
    deviations of it). The noise is the robust standard deviation of ``points`` about it (at least 0.01 mm).
    Foreign partial volume only moves a point outwards, so a set-aside point counts as clean when it stands out
    by no more than ``_CONSISTENT_SD`` of that noise (and lies inside by no more than the fit's own 2.5).
    """
    back = np.zeros(len(candidates), dtype=bool)
    offsets = points - centre
    radii = np.linalg.norm(offsets, axis=1)
    aside = candidates - centre
    aside_radii = np.linalg.norm(aside, axis=1)
    if len(candidates) == 0 or len(radii) < _MIN_POINTS or np.any(radii < 1e-6) or np.any(aside_radii < 1e-6):
        return back
    directions = offsets / radii[:, None]
    queries = np.concatenate([directions, aside / aside_radii[:, None]])
    alpha = _kernel_width(len(radii))
    base = float(np.median(radii))
    first = base + _smooth(directions, directions, radii - base, alpha, median=True)
    refined = _trimmed_mean_fit(queries, directions, radii, first, alpha)
    if refined is None:
        return back
    fitted, good = refined
    spread = max(robust_std(radii[good] - fitted[: len(radii)][good]), 0.01)
    offset = aside_radii - fitted[len(radii) :]
    return (offset <= _CONSISTENT_SD * spread) & (offset >= -2.5 * spread)


def _expected_ramp(where: np.ndarray, sampling: np.ndarray, surface: RadialSurface) -> np.ndarray:
    """Voxels (box indices, N x 3) that a surface crosses: expected nodule fraction between 0.1 and 0.9."""
    positions = where * sampling
    offsets = positions - surface.centre
    directions = offsets / np.maximum(np.linalg.norm(offsets, axis=1), 1e-9)[:, None]
    expected = 0.5 - surface.signed_distance(positions) / (np.abs(directions) @ sampling)
    return (expected >= 0.1) & (expected <= 0.9)


def _shadowed(
    region: LocalRegion,
    where: np.ndarray,
    candidates: np.ndarray,
    surface: RadialSurface,
    background: _Background,
    contrast: float,
) -> np.ndarray:
    """Which ``candidates`` of the voxels ``where`` have foreign dense tissue next to them, outside the surface.

    Two tests, either is enough:

    * *Foreign density* (:func:`_foreign_excess`): the outside neighbours of a ramp voxel (26-neighbourhood,
      centres beyond the surface) should hold parenchyma plus the nodule's own partial volume as the current
      surface predicts it. Where one of them is denser than that prediction by more than four noise standard
      deviations and a tenth of the contrast, a structure that is not the nodule (a vessel lying against it)
      reaches into the voxel's neighbourhood and, through the voxel's own partial volume, pushes its surface
      point outwards. The threshold is anchored on the model (zero foreign density) and the image noise, not on
      the other ramp voxels, so it still holds when a vessel runs along much of a small nodule's surface. It
      is not applied when it would leave fewer than a quarter of the candidates (and two dozen): then the
      excess is more likely a blur wider than the linear ramp (or a nodule buried in vessels) than one vessel.
    * *Relative excess*: the largest excess of the outside neighbours (lightly smoothed HU, centres at least
      half their width beyond the surface) over the local parenchyma stands out from that of the other ramp
      voxels by three one-sided robust standard deviations and a tenth of the contrast.
    """
    shadowed = np.zeros(len(where), dtype=bool)
    picked = np.nonzero(candidates)[0]
    if len(picked) < 2 * _MIN_POINTS:
        return shadowed
    foreign = _foreign_excess(region, where[picked], surface, background, contrast)
    dense = foreign > max(_FOREIGN_NOISE * background.noise, _FOREIGN_CONTRAST * contrast)
    if np.count_nonzero(~dense) >= max(2 * _MIN_POINTS, len(picked) // 4):
        shadowed[picked] = dense
    excess = _outside_excess(region, where[picked], surface, background)
    seen = np.isfinite(excess)
    if np.count_nonzero(seen) < 2 * _MIN_POINTS:
        return shadowed
    typical = float(np.median(excess[seen]))
    below = excess[seen][excess[seen] <= typical]
    spread = 1.4826 * float(np.median(typical - below))
    shadowed[picked[seen]] |= excess[seen] > typical + max(3.0 * spread, 0.1 * contrast)
    return shadowed


def _foreign_excess(
    region: LocalRegion, where: np.ndarray, surface: RadialSurface, background: _Background, contrast: float
) -> np.ndarray:
    """Largest foreign density (HU) among the outside neighbours of each voxel (N x 3 indices).

    Foreign density is a voxel's HU (unsmoothed) less what the current surface predicts there: the local
    parenchyma plus ``contrast`` times the nodule fraction of the linear partial-volume ramp (``0.5 - d / w``
    clipped to [0, 1], ``d`` the signed distance, ``w`` the voxel's extent along the radial direction).
    Outside neighbours are those of the 26-neighbourhood whose centres lie beyond the surface; ``-inf`` where
    a voxel has none.
    """
    sampling = region.sampling
    neighbours, inbox = _neighbours(where, region.hu.shape)
    positions = neighbours * sampling
    offsets = positions - surface.centre
    directions = offsets / np.maximum(np.linalg.norm(offsets, axis=1), 1e-9)[:, None]
    distance = surface.signed_distance(positions)
    fraction = np.clip(0.5 - distance / (np.abs(directions) @ sampling), 0.0, 1.0)
    predicted = background.terms(neighbours) @ background.coefficients + contrast * fraction
    foreign = region.hu[tuple(neighbours.T)] - predicted
    return np.where(inbox & (distance > 0.0), foreign, -np.inf).reshape(len(where), -1).max(axis=1)


def _neighbours(where: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The 26 neighbours of each voxel (N*26 x 3 indices, clipped to the box) and whether each lies in the box."""
    steps = np.argwhere(_CUBE) - 1
    steps = steps[np.any(steps != 0, axis=1)]
    neighbours = (where[:, None, :] + steps[None, :, :]).reshape(-1, 3)
    inbox = np.all((neighbours >= 0) & (neighbours < shape), axis=1)
    return np.clip(neighbours, 0, np.asarray(shape) - 1), inbox


def _outside_excess(
    region: LocalRegion, where: np.ndarray, surface: RadialSurface, background: _Background
) -> np.ndarray:
    """Largest excess (HU) over the local parenchyma among the outside neighbours of each voxel (N x 3 indices).

    Outside neighbours are those of the 26-neighbourhood whose centres lie at least half their width beyond the
    surface; ``-inf`` where a voxel has none.
    """
    sampling = region.sampling
    neighbours, inbox = _neighbours(where, region.hu.shape)
    positions = neighbours * sampling
    offsets = positions - surface.centre
    directions = offsets / np.maximum(np.linalg.norm(offsets, axis=1), 1e-9)[:, None]
    beyond = surface.signed_distance(positions) >= 0.5 * (np.abs(directions) @ sampling)
    beyond &= inbox
    excess = region.smooth[tuple(neighbours.T)] - background.terms(neighbours) @ background.coefficients
    return np.where(beyond, excess, -np.inf).reshape(len(where), -1).max(axis=1)


def _vessel_junctions(
    region: LocalRegion,
    inside: np.ndarray,
    lung: np.ndarray,
    outside: np.ndarray,
    background: _Background,
    rim: float,
) -> np.ndarray:
    """Voxels where dense tissue leaves the nodule (a vessel touching it), with their neighbours.

    Dense here means beyond a quarter of the nodule's contrast; the vessel shows as dense voxels just outside
    the nodule that touch dense voxels beyond the nodule's partial volume. Their HU mixes the vessel in, so
    they say nothing about the nodule's own surface. A vessel passing nearby without touching taints nothing.
    """
    diagonal = float(np.sqrt(np.sum(region.sampling**2)))
    near = lung & ~inside & (outside <= 2.0 * diagonal)
    parenchyma = background.at(near)
    dense = np.zeros(region.hu.shape, dtype=bool)
    dense[near] = (region.smooth[near] - parenchyma) > 0.25 * (rim - parenchyma)
    beyond = dense & (outside > 1.01 * diagonal)
    touching = dense & ~beyond & ndimage.binary_dilation(beyond, _CUBE)
    return ndimage.binary_dilation(touching | (beyond & ndimage.binary_dilation(touching, _CUBE)), _CUBE)
