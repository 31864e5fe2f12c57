"""Resampling onto the model grid: integer input is interpolated as exactly as its float32 copy would be, and the
fused resample + normalise equals the two steps one after the other."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image
from MedAIExtension.models.preprocessing import (
    model_grid,
    normalize_intensity,
    resample_array,
    resample_normalized,
)


def _ct(seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 1500, size=(23, 41, 37)).astype(np.int16)
    rotation = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])  # an oblique acquisition
    affine = LPS_TO_RAS @ affine_from_parts(np.array([-20.0, 15.0, 40.0]), np.array([0.7, 0.7, 2.5]), rotation)
    return Image(array, affine, modality="CT")


def test_integer_input_resamples_like_its_float_copy() -> None:
    image = _ct()
    grid = model_grid(image, (1.25, 1.25, 1.25), "LPS")
    assert grid is not None
    as_float = Image(image.array.astype(np.float32), image.ijk_to_ras)
    direct = resample_array(image, *grid)
    assert direct.dtype == np.float32
    np.testing.assert_array_equal(direct, resample_array(as_float, *grid, fill=float(image.array.min())))
    nearest = resample_array(image, *grid, linear=False)
    assert nearest.dtype == np.int16


@pytest.mark.parametrize(
    "normalization",
    [
        {"type": "clip_scale", "a_min": -1000.0, "a_max": 400.0, "b_min": 0.0, "b_max": 1.0, "clip": True},
        {"type": "zscore", "nonzero": False},
        {"type": "none"},
    ],
    ids=["clip_scale", "zscore", "none"],
)
def test_fused_resample_and_normalise_equals_the_two_steps(normalization: dict) -> None:
    image = _ct(1)
    grid = model_grid(image, (1.0, 1.5, 2.0), "RAS")
    assert grid is not None
    fused = resample_normalized(image, *grid, normalization)
    two_steps = normalize_intensity(resample_array(image, *grid), normalization)
    assert fused.dtype == np.float32 and fused.flags.c_contiguous and fused.flags.writeable
    np.testing.assert_array_equal(fused, two_steps)
