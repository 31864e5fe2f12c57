"""Lobulated lesions: same volume as their sphere, longer and shorter axes, reproducible; spheres unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.phantom import NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.phantom.lesion_shape import _fibonacci_sphere, lobed_shape


def test_the_outline_keeps_the_spheres_volume() -> None:
    shape = lobed_shape(0.4, seed=3)
    assert shape is not None and lobed_shape(0.0, seed=3) is None
    points = _fibonacci_sphere(20000)
    rho = shape.relative_radius(points[:, 0], points[:, 1], points[:, 2])
    assert float(np.mean(rho**3)) == pytest.approx(1.0, rel=1e-3)
    assert rho.max() / rho.min() > 1.2  # really lobulated
    assert rho.max() <= shape.max_relative_radius + 1e-9


def _rendered(lobulation: float) -> tuple[dict, np.ndarray, float]:
    nodule = NoduleSpec(14.0, "solid", lung="right", position=(0.3, 0.1, 0.2), lobulation=lobulation, shape_seed=5)
    spec = PhantomSpec(size_ijk=(220, 180, 90), spacing=(1.0, 1.0, 1.5), nodules=(nodule,), seed=2, noise_hu=0.0)
    phantom = generate_chest_phantom(spec)
    mask = phantom.nodule_ids.array == 1
    return phantom.truth["nodules"][0], mask, phantom.ct.voxel_volume_mm3


def _extent_ratio(mask: np.ndarray) -> float:
    points = np.argwhere(mask) * np.array([1.5, 1.0, 1.0])
    centred = points - points.mean(axis=0)
    eigen = np.linalg.eigvalsh(np.cov(centred.T))
    return float(math.sqrt(eigen.max() / eigen.min()))


def test_a_lobulated_nodule_renders_with_its_truth_volume_and_unequal_axes() -> None:
    truth, mask, voxel = _rendered(0.4)
    assert truth["lobulation"] == 0.4
    assert mask.sum() * voxel == pytest.approx(truth["volume_mm3"], rel=0.05)
    assert _extent_ratio(mask) > 1.15
    round_truth, round_mask, _ = _rendered(0.0)
    assert "lobulation" not in round_truth
    assert _extent_ratio(round_mask) < 1.1
    assert round_mask.sum() * voxel == pytest.approx(round_truth["volume_mm3"], rel=0.05)


def test_lobulation_is_checked() -> None:
    with pytest.raises(InputError, match="lobulation"):
        NoduleSpec(8.0, lung="right", position=(0.3, 0.0, 0.0), lobulation=0.9)
