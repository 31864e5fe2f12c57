"""A finding's mask carried into the other study by the registration lands on the right voxels."""

from __future__ import annotations

import numpy as np

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.confirmation import carry_mask
from MedAIExtension.tracking.results import TimepointResult
from MedAIExtension.tracking.types import NoduleMask


def _study() -> TimepointResult:
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    affine[:3, 3] = (10.0, -5.0, 3.0)
    image = Image(np.zeros((20, 30, 30), np.int16), affine, modality="CT")
    return TimepointResult(image, np.ones(image.shape, bool), [])


def _mask() -> NoduleMask:
    voxels = np.zeros((5, 6, 6), bool)
    voxels[1:4, 2:5, 1:5] = True
    return NoduleMask((slice(5, 10), slice(10, 16), slice(8, 14)), voxels)


def test_identity_and_a_one_slice_shift_carry_the_mask_exactly() -> None:
    study, mask = _study(), _mask()
    full = mask.full(study.image.shape)
    same = carry_mask(study.image, study.image, mask, np.eye(4))
    assert same is not None and np.array_equal(same.full(study.image.shape), full)
    up = np.eye(4)
    up[2, 3] = 1.5  # one slice superior
    moved = carry_mask(study.image, study.image, mask, up)
    assert moved is not None and np.array_equal(moved.full(study.image.shape), np.roll(full, 1, axis=0))


def test_a_mask_moved_out_of_the_other_study_is_not_carried() -> None:
    study = _study()
    away = np.eye(4)
    away[0, 3] = 500.0
    assert carry_mask(study.image, study.image, _mask(), away) is None
