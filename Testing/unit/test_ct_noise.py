"""CT noise texture: level, NPS shape per kernel, z correlation, and slab independence."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.phantom.ct_noise import KERNELS, ct_noise_slices, nps_peak_frequency, radial_nps

SPACING = (0.7, 0.7)
SHAPE = (256, 256)


def _noise(kernel: str, sigma: float = 20.0, slices: int = 6, **kwargs) -> np.ndarray:
    return ct_noise_slices(3, range(slices), SHAPE, SPACING, sigma, KERNELS[kernel], **kwargs)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_noise_level_is_the_one_asked_for(kernel: str) -> None:
    noise = _noise(kernel, sigma=25.0)
    assert noise.dtype == np.float32
    assert abs(float(noise.mean())) < 1.0
    assert float(noise.std()) == pytest.approx(25.0, rel=0.05)


def test_nps_peaks_where_each_kernel_puts_it_and_sharper_kernels_peak_higher() -> None:
    peaks = {}
    for name, kernel in KERNELS.items():
        frequency, nps = radial_nps(_noise(name), SPACING)
        peaks[name] = nps_peak_frequency(frequency, nps)
        assert peaks[name] == pytest.approx(kernel.peak_cycles_per_mm, abs=0.05)
        assert nps[0] < 0.5 * nps.max()  # band-pass: little power at the lowest frequencies, unlike white noise
    assert peaks["soft"] < peaks["standard"] < peaks["sharp"] < peaks["lung"]


def test_white_noise_would_fail_the_texture_check() -> None:
    white = np.random.default_rng(0).standard_normal((6, *SHAPE)).astype(np.float32) * 20
    _, nps = radial_nps(white, SPACING)
    assert nps[0] > 0.7 * nps.max()  # flat spectrum: the check above tells the two apart


def test_nps_integrates_to_the_variance() -> None:
    noise = _noise("standard", sigma=30.0)
    frequency, nps = radial_nps(noise, SPACING)
    # ∫∫ NPS df = variance; in rings of width df: Σ NPS(f) 2πf df (up to Nyquist; the corners add a little).
    df = 0.5 / SPACING[0] / 32
    assert len(frequency) == 31  # the first ring holds only the zero frequency
    assert float(np.sum(nps * 2 * np.pi * frequency * df)) == pytest.approx(900.0, rel=0.1)


def test_overlapping_slices_correlate_and_contiguous_ones_do_not() -> None:
    def neighbour_correlation(noise: np.ndarray) -> float:
        return float(np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1])

    contiguous = _noise("standard", slice_thickness_mm=1.0, slice_increment_mm=1.0)
    overlapping = _noise("standard", slice_thickness_mm=3.0, slice_increment_mm=1.0)
    assert abs(neighbour_correlation(contiguous)) < 0.05
    # triangle profile of width 3 sampled at 1 mm: weights 1/3, 2/3, 1, 2/3, 1/3 -> lag-1 correlation 0.826
    assert neighbour_correlation(overlapping) == pytest.approx(0.826, abs=0.03)
    assert float(overlapping.std()) == pytest.approx(20.0, rel=0.05)


def test_each_slice_depends_only_on_seed_and_index() -> None:
    whole = ct_noise_slices(5, range(0, 12), (64, 80), (0.8, 0.6), 10.0, slice_thickness_mm=2.5)
    part = ct_noise_slices(5, range(7, 10), (64, 80), (0.8, 0.6), 10.0, slice_thickness_mm=2.5)
    np.testing.assert_array_equal(whole[7:10], part)
    other_seed = ct_noise_slices(6, range(7, 10), (64, 80), (0.8, 0.6), 10.0, slice_thickness_mm=2.5)
    assert not np.allclose(part, other_seed)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(InputError, match="negative"):
        ct_noise_slices(0, range(1), (64, 64), SPACING, -1.0)
    with pytest.raises(InputError, match="positive"):
        ct_noise_slices(0, range(1), (64, 64), SPACING, 1.0, slice_thickness_mm=0.0)
    with pytest.raises(InputError, match="at least"):
        radial_nps(np.zeros((1, 32, 32), np.float32), SPACING)


# --- in the phantom renderer ----------------------------------------------------------------------------------


def _phantom_noise(kernel: str | None, noise_seed: int, thickness: float | None = None) -> np.ndarray:
    from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom

    spec = PhantomSpec(
        size_ijk=(192, 192, 12),
        spacing=(0.7, 0.7, 1.0),
        nodules=(),
        seed=4,
        noise_hu=25.0,
        noise_seed=noise_seed,
        noise_kernel=kernel,
        slice_thickness_mm=thickness,
    )
    return generate_chest_phantom(spec).ct.array.astype(np.float32)


@pytest.mark.parametrize("kernel", ["soft", "lung"])
def test_phantoms_rendered_with_a_kernel_have_its_texture(kernel: str) -> None:
    # Two noise realisations of one patient: the anatomy cancels in the difference, the noise stays (x sqrt 2).
    difference = (_phantom_noise(kernel, 1) - _phantom_noise(kernel, 2)) / np.sqrt(2.0)
    centre = difference[:, 32:160, 32:160]  # inside the body: no air clipped at -1024 HU
    assert float(centre.std()) == pytest.approx(25.0, rel=0.1)
    frequency, nps = radial_nps(centre, (0.7, 0.7))
    assert nps_peak_frequency(frequency, nps) == pytest.approx(KERNELS[kernel].peak_cycles_per_mm, abs=0.06)


def test_default_phantom_noise_is_unchanged_and_thickness_correlates_slices() -> None:
    default = _phantom_noise(None, 1) - _phantom_noise(None, 2)
    _, nps = radial_nps(default[:, 32:160, 32:160], (0.7, 0.7))
    assert nps[0] > 0.5 * nps.max()  # the original noise: smoothed white noise, low-pass
    thick = (_phantom_noise("standard", 1, thickness=3.0) - _phantom_noise("standard", 2, thickness=3.0))[
        :, 32:160, 32:160
    ]
    correlation = float(np.corrcoef(thick[:-1].ravel(), thick[1:].ravel())[0, 1])
    assert correlation == pytest.approx(0.826, abs=0.05)


def test_a_phantom_kernel_must_be_known() -> None:
    from MedAIExtension.phantom import PhantomSpec

    with pytest.raises(InputError, match="noise_kernel"):
        PhantomSpec(noise_kernel="bone-ultra")
    with pytest.raises(InputError, match="slice_thickness_mm"):
        PhantomSpec(slice_thickness_mm=0.0)
