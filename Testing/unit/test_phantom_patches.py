"""Labelled phantom patches for the nodule-vs-vessel classifier: patch geometry, object masks, balance, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import physical_to_ijk
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import SAGITTAL, make_affine
from MedAIExtension.phantom.patches import (
    CLASS_NODULE,
    CLASS_VESSEL,
    PATCH_SIZE,
    VESSEL_THRESHOLD_HU,
    LabelledPatch,
    extract_patch,
    nodule_vessel_patches,
    patch_grid,
)

SEED = 11


@pytest.fixture(scope="module")
def patches() -> list[LabelledPatch]:
    """Ten patches (five nodule, five vessel) from one phantom."""
    return nodule_vessel_patches(SEED, 10)


def _voxel_ras(image: Image) -> np.ndarray:
    k, j, i = np.indices(image.shape, dtype=float)
    ijk = np.stack([i, j, k], axis=-1)
    return ijk @ image.ijk_to_ras[:3, :3].T + image.ijk_to_ras[:3, 3]


def test_patch_grid_is_lps_and_centred() -> None:
    center = (12.3, -40.7, 88.1)
    affine, shape = patch_grid(center)
    assert shape == PATCH_SIZE
    # i -> patient left (RAS -x), j -> posterior (RAS -y), k -> superior (RAS +z), 1 mm voxels
    np.testing.assert_allclose(affine[:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    np.testing.assert_allclose(physical_to_ijk(affine, [center])[0], [15.5, 15.5, 15.5], atol=1e-9)
    # 2.5 mm to the patient's left, 3.5 mm anterior and 1.5 mm superior of the centre
    point = np.add(center, (-2.5, 3.5, 1.5))
    np.testing.assert_allclose(physical_to_ijk(affine, [point])[0], [18.0, 12.0, 17.0], atol=1e-9)
    affine, shape = patch_grid(center, size=(8, 10, 12), spacing=(0.5, 2.0, 3.0))
    assert shape == (8, 10, 12)
    np.testing.assert_allclose(physical_to_ijk(affine, [center])[0], [5.5, 4.5, 3.5], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.5, 2.0, 3.0])


def test_extract_patch_samples_the_right_places() -> None:
    # A sagittal source grid whose voxel values are a linear function of RAS position: linear interpolation
    # reproduces that function exactly, so every patch voxel must show the value of its own RAS position.
    affine = make_affine((60, 50, 40), (0.9, 1.3, 1.1), SAGITTAL, (5.0, -3.0, 12.0))
    source = Image(np.zeros((40, 50, 60), dtype=np.float32), affine, modality="CT")
    weights = np.array([1.0, -3.0, 7.0])
    source = source.with_array((_voxel_ras(source) @ weights).astype(np.float32))
    center = (9.0, -6.5, 14.0)
    patch = extract_patch(source, center, size=(12, 14, 16))
    assert patch.shape == (12, 14, 16) and patch.array.dtype == np.float32
    np.testing.assert_allclose(patch.array, _voxel_ras(patch) @ weights, atol=2e-3)

    # Label maps use nearest neighbour and keep their voxel type: one labelled source voxel shows up where it is.
    labels = Image(np.zeros((40, 50, 60), dtype=np.uint8), affine)
    labels.array[20, 25, 30] = 7
    where = affine[:3, :3] @ [30, 25, 20] + affine[:3, 3]
    # centre 2.5 mm right, 1.5 mm anterior, 3.5 mm inferior of the voxel: it lies at patch index (8, 7, 9)
    cut = extract_patch(labels, np.add(where, (2.5, 1.5, -3.5)), size=(12, 12, 12))
    assert cut.array.dtype == np.uint8 and set(np.unique(cut.array)) == {0, 7}
    assert cut.array[9, 7, 8] == 7
    hit_ras = _voxel_ras(cut)[cut.array == 7]
    assert len(hit_ras) >= 1  # the patch voxels whose nearest source voxel is the labelled one
    np.testing.assert_array_equal(np.rint(physical_to_ijk(affine, hit_ras)), np.tile([30, 25, 20], (len(hit_ras), 1)))


def test_extract_patch_outside_the_image_is_filled() -> None:
    source = Image(np.full((20, 20, 20), 5, dtype=np.int16), make_affine((20, 20, 20), (1, 1, 1)), modality="CT")
    patch = extract_patch(source, (500.0, 0.0, 0.0), size=(8, 8, 8), fill=-1000.0)
    assert np.all(patch.array == -1000.0)
    half = extract_patch(source, (10.0, 0.0, 0.0), size=(8, 8, 8), fill=-1000.0)  # straddles the image's right edge
    assert np.any(half.array == -1000.0) and np.any(half.array == 5.0)


def test_labels_are_balanced_and_patches_on_the_grid(patches: list[LabelledPatch]) -> None:
    assert [p.label for p in patches].count(CLASS_NODULE) == 5
    assert [p.label for p in patches].count(CLASS_VESSEL) == 5
    for patch in patches:
        expected, _ = patch_grid(patch.center_ras)
        assert patch.ct.shape == PATCH_SIZE and patch.object_mask.shape == PATCH_SIZE
        np.testing.assert_allclose(patch.ct.ijk_to_ras, expected, atol=1e-9)
        assert patch.ct.modality == "CT" and patch.ct.array.min() >= -1100.0
        kinds = {"solid", "part-solid", "ground-glass"} if patch.label == CLASS_NODULE else {"vessel"}
        assert patch.kind in kinds


def test_object_masks_hold_the_object_inside_the_patch(patches: list[LabelledPatch]) -> None:
    for patch in patches:
        mask = patch.object_mask
        assert mask.dtype == bool and mask.any()
        border = np.ones(mask.shape, dtype=bool)
        border[1:-1, 1:-1, 1:-1] = False
        assert not (mask & border).any(), "the object must lie inside the patch"
        centroid = _voxel_ras(patch.ct)[mask].mean(axis=0)
        distance = float(np.linalg.norm(centroid - np.array(patch.center_ras)))
        hu = patch.ct.array
        if patch.label == CLASS_NODULE:
            assert patch.diameter_mm is not None and 4.0 <= patch.diameter_mm <= 20.0
            volume = np.pi / 6.0 * patch.diameter_mm**3
            assert abs(mask.sum() - volume) <= 0.35 * volume + 15  # nearest-neighbour copy of the nodule
            assert distance <= 4.0 + 1.0  # centred on the nodule with an offset of at most 4 mm
            assert hu[mask].mean() > -750.0  # denser than aerated lung (ground glass included)
        else:
            assert mask.sum() >= 12 and distance <= 8.0
            assert np.all(hu[mask] > VESSEL_THRESHOLD_HU)


def test_patches_are_deterministic(patches: list[LabelledPatch]) -> None:
    again = nodule_vessel_patches(SEED, 2)
    first = next(p for p in patches if p.label == CLASS_NODULE)
    assert [p.label for p in again] == [CLASS_NODULE, CLASS_VESSEL]
    assert again[0].center_ras == first.center_ras and again[0].phantom_seed == first.phantom_seed
    np.testing.assert_array_equal(again[0].ct.array, first.ct.array)
    np.testing.assert_array_equal(again[0].object_mask, first.object_mask)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InputError, match="seed"):
        nodule_vessel_patches(-1, 4)
    with pytest.raises(InputError, match="count"):
        nodule_vessel_patches(1, 0)
    with pytest.raises(InputError, match="center_ras"):
        patch_grid((0.0, float("nan"), 0.0))
    with pytest.raises(InputError, match="label"):
        image = Image(np.zeros(PATCH_SIZE, dtype=np.float32), np.eye(4), modality="CT")
        LabelledPatch(image, 3, np.zeros(PATCH_SIZE, dtype=bool), (0.0, 0.0, 0.0))
