"""The fast score-to-label mapping equals per-channel linear resampling + arg-max, voxel for voxel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from MedAIExtension.io import Image, affine_from_parts
from MedAIExtension.models.resample_scores import channel_argmax, scores_to_labels, scores_to_labels_reference

DIRECTIONS = {
    "axial": np.diag([-1.0, -1.0, 1.0]),
    "reversed": np.diag([-1.0, -1.0, -1.0]),
    "oblique": Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix(),
}


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("channels", [2, 4])
def test_fast_mapping_equals_the_reference(name: str, channels: int) -> None:
    rng = np.random.default_rng(channels)
    scores = ndimage.gaussian_filter(rng.normal(size=(channels, 30, 34, 32)).astype(np.float32), (0, 2.5, 2.5, 2.5))
    model = affine_from_parts([-20.0, -25.0, -22.0], [1.5, 1.5, 1.5], np.diag([-1.0, -1.0, 1.0]))
    # a finer target grid that reaches beyond the model grid on some sides
    target = Image(
        np.zeros((50, 64, 60), np.int16), affine_from_parts([2.0, 3.0, -4.0], [0.8, 0.9, 1.0], DIRECTIONS[name])
    )
    fast = scores_to_labels(scores, model, target, slab=7)
    reference = scores_to_labels_reference(scores, model, target)
    assert np.bincount(fast.ravel(), minlength=channels).min() > 0 or name == "oblique"
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize(
    "direction",
    [
        np.diag([-1.0, -1.0, 1.0]),
        np.diag([1.0, -1.0, -1.0]),
        np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    ],
    ids=["axial", "flipped", "sagittal"],
)
def test_axis_aligned_fast_path_equals_the_reference(direction: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    scores = ndimage.gaussian_filter(rng.normal(size=(3, 30, 34, 32)).astype(np.float32), (0, 2.5, 2.5, 2.5))
    model = affine_from_parts([-20.0, -25.0, -22.0], [1.5, 1.5, 1.5], np.diag([-1.0, -1.0, 1.0]))
    from MedAIExtension.phantom import make_affine

    centre = model[:3, :3] @ (np.array([32, 34, 30]) - 1) / 2 + model[:3, 3]
    target = Image(np.zeros((50, 64, 60), np.int16), make_affine((60, 64, 50), (0.8, 0.9, 1.1), direction, centre))
    fast = scores_to_labels(scores, model, target)
    np.testing.assert_array_equal(fast, scores_to_labels_reference(scores, model, target))
    assert len(np.unique(fast)) == 3


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_channel_argmax_equals_numpy_argmax_including_ties(channels: int) -> None:
    rng = np.random.default_rng(channels)
    scores = rng.integers(0, 3, size=(channels, 7, 8, 9)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(channel_argmax(scores), np.argmax(scores, axis=0))
    assert channel_argmax(scores).dtype == np.uint8
