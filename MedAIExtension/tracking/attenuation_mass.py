"""Whether a size change is in the image or only in the segmentation: the attenuation mass of the same place.

A segmented volume can change between two scans of an unchanged structure: at a vessel junction or a
bronchovascular bundle, where the boundary between "nodule" and "vessel" is a matter of threshold, the new grid
and noise of the repeat scan move it by millimetres, and the volume by 100 % or more. The image itself has not
changed there. So growth is also checked where no boundary has to be drawn: the *excess attenuation mass* (what
the tissue adds over the lung background, ``Σ (HU - background) / 1000 × voxel volume`` in mm³ of water; de Hoop
et al., Radiology 2010, found nodule mass more repeatable than volume) of one fixed region in both studies. The
region is the two findings' masks together, carried into the baseline grid with the registration and grown by
2 mm and at least one voxel of lung; the follow-up's HU are sampled at the same anatomical points (linear
interpolation through the registration). Real growth replaces lung by tissue in that region and raises its mass;
a boundary that merely fell elsewhere does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.confirmation import carry_mask
from MedAIExtension.tracking.types import NoduleMask

__all__ = ["MIN_RELATIVE_MASS_GROWTH", "MassComparison", "compare_attenuation_mass"]

#: Smallest relative increase of the excess mass that confirms growth (a nodule growing by 25 % in volume adds
#: about 25 % to it; the same place re-scanned changes it by a few per cent).
MIN_RELATIVE_MASS_GROWTH = 0.10
_MARGIN_MM = 2.0
_Z = 1.96


@dataclass(frozen=True)
class MassComparison:
    """The excess attenuation mass of one region in both studies.

    ``baseline_mm3`` and ``followup_mm3`` are the region's mass over its own lung background
    (``Σ (HU - background) / 1000 × voxel volume``, mm³ of water): what the lesion adds to the lung there, vessels
    and other tissue in the region included (they are the same in both studies). ``noise_mm3`` is the standard
    deviation that image noise alone gives the difference.
    """

    baseline_mm3: float
    followup_mm3: float
    noise_mm3: float
    region_voxels: int

    @property
    def relative_change(self) -> float:
        """Follow-up over baseline excess mass, minus one."""
        return self.followup_mm3 / self.baseline_mm3 - 1.0 if self.baseline_mm3 > 0 else 0.0

    @property
    def confirms_growth(self) -> bool:
        """Whether the excess mass rose by :data:`MIN_RELATIVE_MASS_GROWTH` and beyond its noise."""
        if self.baseline_mm3 <= 0:
            return self.followup_mm3 > _Z * self.noise_mm3
        increase = self.followup_mm3 - self.baseline_mm3
        return self.relative_change >= MIN_RELATIVE_MASS_GROWTH and increase > _Z * self.noise_mm3


def _to_index(image: Image, ras: np.ndarray) -> np.ndarray:
    inverse = np.linalg.inv(image.ijk_to_ras)
    return (ras @ inverse[:3, :3].T + inverse[:3, 3])[:, ::-1]  # (k, j, i)


def _ras(image: Image, kji: np.ndarray) -> np.ndarray:
    return kji[:, ::-1] @ image.ijk_to_ras[:3, :3].T + image.ijk_to_ras[:3, 3]


def compare_attenuation_mass(
    baseline: Image,
    followup: Image,
    baseline_mask: NoduleMask,
    followup_mask: NoduleMask,
    followup_to_baseline_ras: np.ndarray,
    baseline_to_followup_ras: np.ndarray,
) -> MassComparison:
    """The attenuation mass of the findings' common region in both studies (see the module docstring)."""
    spacing = np.asarray(baseline.spacing, dtype=float)[::-1]  # (k, j, i)
    own = np.argwhere(baseline_mask.mask) + np.array([b.start for b in baseline_mask.box])
    carried = carry_mask(followup, baseline, followup_mask, followup_to_baseline_ras)
    if carried is not None:
        there_too = np.argwhere(carried.mask) + np.array([b.start for b in carried.box])
        points = np.concatenate([own, there_too])
    else:
        points = own
    pad = np.ceil(_MARGIN_MM / spacing).astype(int) + 2
    low = np.maximum(points.min(axis=0) - pad, 0)
    high = np.minimum(points.max(axis=0) + pad + 1, np.asarray(baseline.shape))
    seed = np.zeros(tuple(int(v) for v in high - low), dtype=bool)
    inside = np.all((points >= low) & (points < high), axis=1)
    local = points[inside] - low
    seed[local[:, 0], local[:, 1], local[:, 2]] = True
    # at least one voxel all round, so the partial-volume voxels of both outlines are inside
    region = ndimage.binary_dilation(seed, structure=np.ones((3, 3, 3), dtype=bool))
    region |= ndimage.distance_transform_edt(~seed, sampling=spacing) <= _MARGIN_MM
    kji = np.argwhere(region) + low
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    before = np.asarray(baseline.array[box], dtype=np.float32)[region]
    moved = _ras(baseline, kji.astype(float)) @ baseline_to_followup_ras[:3, :3].T + baseline_to_followup_ras[:3, 3]
    there = _to_index(followup, moved)
    start = np.maximum(np.floor(there.min(axis=0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(there.max(axis=0)).astype(int) + 2, np.asarray(followup.shape))
    stop = np.maximum(stop, start + 1)
    near = np.asarray(followup.array[tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))])
    after = ndimage.map_coordinates(near.astype(np.float32), (there - start).T, order=1, mode="nearest")
    voxel = baseline.voxel_volume_mm3
    margin = ~seed[region]  # the lung around both outlines
    background = float(np.median(before[margin])) if margin.any() else -850.0
    background = min(background, -500.0)  # a margin full of tissue is no lung background: keep a lung's
    noise = float(np.std(before[margin] - after[margin])) / np.sqrt(2.0) if margin.sum() > 2 else 0.0
    return MassComparison(
        float((before - background).sum() / 1000.0 * voxel),
        float((after - background).sum() / 1000.0 * voxel),
        float(noise * np.sqrt(2.0 * region.sum()) / 1000.0 * voxel),
        int(region.sum()),
    )
