"""A kept lesion's outline by hysteresis on the lesion score (MedAIExtension.models.lesion_extent)."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.io import Image, affine_from_parts
from MedAIExtension.models.lesion_extent import MAX_GROWTH_MM, grow_lesions
from MedAIExtension.training.train_lesion_extent import choose_margin

LUNG, LESION = 1, 2


def _scores(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, Image]:
    """Scores (background, lung, lesion) on a grid: a 12 mm lesion whose inner 7 mm wins the arg-max and whose rim
    scores lesion 1.5 logits below lung; a second lenient blob 20 mm away that no kept lesion touches; and a long
    lenient tube (a vessel) leaving the lesion."""
    affine = affine_from_parts([0.0, 0.0, 0.0], spacing, np.eye(3))
    k, j, i = np.indices(shape, dtype=float)
    z, y, x = k * spacing[2], j * spacing[1], i * spacing[0]
    r = np.sqrt((x - 20) ** 2 + (y - 24) ** 2 + (z - 16) ** 2)
    other = np.sqrt((x - 44) ** 2 + (y - 24) ** 2 + (z - 16) ** 2) <= 4.0
    tube = (np.abs(y - 24) <= 1.0) & (np.abs(z - 16) <= 1.0) & (x <= 20)
    scores = np.zeros((3, *shape), dtype=np.float32)
    scores[1] = 3.0  # lung everywhere
    scores[2] = np.where(r <= 3.5, 5.0, np.where(r <= 6.0, 1.5, -4.0))
    scores[2][other | tube] = np.maximum(scores[2][other | tube], 1.5)
    return scores, r, Image(np.zeros(shape, dtype=np.float32), affine, modality="CT")


def test_a_kept_lesion_takes_in_its_rim_but_nothing_else() -> None:
    spacing = (1.0, 1.0, 1.0)
    scores, r, region = _scores((32, 48, 64), spacing)
    labelmap = np.where(np.argmax(scores, axis=0) == 2, LESION, LUNG).astype(np.uint8)
    labelmap[np.sqrt(((np.indices(labelmap.shape) - np.array([16, 24, 44])[:, None, None, None]) ** 2).sum(0)) <= 4] = (
        LUNG  # the second blob was rejected by the filter: not a kept lesion
    )
    before = labelmap.copy()
    grow_lesions(labelmap, scores, region, channel=2, value=LESION, logit_margin=2.0)
    grown = (labelmap == LESION) & (before != LESION)
    assert (labelmap[r <= 6.0] == LESION).all(), "the whole 12 mm lesion is labelled"
    assert grown.any()
    # the vessel leaving the lesion is taken in only up to MAX_GROWTH_MM beyond the kept (arg-max) lesion
    _, _, i = np.nonzero(grown & (r > 6.0))
    assert i.min() >= 20 - 3.5 - MAX_GROWTH_MM - 1
    assert (labelmap[16, 24, :5] == LUNG).all(), "the vessel's far end stays lung"
    assert not (labelmap[:, :, 40:] == LESION).any(), "a lenient blob no kept lesion touches stays lung"


def test_no_margin_and_no_lesion_change_nothing() -> None:
    scores, _, region = _scores((32, 48, 64), (1.0, 1.0, 1.0))
    labelmap = np.where(np.argmax(scores, axis=0) == 2, LESION, LUNG).astype(np.uint8)
    before = labelmap.copy()
    grow_lesions(labelmap, scores, region, 2, LESION, 0.0)
    assert np.array_equal(labelmap, before)
    empty = np.full_like(labelmap, LUNG)
    grow_lesions(empty, scores, region, 2, LESION, 3.0)
    assert (empty == LUNG).all()


def test_scores_on_a_coarser_model_grid() -> None:
    """Scores on a 2 mm model grid, the label map on a 1 mm input grid: growth interpolates the scores."""
    coarse = (1.0 * 2, 1.0 * 2, 1.0 * 2)
    scores, _, _ = _scores((32, 48, 64), (1.0, 1.0, 1.0))
    model_affine = affine_from_parts([0.0, 0.0, 0.0], coarse, np.eye(3))
    fine_affine = affine_from_parts([0.0, 0.0, 0.0], (1.0, 1.0, 1.0), np.eye(3))
    region = Image(np.zeros((64, 96, 128), dtype=np.float32), fine_affine, modality="CT")
    k, j, i = np.indices(region.shape, dtype=float)
    r_fine = np.sqrt((i - 40) ** 2 + (j - 48) ** 2 + (k - 32) ** 2)  # the lesion at (20, 24, 16) model voxels
    labelmap = np.where(r_fine <= 6.0, LESION, LUNG).astype(np.uint8)
    grow_lesions(labelmap, scores, region, 2, LESION, 2.0, model_affine)
    assert (labelmap[r_fine <= 5.0 + MAX_GROWTH_MM] == LESION).all(), "the rim is taken in up to MAX_GROWTH_MM"
    assert not (labelmap[r_fine > 6.0 + MAX_GROWTH_MM + 1.0] == LESION).any()


def test_the_margin_with_the_best_validation_dice_is_chosen() -> None:
    assert choose_margin({0.0: [0.6, 0.7], 2.0: [0.8, 0.8], 4.0: [0.8, 0.8]}) == 2.0  # a tie goes to the smaller
    assert choose_margin({0.0: [0.9], 3.0: [0.5]}) == 0.0
    with pytest.raises(InputError, match="validation"):
        choose_margin({0.0: [], 1.0: []})
