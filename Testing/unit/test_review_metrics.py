"""Set metrics of the Synthetic Data Review: FID (vs MONAI), MMD, MS-SSIM diversity, tissue histograms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import generate_chest_phantom, random_phantom_spec
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.review.features import FEATURE_NAMES, PLANES, common_grid, plane_axis, plane_features
from MedAIExtension.review.metrics import (
    fid_25d,
    frechet_distance,
    mmd,
    ms_ssim_diversity,
    set_metrics,
    tissue_histogram_distance,
)

SIZE = (40, 40, 32)
SPACING = (8.5, 8.5, 10.0)


@pytest.fixture(scope="module")
def real() -> list[Image]:
    return [generate_chest_phantom(random_phantom_spec(s, size_ijk=SIZE, spacing=SPACING)).ct for s in range(3)]


@pytest.fixture(scope="module")
def other() -> list[Image]:
    return [generate_chest_phantom(random_phantom_spec(s, size_ijk=SIZE, spacing=SPACING)).ct for s in (20, 21)]


def _noisy(images: list[Image], sd: float, seed: int = 1) -> list[Image]:
    rng = np.random.default_rng(seed)
    return [im.with_array((im.array + rng.normal(0.0, sd, im.shape)).astype(np.float32)) for im in images]


def _blurred(images: list[Image], sigma: float) -> list[Image]:
    return [im.with_array(ndimage.gaussian_filter(im.array.astype(np.float32), sigma)) for im in images]


def test_frechet_distance_equals_monai_fid() -> None:
    torch = pytest.importorskip("torch")
    from monai.metrics import FIDMetric

    rng = np.random.default_rng(0)
    for n, m, d in ((60, 50, 37), (12, 10, 37), (30, 40, 5)):  # the second is rank deficient (n < d)
        a = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d)
        b = rng.normal(size=(m, d)) * 1.3 + 0.4
        ours = frechet_distance(a, b)
        reference = float(FIDMetric()(torch.from_numpy(b), torch.from_numpy(a)))
        assert ours == pytest.approx(reference, rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-8 * np.trace(np.cov(a, rowvar=False))


def test_frechet_and_mmd_reject_bad_features() -> None:
    with pytest.raises(InputError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(InputError, match="features"):
        mmd(np.zeros((4, 3)), np.zeros((4, 5)))


def test_mmd_zero_for_same_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(80, 6))
    assert abs(mmd(a, a)) < 0.05
    values = [mmd(a, rng.normal(size=(80, 6)) + shift) for shift in (0.0, 0.5, 1.5)]
    assert values[0] < values[1] < values[2]
    assert abs(values[0]) < 0.05


def test_plane_features_shape_and_orientation(real: list[Image]) -> None:
    image = real[0]
    feats = plane_features(image, slices_per_plane=4)
    assert set(feats) == set(PLANES)
    assert all(v.shape == (4, len(FEATURE_NAMES)) and np.isfinite(v).all() for v in feats.values())
    assert plane_axis(image, "axial") == 0 and plane_axis(image, "sagittal") == 2
    # the same volume stored with i and k swapped (a sagittal acquisition) gives the same per-plane features
    swapped = Image(np.ascontiguousarray(image.array.transpose(2, 1, 0)), image.ijk_to_ras[:, [2, 1, 0, 3]])
    assert plane_axis(swapped, "axial") == 2
    again = plane_features(swapped, slices_per_plane=4)
    for plane in PLANES:
        np.testing.assert_allclose(np.sort(again[plane][:, :13], axis=0), np.sort(feats[plane][:, :13], axis=0))


def test_fid_zero_for_itself_and_monotonic_in_noise_and_blur(real: list[Image]) -> None:
    assert abs(fid_25d(real, real)["mean"]) < 1e-6
    noise = [fid_25d(real, _noisy(real, sd))["mean"] for sd in (10.0, 40.0, 120.0)]
    assert 0 < noise[0] < noise[1] < noise[2]
    blur = [fid_25d(real, _blurred(real, s))["mean"] for s in (0.5, 1.0, 2.0)]
    assert 0 < blur[0] < blur[1] < blur[2]


def test_set_metrics_sensible(real: list[Image], other: list[Image]) -> None:
    messages: list[str] = []
    same = set_metrics(real, real, progress=lambda _f, m: messages.append(m))
    noisy = set_metrics(real, _noisy(real, 80.0))
    assert messages and same.n_real == 3 and same.n_synthetic == 3
    assert abs(same.fid["mean"]) < 1e-6 and abs(same.mmd["mean"]) < 0.05
    assert noisy.fid["mean"] > 1.0 and noisy.mmd["mean"] > same.mmd["mean"] + 0.05
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in same.tissue_histogram_distance.values())
    assert noisy.tissue_histogram_distance["lung"] > 1.0
    data = noisy.to_dict()
    assert set(data["fid"]) == {*PLANES, "mean"} and data["feature_extractor"]
    unrelated = set_metrics(real, other)
    assert unrelated.fid["mean"] > 0


def test_tissue_histogram_distance_measures_hu_shift(real: list[Image]) -> None:
    shifted = [im.with_array(im.array.astype(np.float32) + 20.0) for im in real]
    distance = tissue_histogram_distance(real, shifted)
    assert set(distance) == {"lung", "fat", "soft tissue", "bone"}
    # a 20 HU shift moves each band's distribution by up to about 20 HU (less in a narrow band that cuts the
    # distribution, a little more where voxels cross a band edge), and a larger shift moves it further
    assert all(5.0 < value < 40.0 for value in distance.values())
    further = tissue_histogram_distance(real, [im.with_array(im.array.astype(np.float32) + 60.0) for im in real])
    assert all(further[band] > distance[band] for band in distance)
    assert np.isnan(tissue_histogram_distance(real, real, bands={"metal": (3000, 4000)})["metal"])


def test_diversity_lower_for_copies_than_for_different_phantoms(real: list[Image]) -> None:
    copies = [real[0], *_noisy([real[0], real[0]], 20.0)]
    assert ms_ssim_diversity(copies) > ms_ssim_diversity(real) + 0.1
    with pytest.raises(InputError, match="at least 2"):
        ms_ssim_diversity(real[:1])


def test_mixed_shapes_resampled_or_refused(real: list[Image]) -> None:
    odd = generate_chest_phantom(random_phantom_spec(7, size_ijk=(32, 36, 24), spacing=(10.0, 9.0, 12.0))).ct
    grid, notes = common_grid([real[0], odd], real[0])
    assert grid[1].shape == real[0].shape and np.allclose(grid[1].spacing, real[0].spacing)
    assert notes and "resampled" in notes[0]
    result = set_metrics(real, [*real[:2], odd])
    assert any("resampled" in note for note in result.notes)
    with pytest.raises(InputError, match=r"Synthetic image 2 .*resample"):
        set_metrics(real, [*real[:2], odd], resample=False)


def test_empty_sets_and_cancel(real: list[Image]) -> None:
    with pytest.raises(InputError, match="empty"):
        set_metrics([], real)
    with pytest.raises(InputError, match="empty"):
        fid_25d(real, [])
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        set_metrics(real, real, progress=Progress(None, token))


def test_a_column_nearly_constant_in_the_real_set_cannot_dominate_the_fid() -> None:
    """Seen in bench/review.py: the air percentile (sd 0.08 HU in real CTs, 2.7 HU in synthetic) once gave FID 1100."""
    from MedAIExtension.review.metrics import frechet_distance, standardize

    rng = np.random.default_rng(3)
    real = rng.normal(size=(400, 6))
    synthetic = rng.normal(size=(400, 6))
    real[:, 0] = -1024.0 + rng.normal(0, 0.08, 400)
    synthetic[:, 0] = -1024.0 + rng.normal(0, 2.7, 400)
    r, s = standardize(real, synthetic)
    assert frechet_distance(r, s) < 5.0
    r_only, s_only = standardize(real[:, 1:], synthetic[:, 1:])
    assert frechet_distance(r_only, s_only) < 0.2  # the other columns agree: the odd column adds a bounded amount
