"""Tests of the synthetic chest CT phantom: determinism, HU values, exact truth and orientation invariance."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import (
    AXIAL,
    CORONAL,
    LABEL_LUNG,
    LABEL_NODULE,
    SAGITTAL,
    AnatomySpec,
    NoduleKind,
    NoduleSpec,
    PhantomSpec,
    generate_chest_phantom,
    make_affine,
    random_phantom_spec,
)
from MedAIExtension.progress import CancelToken, Progress

# A small chest-wide grid (3 mm) with one nodule of each kind, placed absolutely so tests know where they are.
NODULES = (
    NoduleSpec(14.0, "solid", center_ras=(85.0, 10.0, 30.0)),
    NoduleSpec(16.0, NoduleKind.PART_SOLID, solid_fraction=0.5, center_ras=(-95.0, -30.0, -20.0)),
    NoduleSpec(12.0, "ground-glass", lung="right", position=(0.2, -0.4, -0.3)),
)
SMALL = PhantomSpec(size_ijk=(112, 80, 64), spacing=(3.0, 3.0, 4.0), nodules=NODULES, seed=3)


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    axis_arr = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = math.radians(degrees)
    k = np.array([[0, -axis_arr[2], axis_arr[1]], [axis_arr[2], 0, -axis_arr[0]], [-axis_arr[1], axis_arr[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _mask_centroid_ras(image: Image, mask: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    ijk = np.array([i.mean(), j.mean(), k.mean()])
    return image.ijk_to_ras[:3, :3] @ ijk + image.ijk_to_ras[:3, 3]


@pytest.fixture(scope="module")
def small():
    return generate_chest_phantom(SMALL)


@pytest.fixture(scope="module")
def quiet():
    """The small phantom without noise: voxel values are the noiseless partial-volume model."""
    return generate_chest_phantom(replace(SMALL, noise_hu=0.0))


# ---- images and determinism ---------------------------------------------------------------------------------
def test_images_share_one_grid(small):
    assert small.ct.array.dtype == np.int16
    assert small.ct.modality == "CT"
    assert small.ct.shape == (64, 80, 112)
    assert small.labels.array.dtype == np.uint8 and small.nodule_ids.array.dtype == np.uint8
    assert small.labels.same_grid(small.ct) and small.nodule_ids.same_grid(small.ct)
    np.testing.assert_allclose(small.ct.ijk_to_ras, SMALL.ijk_to_ras)
    assert set(np.unique(small.labels.array)) == {0, LABEL_LUNG, LABEL_NODULE}


def test_same_spec_gives_identical_phantom(small):
    again = generate_chest_phantom(SMALL)
    np.testing.assert_array_equal(again.ct.array, small.ct.array)
    np.testing.assert_array_equal(again.labels.array, small.labels.array)
    np.testing.assert_array_equal(again.nodule_ids.array, small.nodule_ids.array)
    assert again.truth_json() == small.truth_json()


def test_another_seed_changes_noise_and_vessels_but_not_truth(small):
    other = generate_chest_phantom(replace(SMALL, seed=4))
    assert not np.array_equal(other.ct.array, small.ct.array)
    assert [n["mask_voxels"] for n in other.truth["nodules"]] == [n["mask_voxels"] for n in small.truth["nodules"]]
    np.testing.assert_array_equal(other.labels.array, small.labels.array)


def test_progress_is_reported_and_cancellation_honoured():
    seen: list[float] = []
    tiny = PhantomSpec(size_ijk=(40, 40, 20), spacing=(8.0, 8.0, 8.0), nodules=())
    generate_chest_phantom(tiny, lambda fraction, _message: seen.append(fraction))
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        generate_chest_phantom(PhantomSpec(size_ijk=(40, 40, 20), spacing=(8.0, 8.0, 8.0)), Progress(None, token))


# ---- HU values ------------------------------------------------------------------------------------------------
def test_hu_of_air_lung_body_and_nodules(small, quiet):
    ct, labels = small.ct.array, small.labels.array
    corner = ct[:, :6, :6]
    assert -1030 <= np.median(corner) <= -970
    lung = ct[(labels == LABEL_LUNG)]
    assert -900 <= np.median(lung) <= -780
    # Noise of the requested size in air (no structure there).
    assert 10.0 <= float(np.std(quiet.ct.array[:, :6, :6].astype(float) - ct[:, :6, :6])) <= 30.0
    # Soft tissue, fat and bone exist at their textbook attenuation in the noiseless image.
    values = quiet.ct.array
    for low, high in ((-110, -90), (35, 55), (250, 1000)):  # bone is partial-volumed at 3 mm
        assert np.count_nonzero((values >= low) & (values <= high)) > 500, (low, high)
    solid = np.median(values[small.nodule_mask(1) & (_distance_map(small, 1) <= 3.0)])
    part_solid_core = np.median(values[small.nodule_mask(2) & (_distance_map(small, 2) <= 3.0)])
    part_solid_shell = np.median(values[small.nodule_mask(2) & (_distance_map(small, 2) >= 6.0)])
    ground_glass = np.median(values[small.nodule_mask(3) & (_distance_map(small, 3) <= 3.0)])
    assert 0 <= solid <= 60
    assert part_solid_core >= part_solid_shell + 300  # the 8 mm core is partial-volumed with its shell at 3 mm
    assert -700 <= part_solid_shell <= -500
    assert -700 <= ground_glass <= -450


def _distance_map(phantom, nodule_id: int) -> np.ndarray:
    """Distance (mm) of every voxel centre from the nodule's true centre."""
    ct = phantom.ct
    k, j, i = np.indices(ct.shape)
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    ras = ijk @ ct.ijk_to_ras[:3, :3].T + ct.ijk_to_ras[:3, 3]
    return np.linalg.norm(ras - phantom.truth["nodules"][nodule_id - 1]["center_ras"], axis=-1)


# ---- truth ----------------------------------------------------------------------------------------------------
def test_truth_masks_are_the_voxel_centres_inside_each_sphere(small):
    for nodule in small.truth["nodules"]:
        mask = small.nodule_mask(nodule["id"])
        inside = _distance_map(small, nodule["id"]) <= nodule["diameter_mm"] / 2.0
        np.testing.assert_array_equal(mask, inside)
        assert nodule["mask_voxels"] == int(mask.sum())
        assert nodule["mask_volume_mm3"] == pytest.approx(mask.sum() * small.ct.voxel_volume_mm3, rel=1e-6)
        np.testing.assert_array_equal(small.labels.array[mask], LABEL_NODULE)


def test_truth_volumes_match_voxel_counts_within_partial_volume():
    nodules = (
        NoduleSpec(8.0, center_ras=(80.0, 0.0, 0.0)),
        NoduleSpec(12.0, "part-solid", center_ras=(95.0, 15.0, 0.0)),
        NoduleSpec(5.0, "ground-glass", center_ras=(70.0, -15.0, 5.0)),
    )
    spec = PhantomSpec(size_ijk=(96, 96, 48), spacing=(0.7, 0.7, 1.25), center_ras=(85.0, 0.0, 0.0), nodules=nodules)
    phantom = generate_chest_phantom(spec)
    voxel = phantom.ct.voxel_volume_mm3
    for nodule, nodule_spec in zip(phantom.truth["nodules"], spec.nodules, strict=True):
        assert nodule["volume_mm3"] == pytest.approx(math.pi / 6.0 * nodule["diameter_mm"] ** 3, rel=1e-4)
        surface = math.pi * nodule["diameter_mm"] ** 2
        tolerance = 0.25 * surface * 1.25 + voxel  # a fraction of a voxel layer over the surface
        assert abs(nodule["mask_volume_mm3"] - nodule["volume_mm3"]) <= tolerance
        assert nodule["fully_in_field_of_view"]
        assert nodule["solid_diameter_mm"] == pytest.approx(nodule_spec.solid_diameter_mm)
    part_solid = phantom.truth["nodules"][1]
    assert part_solid["solid_volume_mm3"] == pytest.approx(math.pi / 6.0 * 6.0**3, rel=1e-4)
    assert abs(part_solid["solid_mask_volume_mm3"] - part_solid["solid_volume_mm3"]) <= 0.25 * math.pi * 36 * 1.25


def test_half_maximum_threshold_recovers_the_analytic_volume():
    """Partial volume is consistent: thresholding halfway between lung and nodule gives the true volume."""
    spec = PhantomSpec(size_ijk=(48, 48, 32), spacing=(0.7, 0.7, 1.25), center_ras=(85.0, 0.0, 0.0),
                       nodules=(NoduleSpec(12.0, center_ras=(85.0, 0.0, 0.0)),), noise_hu=0.0)  # fmt: skip
    phantom = generate_chest_phantom(spec)
    near = _distance_map(phantom, 1) <= 9.0
    volume = np.count_nonzero(near & (phantom.ct.array > -415)) * phantom.ct.voxel_volume_mm3
    assert volume == pytest.approx(phantom.truth["nodules"][0]["volume_mm3"], rel=0.06)


def test_truth_json_is_complete(small):
    truth = json.loads(small.truth_json())
    assert truth["seed"] == SMALL.seed and truth["size_ijk"] == [112, 80, 64]
    assert 2500 <= truth["lung_volume_ml"] <= 6000
    assert set(truth["lung_volume_ml_by_side"]) == {"right", "left"}
    assert [n["kind"] for n in truth["nodules"]] == ["solid", "part-solid", "ground-glass"]
    assert [n["lung"] for n in truth["nodules"]] == ["right", "left", "right"]
    for key in ("center_ras", "diameter_mm", "volume_mm3", "mask_volume_mm3", "solid_diameter_mm", "mask_centroid_ras"):
        assert all(key in n for n in truth["nodules"]), key
    lung_voxels = np.count_nonzero(small.labels.array == LABEL_LUNG)
    assert truth["lung_volume_ml"] * 1000.0 >= lung_voxels * small.ct.voxel_volume_mm3


def test_relative_and_juxta_pleural_placement():
    nodules = (
        NoduleSpec(8.0, lung="left", position=(0.3, 0.0, 0.1)),
        NoduleSpec(10.0, lung="right", position=(0.5, -0.1, 0.0), juxta_pleural=True),
    )
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=(64, 64, 40), spacing=(5.0, 5.0, 6.0), nodules=nodules))
    left, juxta = phantom.truth["nodules"]
    assert left["center_ras"][0] < -40.0 and left["lung"] == "left"
    assert juxta["center_ras"][0] > 100.0 and juxta["juxta_pleural"]


# ---- orientation --------------------------------------------------------------------------------------------
def _nearest_values(source: Image, target: Image) -> np.ndarray:
    """Values of ``source`` at the voxel centres of ``target`` (which must fall on ``source`` voxel centres)."""
    k, j, i = np.indices(target.shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    src = np.linalg.inv(source.ijk_to_ras) @ target.ijk_to_ras @ ijk
    rounded = np.rint(src[:3]).astype(int)
    np.testing.assert_allclose(src[:3], rounded, atol=1e-6)
    return source.array[rounded[2], rounded[1], rounded[0]].reshape(target.shape)


@pytest.mark.parametrize(
    "direction",
    [
        pytest.param(AXIAL @ np.diag([1.0, 1.0, -1.0]), id="axial-reversed-slices"),
        pytest.param(SAGITTAL, id="sagittal"),
        pytest.param(CORONAL, id="coronal"),
        pytest.param(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), id="permuted"),
    ],
)
def test_every_acquisition_direction_samples_the_same_anatomy(direction):
    """Grids whose voxel centres coincide give the same voxels, whatever the axis order and direction."""
    size_ras = np.array([60, 44, 40])  # voxels along R, A, S
    spacing = 4.0
    nodules = (NoduleSpec(16.0, "part-solid", center_ras=(80.0, 0.0, 8.0)),)
    kwargs = {"spacing": (spacing,) * 3, "nodules": nodules, "noise_hu": 0.0, "center_ras": (2.0, 2.0, 2.0)}
    reference = generate_chest_phantom(PhantomSpec(size_ijk=tuple(size_ras), direction_ras=AXIAL, **kwargs))
    size_ijk = np.abs(np.asarray(direction).T) @ size_ras
    other = generate_chest_phantom(
        PhantomSpec(size_ijk=tuple(int(v) for v in size_ijk), direction_ras=direction, **kwargs)
    )
    labels = _nearest_values(reference.labels, other.labels)
    assert np.count_nonzero(labels != other.labels.array) <= 1e-4 * labels.size  # float32 ties at most
    ct = _nearest_values(reference.ct, other.ct).astype(int)
    differing = np.abs(ct - other.ct.array) > 1
    assert np.count_nonzero(differing) <= 1e-4 * ct.size
    np.testing.assert_allclose(
        reference.truth["nodules"][0]["mask_centroid_ras"], other.truth["nodules"][0]["mask_centroid_ras"], atol=1e-3
    )
    assert other.truth["lung_volume_ml"] == pytest.approx(reference.truth["lung_volume_ml"], rel=1e-3)


@pytest.mark.parametrize("axis, degrees", [((1.0, 0.0, 0.0), 25.0), ((0.3, 1.0, 0.5), 40.0), ((0.0, 0.0, 1.0), 180.0)])
def test_oblique_grids_put_nodules_at_the_same_physical_place(axis, degrees):
    center = (-95.0, -30.0, -20.0)
    nodules = (NoduleSpec(14.0, "solid", center_ras=center),)
    direction = _rotation(axis, degrees) @ AXIAL
    spec = PhantomSpec(size_ijk=(40, 40, 40), spacing=(1.0, 1.2, 1.5), direction_ras=direction,
                       center_ras=(-90.0, -25.0, -15.0), nodules=nodules)  # fmt: skip
    phantom = generate_chest_phantom(spec)
    centroid = _mask_centroid_ras(phantom.ct, phantom.nodule_mask(1))
    np.testing.assert_allclose(centroid, center, atol=0.35)
    np.testing.assert_allclose(phantom.truth["nodules"][0]["mask_centroid_ras"], centroid, atol=1e-3)
    truth = phantom.truth["nodules"][0]
    assert truth["mask_volume_mm3"] == pytest.approx(truth["volume_mm3"], rel=0.08)
    # The nodule is bright in lung: its mask is far denser than the lung around it.
    ct, labels = phantom.ct.array, phantom.labels.array
    assert np.median(ct[phantom.nodule_mask(1)]) > np.median(ct[labels == LABEL_LUNG]) + 500


def test_default_axial_looks_radiological():
    """Row 0 is anterior, column 0 the patient's right: the heart shows on the image's right half."""
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=(96, 96, 8), spacing=(3.6, 3.6, 5.0), nodules=(),
                                                 center_ras=(0.0, 0.0, -45.0), noise_hu=0.0))  # fmt: skip
    ct = phantom.ct.array[4].astype(float)
    body = ct > -500
    rows = np.nonzero(body.any(axis=1))[0]
    assert phantom.ct.direction_ras[:, 0] == pytest.approx([-1, 0, 0])
    assert phantom.ct.direction_ras[:, 1] == pytest.approx([0, -1, 0])
    # The spine (bone) is in the posterior (lower) half, the heart (soft tissue between the lungs) on the image right.
    bone_rows = np.nonzero((ct[:, 44:52] > 150).any(axis=1))[0]
    assert np.median(bone_rows) > (rows[0] + rows[-1]) / 2
    middle = ct[40:56]
    soft_left = np.count_nonzero((middle[:, :48] > -200) & (middle[:, :48] < 100) & body[40:56, :48])
    soft_right = np.count_nonzero((middle[:, 48:] > -200) & (middle[:, 48:] < 100) & body[40:56, 48:])
    assert soft_right > soft_left


# ---- geometry helper ----------------------------------------------------------------------------------------
def test_make_affine_centres_the_volume():
    affine = make_affine((10, 20, 30), (1.0, 2.0, 3.0), SAGITTAL, center_ras=(5.0, -4.0, 3.0))
    middle = affine @ np.array([4.5, 9.5, 14.5, 1.0])
    np.testing.assert_allclose(middle[:3], [5.0, -4.0, 3.0])
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(make_affine((3, 3, 3), (1, 1, 1))[:3, :3], AXIAL)


# ---- validation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"diameter_mm": -3.0, "center_ras": (0, 0, 0)},
        {"diameter_mm": float("nan"), "center_ras": (0, 0, 0)},
        {"diameter_mm": 8.0, "kind": "calcified", "center_ras": (0, 0, 0)},
        {"diameter_mm": 8.0, "kind": "part-solid", "solid_fraction": 1.2, "center_ras": (0, 0, 0)},
        {"diameter_mm": 8.0, "kind": "solid", "solid_fraction": 0.5, "center_ras": (0, 0, 0)},
        {"diameter_mm": 8.0, "center_ras": (0, 0, 0), "lung": "right", "position": (0, 0, 0)},
        {"diameter_mm": 8.0},
        {"diameter_mm": 8.0, "lung": "middle", "position": (0, 0, 0)},
        {"diameter_mm": 8.0, "lung": "left", "position": (0.8, 0.8, 0.0)},
        {"diameter_mm": 8.0, "center_ras": (0, 0)},
    ],
)
def test_invalid_nodule_specs_are_rejected(kwargs):
    with pytest.raises(InputError):
        NoduleSpec(**kwargs)


def test_enum_and_string_kinds_are_equivalent():
    assert NoduleSpec(6.0, "ground-glass", center_ras=(1, 2, 3)) == NoduleSpec(
        6.0, NoduleKind.GROUND_GLASS, center_ras=(1, 2, 3)
    )
    assert NoduleSpec(6.0, "part-solid", center_ras=(1, 2, 3)).solid_fraction == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size_ijk": (1, 64, 64)},
        {"size_ijk": (64, 64)},
        {"spacing": (0.7, 0.0, 1.0)},
        {"direction_ras": [[1, 0, 0], [1, 0, 0], [0, 0, 1]]},
        {"direction_ras": [[1, 0], [0, 1]]},
        {"noise_hu": -1.0},
        {"seed": -1},
        {"seed": 1.5},
        {"nodules": ("not a nodule",)},
    ],
)
def test_invalid_phantom_specs_are_rejected(kwargs):
    with pytest.raises(InputError):
        PhantomSpec(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"body_semi_axes_mm": (50.0, 50.0)}, {"fat_mm": -1.0}, {"lung_height_mm": 20.0}, {"heart_scale": 3.0}]
)
def test_invalid_anatomy_is_rejected(kwargs):
    with pytest.raises(InputError):
        AnatomySpec(**kwargs)


def test_nodules_outside_the_lungs_or_overlapping_are_rejected():
    grid = {"size_ijk": (32, 32, 16), "spacing": (10.0, 10.0, 20.0)}
    with pytest.raises(InputError, match="outside both lungs"):
        generate_chest_phantom(PhantomSpec(**grid, nodules=(NoduleSpec(6.0, center_ras=(0.0, 0.0, 0.0)),)))
    overlapping = (NoduleSpec(10.0, center_ras=(80.0, 0.0, 0.0)), NoduleSpec(10.0, center_ras=(86.0, 0.0, 0.0)))
    with pytest.raises(InputError, match="overlap"):
        generate_chest_phantom(PhantomSpec(**grid, nodules=overlapping))


# ---- random specs for training ------------------------------------------------------------------------------
def test_random_specs_are_reproducible_and_varied():
    assert random_phantom_spec(7) == random_phantom_spec(7)
    specs = [random_phantom_spec(seed) for seed in range(30)]
    counts = {len(s.nodules) for s in specs}
    assert counts <= {1, 2, 3, 4} and len(counts) >= 3
    nodules = [n for s in specs for n in s.nodules]
    assert {n.kind for n in nodules} == set(NoduleKind)
    assert any(n.juxta_pleural for n in nodules) and not all(n.juxta_pleural for n in nodules)
    diameters = [n.diameter_mm for n in nodules]
    assert min(diameters) >= 4.0 and max(diameters) <= 20.0 and max(diameters) - min(diameters) > 8.0
    assert len({s.anatomy for s in specs}) == len(specs)
    assert len({s.noise_hu for s in specs}) == len(specs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_phantoms_are_fast_and_keep_nodules_in_view(seed):
    spec = random_phantom_spec(seed)
    start = time.perf_counter()
    phantom = generate_chest_phantom(spec)
    assert time.perf_counter() - start < 4.0  # about 1 s on one core; generous for slow CI machines
    assert phantom.ct.shape == (64, 128, 128)
    assert np.count_nonzero(phantom.labels.array == LABEL_LUNG) > 1000
    for nodule in phantom.truth["nodules"]:
        assert nodule["fully_in_field_of_view"] and nodule["mask_voxels"] > 0
        assert nodule["mask_volume_mm3"] == pytest.approx(nodule["volume_mm3"], rel=0.5, abs=40.0)


def test_random_spec_on_a_sagittal_grid():
    spec = random_phantom_spec(5, size_ijk=(64, 64, 48), spacing=(4.0, 4.0, 5.0), direction_ras=SAGITTAL)
    np.testing.assert_allclose(np.array(spec.direction_ras), SAGITTAL)
    phantom = generate_chest_phantom(spec)
    assert all(n["fully_in_field_of_view"] for n in phantom.truth["nodules"])
