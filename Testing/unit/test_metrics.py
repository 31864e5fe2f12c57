"""Segmentation metrics: hand-computable cases, physical spacing, empty masks."""

from __future__ import annotations

import math

import numpy as np

from MedAIExtension.io import Image, affine_from_parts
from MedAIExtension.metrics import compare_labelmaps, format_metrics_table


def _image(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Image:
    return Image(array.astype(np.uint8), affine_from_parts([0, 0, 0], spacing, np.eye(3)))


def test_dice_iou_and_volumes_of_shifted_cubes() -> None:
    a = np.zeros((20, 20, 20), np.uint8)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = 1
    b[5:15, 5:15, 7:17] = 1
    m = compare_labelmaps(_image(b), _image(a), [(1, "cube")])[0]
    assert math.isclose(m.dice, 2 * 800 / 2000)
    assert math.isclose(m.iou, 800 / 1200)
    assert math.isclose(m.ref_ml, 1.0) and math.isclose(m.pred_ml, 1.0)
    assert math.isclose(m.hd95_mm, 2.0, abs_tol=1e-6)


def test_hd95_uses_physical_spacing() -> None:
    a = np.zeros((20, 20, 20), np.uint8)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = 1
    b[5:15, 5:15, 7:17] = 1  # shifted by 2 voxels along i
    m = compare_labelmaps(_image(b, (3.0, 1.0, 1.0)), _image(a, (3.0, 1.0, 1.0)), [(1, "cube")])[0]
    assert math.isclose(m.hd95_mm, 6.0, abs_tol=1e-6)


def test_empty_cases_are_defined() -> None:
    empty = _image(np.zeros((8, 8, 8)))
    full = np.zeros((8, 8, 8))
    full[2:5, 2:5, 2:5] = 1
    both_empty = compare_labelmaps(empty, empty, [(1, "x")])[0]
    assert both_empty.dice == 1.0 and both_empty.hd95_mm == 0.0 and both_empty.surface_dice == 1.0
    one_empty = compare_labelmaps(empty, _image(full), [(1, "x")])[0]
    assert one_empty.dice == 0.0 and math.isinf(one_empty.hd95_mm)
    assert one_empty.to_dict()["hd95_mm"] is None
    assert "inf" in format_metrics_table([one_empty])


def test_identical_maps_score_perfectly_and_labels_default_to_present_values() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 3, (10, 12, 14))
    rows = compare_labelmaps(_image(array), _image(array))
    assert [r.label for r in rows] == [1, 2]
    assert all(r.dice == 1.0 and r.hd95_mm == 0.0 and r.surface_dice == 1.0 for r in rows)
