"""Random CT acquisitions: the ranges real chest CT comes in, reproducible, renderable, with masses sometimes."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.phantom import generate_chest_phantom
from MedAIExtension.phantom.acquisition import random_acquisition, random_ct_spec
from MedAIExtension.phantom.ct_noise import KERNELS
from MedAIExtension.phantom.sampling import random_phantom_spec


def test_acquisitions_cover_the_ranges_of_real_chest_ct() -> None:
    rng = np.random.default_rng(0)
    draws = [random_acquisition(rng) for _ in range(400)]
    pixels = [a.pixel_mm for a in draws]
    thickness = [a.slice_thickness_mm for a in draws]
    assert 0.5 <= min(pixels) < 0.55 and 0.85 < max(pixels) <= 0.9
    assert min(thickness) < 0.8 and max(thickness) > 4.0 and all(0.6 <= t <= 5.0 for t in thickness)
    assert {a.kernel for a in draws} == set(KERNELS)
    assert all(8.0 <= a.noise_hu <= 60.0 for a in draws)
    overlapping = [a for a in draws if a.slice_increment_mm < a.slice_thickness_mm]
    assert overlapping and all(a.slice_thickness_mm <= 2.0 for a in overlapping)
    # sharper kernels are noisier at the same dose
    by_kernel = {k: np.median([a.noise_hu for a in draws if a.kernel == k]) for k in KERNELS}
    assert by_kernel["soft"] < by_kernel["lung"]


def test_random_ct_spec_is_reproducible_and_renderable() -> None:
    spec, acquisition = random_ct_spec(7, fov_mm=(260.0, 180.0, 40.0), max_voxels=2_000_000)
    again, _ = random_ct_spec(7, fov_mm=(260.0, 180.0, 40.0), max_voxels=2_000_000)
    assert spec == again
    assert spec.noise_kernel == acquisition.kernel and spec.noise_hu == acquisition.noise_hu
    assert np.prod(spec.size_ijk) <= 2_000_000 * 1.05
    assert spec.spacing[2] == pytest.approx(acquisition.slice_increment_mm)
    phantom = generate_chest_phantom(spec)
    assert phantom.truth["noise_kernel"] == acquisition.kernel
    assert phantom.ct.shape == tuple(reversed(spec.size_ijk))


def test_masses_appear_in_some_specs_and_never_change_the_v1_specs() -> None:
    diameters = []
    for seed in range(12):
        spec, _ = random_ct_spec(seed, fov_mm=(300.0, 240.0, 250.0), mass_probability=1.0, max_voxels=1_000_000)
        diameters.append(max(n.diameter_mm for n in spec.nodules))
    assert sum(d >= 30.0 for d in diameters) >= 6
    lobulated = [n.lobulation for seed in range(12) for n in random_ct_spec(seed, max_voxels=1_000_000)[0].nodules]
    assert 0 < sum(v > 0 for v in lobulated) < len(lobulated) and max(lobulated) <= 0.25
    assert all(d <= 70.0 for d in diameters)
    # v1 training specs (masses=0) are exactly what they were: the mass draws come after the nodule count
    v1 = random_phantom_spec(1000, size_ijk=(96, 96, 64), spacing=(3.0, 3.0, 3.0))
    assert all(n.diameter_mm <= 20.0 for n in v1.nodules) and v1.noise_kernel is None


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="mass_probability"):
        random_ct_spec(1, mass_probability=1.5)
    with pytest.raises(InputError, match="fov_mm"):
        random_ct_spec(1, fov_mm=(100.0, 100.0))
