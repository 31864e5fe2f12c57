"""The built-in lesion-insertion generator: volume, HU, partial volume, noise, locality, provenance, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom, make_affine
from MedAIExtension.phantom.render import HU
from MedAIExtension.review.lesion_insertion import GENERATOR, insert_nodule, random_insertions

BACKGROUND = -850.0


def _rotation(axis, degrees):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


GRIDS = {
    "isotropic": ((40, 40, 40), (1.0, 1.0, 1.0), None),
    "anisotropic": ((56, 56, 20), (0.7, 0.7, 2.5), None),
    "oblique": ((44, 40, 32), (0.8, 0.9, 1.5), _rotation((1.0, 2.0, 0.5), 35.0)),
}


def _flat(name, dtype=np.float32):
    size, spacing, direction = GRIDS[name]
    affine = make_affine(size, spacing, direction, center_ras=(5.0, -3.0, 2.0))
    return Image(np.full(size[::-1], BACKGROUND, dtype=dtype), affine, modality="CT")


def _distance_mm(image, center):
    k, j, i = np.indices(image.shape)
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    ras = ijk @ image.ijk_to_ras[:3, :3].T + image.ijk_to_ras[:3, 3]
    return np.linalg.norm(ras - np.asarray(center), axis=-1)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_volume_matches_the_nominal_sphere_on_any_grid(name):
    ct = _flat(name)
    center = (6.0, -2.5, 3.0)
    lesion = insert_nodule(ct, center, 14.0, "solid", seed=4)
    nominal = 4.0 / 3.0 * math.pi * 7.0**3
    mask_volume = lesion.mask.array.sum() * ct.voxel_volume_mm3
    assert mask_volume == pytest.approx(nominal, rel=0.04)
    assert lesion.provenance["mask_volume_mm3"] == pytest.approx(mask_volume, abs=1e-3)
    # Partial-volume fractions add up to the volume too (the ramp smooths the surface: a few % more).
    fraction = (lesion.image.array - BACKGROUND) / (HU["solid_nodule"] - BACKGROUND)
    assert fraction.sum() * ct.voxel_volume_mm3 == pytest.approx(nominal, rel=0.04)
    # The mask sits where it was asked, in RAS mm, whatever the grid orientation.
    k, j, i = np.nonzero(lesion.mask.array)
    centroid = ct.ijk_to_ras[:3, :3] @ np.array([i.mean(), j.mean(), k.mean()]) + ct.ijk_to_ras[:3, 3]
    assert np.linalg.norm(centroid - center) < 0.5 * max(ct.spacing)
    # Lobulated, not a ball: the mask radius varies with direction, within a few tens of percent.
    distance = _distance_mm(ct, center)
    rim = distance[lesion.mask.array.astype(bool)].max()
    assert 7.0 < rim < 7.0 * 1.3 + max(ct.spacing)


def test_partial_volume_edge_and_hard_blend():
    ct = _flat("isotropic")
    soft = insert_nodule(ct, (5.0, -3.0, 2.0), 12.0, "solid", seed=1).image.array
    values = soft[(soft > BACKGROUND) & (soft < HU["solid_nodule"])]
    assert values.size > 100  # a rim of intermediate values
    assert np.ptp(values) > 0.8 * (HU["solid_nodule"] - BACKGROUND)  # spread over the whole ramp
    hard = insert_nodule(ct, (5.0, -3.0, 2.0), 12.0, "solid", seed=1, blend="hard").image.array
    assert set(np.unique(hard)) == {BACKGROUND, HU["solid_nodule"]}


@pytest.fixture(scope="module")
def lung_ct():
    """A fine-grid piece of a phantom's right lung (0.8 x 0.8 x 1 mm, noise 20 HU, no nodules)."""
    spec = PhantomSpec(size_ijk=(48, 48, 32), spacing=(0.8, 0.8, 1.0), center_ras=(-90.0, 0.0, 0.0), nodules=())
    return generate_chest_phantom(spec).ct


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("solid", HU["solid_nodule"]), ("ground-glass", HU["ground_glass"]), ("part-solid", HU["solid_core"])],
)
def test_hu_inside_and_noise_match_the_type_and_the_image(lung_ct, kind, expected):
    center = (-90.0, 0.0, 0.0)
    lesion = insert_nodule(lung_ct, center, 18.0, kind, seed=5)
    distance = _distance_mm(lung_ct, center)
    core = distance < (2.5 if kind == "part-solid" else 5.5)  # well inside (solid core: 4.5 mm radius)
    inside = lesion.image.array[core].astype(float)
    assert np.median(inside) == pytest.approx(expected, abs=6.0)
    if kind == "part-solid":
        shell = (distance > 6.0) & (distance < 7.0)
        assert np.median(lesion.image.array[shell]) == pytest.approx(HU["ground_glass"], abs=25.0)
    # The noise inside the nodule matches the image's (20 HU in the phantom) in level ...
    assert lesion.provenance["noise_hu"] == pytest.approx(20.0, rel=0.1)
    residual = inside - np.median(inside)
    noise_inside = 1.4826 * np.median(np.abs(residual))
    assert noise_inside == pytest.approx(20.0, rel=0.2)
    # ... and in texture: the phantom's noise is smoothed in-plane (along i, j) but not across slices (k).
    widths = lesion.provenance["noise_correlation_voxels_kji"]
    assert widths[0] < 0.3 and 0.4 < widths[1] < 1.0 and 0.4 < widths[2] < 1.0


def test_outside_the_lesion_is_unchanged_bit_for_bit(lung_ct):
    center = np.array([-88.0, 2.0, 1.0])
    lesion = insert_nodule(lung_ct, center, 10.0, "solid", seed=2)
    changed = lesion.image.array != lung_ct.array
    assert changed.any() and lesion.image.array.dtype == lung_ct.array.dtype
    reach = 5.0 * 1.3 + 0.5 * float(np.sum(lung_ct.spacing))
    far = _distance_mm(lung_ct, center) > reach
    assert not changed[far].any()
    assert np.array_equal(lesion.image.array[far], lung_ct.array[far])
    assert not (lesion.mask.array.astype(bool) & far).any()


def test_provenance_is_complete_json_and_deterministic(lung_ct):
    a = insert_nodule(lung_ct, (-90.0, 0.0, 0.0), 9.0, "part-solid", seed=8, solid_fraction=0.4)
    b = insert_nodule(lung_ct, (-90.0, 0.0, 0.0), 9.0, "part-solid", seed=8, solid_fraction=0.4)
    c = insert_nodule(lung_ct, (-90.0, 0.0, 0.0), 9.0, "part-solid", seed=9, solid_fraction=0.4)
    assert np.array_equal(a.image.array, b.image.array) and np.array_equal(a.mask.array, b.mask.array)
    assert not np.array_equal(a.image.array, c.image.array)
    p = a.provenance
    assert p == b.provenance
    for key in ("generator", "version", "seed", "parent", "center_ras", "diameter_mm", "kind", "solid_fraction",
                "blend", "noise_hu", "volume_mm3", "mask_volume_mm3"):  # fmt: skip
        assert key in p
    assert p["generator"] == GENERATOR and p["seed"] == 8 and p["kind"] == "part-solid"
    assert p["solid_fraction"] == 0.4 and p["center_ras"] == [-90.0, 0.0, 0.0]
    assert p["parent"].startswith("sha256:") and p["parent"][7:] == p["parent_sha256"]
    json.dumps(p)
    assert a.image.metadata["synthetic"] is True and a.image.metadata["provenance"] is p
    named = insert_nodule(lung_ct, (-90.0, 0.0, 0.0), 9.0, seed=8, parent="series-1.2.3")
    assert named.provenance["parent"] == "series-1.2.3"


@pytest.mark.parametrize(
    ("center", "diameter", "kwargs", "match"),
    [
        ((0.0, 0.0, 0.0), 8.0, {}, "outside the image"),
        ((-90.0, 0.0, 14.0), 10.0, {}, "would leave the image"),
        ((-90.0, 0.0, 0.0), 0.0, {}, "diameter"),
        ((-90.0, 0.0, 0.0), 8.0, {"kind": "cavitary"}, "kind"),
        ((-90.0, 0.0, 0.0), 8.0, {"kind": "part-solid", "solid_fraction": 1.0}, "solid_fraction"),
        ((-90.0, 0.0, 0.0), 8.0, {"blend": "alpha"}, "blend"),
    ],
)
def test_bad_insertions_are_refused(lung_ct, center, diameter, kwargs, match):
    with pytest.raises(InputError, match=match):
        insert_nodule(lung_ct, center, diameter, seed=0, **kwargs)


def test_random_insertions_land_inside_the_lungs():
    spec = PhantomSpec(size_ijk=(96, 96, 48), spacing=(3.5, 3.5, 5.0), nodules=(), seed=1)
    phantom = generate_chest_phantom(spec)
    lungs = phantom.labels.array == 1
    lesions = random_insertions(phantom.ct, lungs, 3, seed=3, sizes=(8.0, 16.0))
    assert len(lesions) == 3
    for n, lesion in enumerate(lesions):
        mask = lesion.mask.array.astype(bool)
        assert mask.any() and lungs[mask].all()
        p = lesion.provenance
        assert 8.0 <= p["diameter_mm"] <= 16.0 and p["batch_seed"] == 3 and p["batch_index"] == n
        again = insert_nodule(phantom.ct, p["center_ras"], p["diameter_mm"], p["kind"], seed=p["seed"])
        assert np.array_equal(again.image.array, lesion.image.array)  # each one can be regenerated alone
    repeat = random_insertions(phantom.ct, lungs, 3, seed=3, sizes=(8.0, 16.0))
    assert [r.provenance for r in repeat] == [r.provenance for r in lesions]
    with pytest.raises(InputError, match="No place in the lungs"):
        random_insertions(phantom.ct, np.zeros_like(lungs), 1, seed=0)


def test_random_insertions_find_the_lungs_themselves():
    spec = PhantomSpec(size_ijk=(96, 96, 48), spacing=(3.5, 3.5, 5.0), nodules=(), seed=2)
    phantom = generate_chest_phantom(spec)
    (lesion,) = random_insertions(phantom.ct, None, 1, seed=5, sizes=(10.0, 10.0), kinds=("ground-glass",))
    mask = lesion.mask.array.astype(bool)
    assert lesion.provenance["kind"] == "ground-glass" and (phantom.labels.array[mask] == 1).mean() > 0.95
