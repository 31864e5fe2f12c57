"""The phantoms the segmentation model is trained on: v1 phantoms on random grids and phantom-v2 cases (random
acquisitions, lung findings, lesions and masses), spread evenly by seed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from MedAIExtension.phantom import random_phantom_spec
from MedAIExtension.phantom.acquisition import random_ct_spec
from MedAIExtension.phantom.spec import PhantomSpec

__all__ = ["V2Lesions", "case_specs", "random_native_grid", "v2_spec"]


def random_native_grid(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A v1 training phantom's grid: voxel counts and spacing (0.9-2 mm pixels, 1-3 mm slices, a whole chest)."""
    in_plane = float(rng.uniform(0.9, 2.0))
    slice_mm = float(rng.uniform(1.0, 3.0))
    fov = float(rng.uniform(340.0, 400.0))
    z_extent = float(rng.uniform(280.0, 340.0))
    n = int(round(fov / in_plane))
    return (n, n, int(round(z_extent / slice_mm))), (in_plane, in_plane, slice_mm)


def v2_spec(seed: int, max_nodules: int = 5, diameter_range_mm: tuple[float, float] = (3.0, 30.0)) -> PhantomSpec:
    """A phantom-v2 case (:func:`~MedAIExtension.phantom.acquisition.random_ct_spec`): random acquisition, lung
    findings and hard negatives, 1 to ``max_nodules`` lesions of ``diameter_range_mm`` (default 3-30 mm) and, in
    40 % of the scans, a mass of 30-70 mm."""
    spec, _ = random_ct_spec(
        seed,
        fov_mm=(340.0, 280.0, 200.0),
        max_nodules=max_nodules,
        diameter_range_mm=diameter_range_mm,
        mass_probability=0.4,
        max_voxels=10_000_000,
    )
    return spec


def case_specs(
    seeds: Sequence[int],
    diameter_range_mm: tuple[float, float] = (4.0, 20.0),
    v2_share: float = 0.0,
    v2_lesions: V2Lesions | None = None,
) -> list[PhantomSpec]:
    """The phantoms of the training cases with these seeds (v2 cases spread evenly among them; their lesions as
    ``v2_lesions`` says, default :class:`V2Lesions`)."""
    v2 = v2_lesions or V2Lesions()
    specs = []
    for n, seed in enumerate(seeds):
        if round((n + 1) * v2_share) > round(n * v2_share):
            specs.append(v2_spec(seed, v2.max_nodules, v2.diameter_range_mm))
        else:
            size, spacing = random_native_grid(np.random.default_rng(seed))
            specs.append(
                random_phantom_spec(
                    seed, size_ijk=size, spacing=spacing, max_nodules=6, diameter_range_mm=diameter_range_mm
                )
            )
    return specs


@dataclass(frozen=True)
class V2Lesions:
    """How many lesions (1 to ``max_nodules``) of which diameters the phantom-v2 training cases get (besides a
    mass in 40 % of them)."""

    max_nodules: int = 5
    diameter_range_mm: tuple[float, float] = (3.0, 30.0)
