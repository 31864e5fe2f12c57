"""``label_counts``: the voxel count of every value in a label array, as ``np.unique`` gives it, on every dtype."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel, label_counts, label_statistics


def _unique_counts(array: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(array, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64])
def test_counts_equal_numpy_unique(dtype: type) -> None:
    rng = np.random.default_rng(3)
    array = rng.choice(np.array([0, 1, 2, 7, 300 if dtype != np.uint8 else 200]), size=(37, 21, 19)).astype(dtype)
    assert label_counts(array) == _unique_counts(array)


def test_negative_and_large_values_are_counted_too() -> None:
    array = np.array([[-5, 0, 0], [70000, 1, 1]], dtype=np.int64)
    assert label_counts(array) == {-5: 1, 0: 2, 1: 2, 70000: 1}


def test_boolean_and_one_dimensional_arrays() -> None:
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask[1:3, 2:4, :] = True
    assert label_counts(mask) == {0: 96, 1: 24}
    assert label_counts(np.array([3, 3, 0], dtype=np.uint8)) == {0: 1, 3: 2}


def test_statistics_count_absent_labels_as_zero() -> None:
    array = np.zeros((5, 6, 7), dtype=np.uint8)
    array[1:3, 1:3, 1:3] = 2
    image = Image(array, np.diag([0.5, 0.5, 2.0, 1.0]))
    labels = [SegmentLabel(1, "Lung", (0.5, 0.7, 0.8)), SegmentLabel(2, "Nodule", (1.0, 0.3, 0.2))]
    rows = label_statistics(image, labels)
    assert [(r["label"], r["voxel_count"]) for r in rows] == [(1, 0), (2, 8)]
    assert rows[1]["volume_ml"] == pytest.approx(8 * 0.5 / 1000.0)
