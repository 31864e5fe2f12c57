"""``label_counts`` (voxel count of every value, as ``np.unique`` gives it, on every dtype) and ``label_boxes``."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel, bincount_slabs, label_boxes, label_counts, label_statistics


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


@pytest.mark.parametrize("values", [(1, 2), (1, 2, 3, 4, 5, 6, 9)], ids=["few-projections", "many-find-objects"])
def test_label_boxes_equal_scipy_find_objects(values: tuple[int, ...]) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(5)
    array = np.zeros((30, 40, 50), dtype=np.uint8)
    for value in values[:-1]:  # the last value is absent
        k, j, i = rng.integers(0, 20, 3)
        dk, dj, di = rng.integers(1, 10, 3)
        array[k : k + dk, j : j + dj, i : i + di] = value
        array[rng.integers(0, 30), rng.integers(0, 40), rng.integers(0, 50)] = value  # a stray voxel
    expected = ndimage.find_objects(array, max_label=max(values))
    boxes = label_boxes(array, values)
    assert set(boxes) == set(values)
    for value in values:
        assert boxes[value] == expected[value - 1], value
    assert boxes[values[-1]] is None


def test_label_boxes_of_masks_and_empty_requests() -> None:
    mask = np.zeros((6, 7, 8), dtype=bool)
    mask[2:4, 1, 3:8] = True
    assert label_boxes(mask, [1]) == {1: (slice(2, 4), slice(1, 2), slice(3, 8))}
    assert label_boxes(mask, [0]) == {}
    assert label_boxes(np.zeros((3, 3, 3), np.uint8), [1]) == {1: None}


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 1_500_000), (40, 300, 400)])
@pytest.mark.parametrize("minlength", [0, 5, 70000])
def test_bincount_slabs_equals_numpy_bincount(shape: tuple[int, ...], minlength: int) -> None:
    array = np.random.default_rng(1).integers(0, 9, size=shape).astype(np.int32)
    np.testing.assert_array_equal(bincount_slabs(array, minlength), np.bincount(array.ravel(), minlength=minlength))
