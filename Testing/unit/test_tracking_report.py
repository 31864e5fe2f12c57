"""Key-slice pictures of the tracking report: the axial crop interpolates the CT where the plane lies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.report import axial_crop


def _image() -> Image:
    rng = np.random.default_rng(5)
    array = rng.integers(-1000, 400, size=(30, 40, 50)).astype(np.int16)
    affine = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, -5.0], [0, 0, 1.5, -20.0], [0, 0, 0, 1]])
    return Image(array, affine)


@pytest.mark.parametrize("centre", [(-10.0, 10.0, 0.0), (5.0, 4.0, 1.3), (14.0, -3.0, 22.0), (500.0, 0.0, 0.0)])
def test_crop_equals_interpolating_the_whole_volume(centre: tuple[float, float, float]) -> None:
    """Inside, at the border and outside the image: the same values as interpolating the whole CT."""
    image = _image()
    grey, mask = axial_crop(image, None, centre, size_mm=20.0, pixel_mm=0.5)
    n = grey.shape[0]
    offsets = (np.arange(n) - (n - 1) / 2.0) * 0.5
    x, y = np.meshgrid(offsets, offsets)
    points = np.stack([centre[0] - x, centre[1] - y, np.full_like(x, centre[2])], axis=-1)
    inverse = np.linalg.inv(image.ijk_to_ras)
    kji = (points @ inverse[:3, :3].T + inverse[:3, 3])[..., ::-1].reshape(-1, 3).T
    whole = map_coordinates(image.array.astype(np.float32), kji, order=1, mode="constant", cval=-1000.0)
    expected = np.clip((whole.reshape(n, n) + 1350.0) / 1500.0, 0.0, 1.0)
    np.testing.assert_allclose(grey, expected, atol=1e-6)
    assert not mask.any()
