"""Lung masks and nodule candidates on synthetic chest CTs with known truth (tracking.lungs, tracking.detection).

The phantoms have pulmonary vessel trees, airways, a chest wall and nodules of every kind; their truth says where
each nodule is. Recall and false candidates per scan are printed (``pytest -s``) so their drift is visible.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import pytest

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import (
    AXIAL,
    SAGITTAL,
    AnatomySpec,
    NoduleSpec,
    Phantom,
    PhantomSpec,
    generate_chest_phantom,
    make_affine,
    random_phantom_spec,
)
from MedAIExtension.phantom.anatomy import build_layout
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.tracking.detection import (
    DetectionOptions,
    candidates_from_labels,
    detect_candidates,
    merge_candidates,
)
from MedAIExtension.tracking.lungs import lung_mask
from MedAIExtension.tracking.types import Candidate

# A small chest (1 mm voxels) with one nodule of each kind; the last one abuts the chest wall.
ANATOMY = AnatomySpec(body_semi_axes_mm=(120.0, 90.0), fat_mm=10.0, lung_height_mm=160.0)
NODULES = (
    NoduleSpec(8.0, "solid", lung="right", position=(0.3, 0.3, 0.1)),
    NoduleSpec(10.0, "part-solid", solid_fraction=0.5, lung="left", position=(0.3, -0.4, -0.15)),
    NoduleSpec(9.0, "ground-glass", lung="right", position=(0.25, -0.45, -0.25)),
    NoduleSpec(6.0, "solid", lung="left", position=(0.6, 0.35, 0.2), juxta_pleural=True),
)
JUXTA_PLEURAL_ID = 4
MAX_FALSE_PER_SCAN = 4


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    axis_arr = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = math.radians(degrees)
    k = np.array([[0, -axis_arr[2], axis_arr[1]], [axis_arr[2], 0, -axis_arr[0]], [-axis_arr[1], axis_arr[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


# The same patient on three grids: size_ijk and direction (sagittal: i posterior, j inferior, k right).
GRIDS = {
    "axial": ((256, 192, 80), AXIAL),
    "sagittal": ((192, 80, 256), SAGITTAL),
    "oblique": ((264, 200, 84), _rotation((1.0, 1.0, 0.0), 20.0) @ AXIAL),
}


@dataclass
class Case:
    phantom: Phantom
    mask: np.ndarray
    candidates: list[Candidate]
    seconds: float


def _run(spec: PhantomSpec) -> Case:
    phantom = generate_chest_phantom(spec)
    start = time.perf_counter()
    mask = lung_mask(phantom.ct)
    candidates = detect_candidates(phantom.ct, mask)
    return Case(phantom, mask, candidates, time.perf_counter() - start)


@cache
def _grid_case(name: str) -> Case:
    size, direction = GRIDS[name]
    spec = PhantomSpec(size_ijk=size, spacing=(1.0, 1.0, 1.0), direction_ras=direction, nodules=NODULES, seed=2)
    return _run(_with_anatomy(spec))


def _with_anatomy(spec: PhantomSpec) -> PhantomSpec:
    return replace(spec, anatomy=ANATOMY)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


def _score(case: Case, min_diameter_mm: float = 5.0) -> tuple[dict[int, Candidate], list[Candidate], int]:
    """(nodule id -> best candidate within its radius, false candidates, number of nodules >= min diameter)."""
    nodules = case.phantom.truth["nodules"]
    found: dict[int, Candidate] = {}
    false = []
    for candidate in case.candidates:
        hit = None
        for nodule in nodules:
            distance = float(np.linalg.norm(np.subtract(candidate.center_ras, nodule["center_ras"])))
            if distance <= max(nodule["diameter_mm"] / 2.0, 2.0):
                hit = nodule["id"]
                break
        if hit is None:
            false.append(candidate)
        elif hit not in found:
            found[hit] = candidate
    wanted = sum(1 for n in nodules if n["diameter_mm"] >= min_diameter_mm)
    return found, false, wanted


def _voxel_of(image: Image, ras: np.ndarray) -> tuple[int, int, int]:
    inverse = np.linalg.inv(image.ijk_to_ras)
    i, j, k = np.rint(inverse[:3, :3] @ np.asarray(ras, dtype=float) + inverse[:3, 3]).astype(int)
    return int(k), int(j), int(i)


# ---- lung mask --------------------------------------------------------------------------------------------------
def test_lung_mask_matches_the_phantom_lungs():
    case = _grid_case("axial")
    phantom, mask = case.phantom, case.mask
    truth = phantom.labels.array > 0
    dice = _dice(mask, truth)
    extra_ml = np.count_nonzero(mask & ~truth) * phantom.ct.voxel_volume_mm3 / 1000.0
    print(f"\nlung mask: Dice {dice:.4f} vs lung+nodule label, {extra_ml:.1f} ml outside the lungs")
    assert dice > 0.95
    assert extra_ml < 0.03 * np.count_nonzero(truth) * phantom.ct.voxel_volume_mm3 / 1000.0
    # Every nodule lies inside, the one on the chest wall too (apart from its partial-volume rim at the pleura).
    for nodule in phantom.truth["nodules"]:
        voxels = phantom.nodule_mask(nodule["id"])
        inside = np.count_nonzero(mask & voxels) / np.count_nonzero(voxels)
        print(f"  nodule {nodule['id']} ({nodule['kind']}, juxta-pleural {nodule['juxta_pleural']}): {inside:.0%}")
        assert mask[_voxel_of(phantom.ct, nodule["center_ras"])]
        assert inside >= (0.85 if nodule["juxta_pleural"] else 0.99)
    # No outside air, and not the trachea (it runs from above the field of view down to the carina at S 24 mm).
    assert not mask[:, :, :5].any() and not mask[:, :5, :].any()
    trachea = build_layout(ANATOMY).airways[0]
    for s in (30.0, 36.0):
        t = (s - trachea.p0[2]) / (trachea.p1[2] - trachea.p0[2])
        axis_point = np.array(trachea.p0) + t * (np.array(trachea.p1) - np.array(trachea.p0))
        k, j, i = _voxel_of(phantom.ct, axis_point)
        assert phantom.ct.array[k, j, i] < -900  # really the airway lumen
        assert not mask[k, j - 3 : j + 4, i - 3 : i + 4].any()


@pytest.mark.parametrize("name", ["sagittal", "oblique"])
def test_lung_mask_on_sagittal_and_oblique_grids(name):
    axial, other = _grid_case("axial"), _grid_case(name)
    dice = _dice(other.mask, other.phantom.labels.array > 0)
    print(f"\n{name}: lung mask Dice {dice:.4f}")
    assert dice > 0.95
    if name == "sagittal":  # same field of view, so the same lung volume
        volumes = [np.count_nonzero(c.mask) * c.phantom.ct.voxel_volume_mm3 for c in (axial, other)]
        assert volumes[1] == pytest.approx(volumes[0], rel=0.01)
    juxta = other.phantom.nodule_mask(JUXTA_PLEURAL_ID)
    assert np.count_nonzero(other.mask & juxta) >= 0.85 * np.count_nonzero(juxta)


def test_images_without_lungs_raise_input_error():
    affine = make_affine((64, 64, 32), (2.0, 2.0, 2.0))
    water = Image(np.zeros((32, 64, 64), dtype=np.int16), affine, modality="CT")
    with pytest.raises(InputError, match="no air-filled lungs"):
        lung_mask(water)
    # A water cylinder in air (a head or a QA phantom): air, but none of it inside the body.
    _, j, i = np.mgrid[0:32, 0:64, 0:64]
    cylinder = np.where((j - 32) ** 2 + (i - 32) ** 2 < 25**2, 0, -1000).astype(np.int16)
    with pytest.raises(InputError, match="No lungs found"):
        lung_mask(Image(cylinder, affine, modality="CT"))
    # A small air pocket inside the body is not a pair of lungs.
    pocket = cylinder.copy()
    pocket[12:20, 28:36, 28:36] = -1000
    with pytest.raises(InputError, match="No lungs found"):
        lung_mask(Image(pocket, affine, modality="CT"))
    # Stored values without the rescale to HU have no air at all.
    with pytest.raises(InputError, match="Hounsfield"):
        lung_mask(Image((cylinder + 1024).astype(np.int16), affine, modality="CT"))


# ---- classical detection ----------------------------------------------------------------------------------------
def test_detects_every_kind_of_nodule_with_few_false_candidates():
    case = _grid_case("axial")
    found, false, wanted = _score(case)
    print(f"\naxial phantom: recall {len(found)}/{wanted}, {len(false)} false candidate(s), {case.seconds:.1f} s")
    for nodule in case.phantom.truth["nodules"]:
        c = found.get(nodule["id"])
        print(f"  {nodule['kind']:12s} {nodule['diameter_mm']:4.1f} mm -> {c}")
    assert set(found) == {1, 2, 3, 4}
    assert len(false) <= MAX_FALSE_PER_SCAN
    for nodule_id, candidate in found.items():
        nodule = case.phantom.truth["nodules"][nodule_id - 1]
        distance = np.linalg.norm(np.subtract(candidate.center_ras, nodule["center_ras"]))
        assert distance <= 0.25 * nodule["diameter_mm"]
        assert candidate.source == "classical" and 0.0 < candidate.confidence <= 1.0
        if nodule["kind"] != "part-solid":  # a part-solid nodule may be sized by its solid core
            assert candidate.diameter_mm == pytest.approx(nodule["diameter_mm"], rel=0.3)
    # Nodules rank above the false candidates, and the list is sorted.
    confidences = [c.confidence for c in case.candidates]
    assert confidences == sorted(confidences, reverse=True)
    assert min(c.confidence for c in found.values()) > max((c.confidence for c in false), default=0.0)


def test_random_phantoms_recall_and_false_candidates_per_scan():
    total_found = total_wanted = total_false = 0
    seeds = (3, 8, 12)
    for seed in seeds:
        spec = random_phantom_spec(seed, size_ijk=(384, 288, 64), spacing=(1.0, 1.0, 1.0), max_nodules=4)
        case = _run(spec)
        found, false, wanted = _score(case)
        big = {n["id"] for n in case.phantom.truth["nodules"] if n["diameter_mm"] >= 5.0}
        print(
            f"\nseed {seed}: {len(big & set(found))}/{len(big)} nodules >= 5 mm found, {len(false)} false, "
            f"{case.seconds:.1f} s: "
            + ", ".join(f"{n['kind']} {n['diameter_mm']:.1f} mm" for n in case.phantom.truth["nodules"])
        )
        assert big <= set(found)
        total_found += len(big & set(found))
        total_wanted += wanted
        total_false += len(false)
    print(f"recall {total_found}/{total_wanted}, false candidates per scan {total_false / len(seeds):.2f}")
    assert total_false / len(seeds) <= 1.0


def test_vessels_are_not_reported_as_nodules():
    spec = PhantomSpec(size_ijk=(256, 192, 80), spacing=(1.0, 1.0, 1.0), nodules=(), seed=7)
    case = _run(_with_anatomy(spec))
    ct = case.phantom.ct.array
    vessels = (case.phantom.labels.array == 1) & (ct > -400)  # dense voxels inside the lung field
    vessel_ml = np.count_nonzero(vessels) * case.phantom.ct.voxel_volume_mm3 / 1000.0
    on_vessels = [c for c in case.candidates if vessels[_voxel_of(case.phantom.ct, c.center_ras)]]
    print(f"\nno nodules, {vessel_ml:.0f} ml of vessels: {len(case.candidates)} candidate(s), {len(on_vessels)} on one")
    assert vessel_ml > 5.0
    assert len(case.candidates) <= 1
    assert all(c.confidence < 0.5 for c in case.candidates)


def test_sagittal_and_oblique_grids_give_the_same_detections_in_ras():
    reference, _, _ = _score(_grid_case("axial"))
    for name in ("sagittal", "oblique"):
        case = _grid_case(name)
        found, false, wanted = _score(case)
        print(f"\n{name}: recall {len(found)}/{wanted}, {len(false)} false candidate(s), {case.seconds:.1f} s")
        assert set(found) == set(reference)
        assert len(false) <= MAX_FALSE_PER_SCAN
        for nodule_id, candidate in found.items():
            shift = np.linalg.norm(np.subtract(candidate.center_ras, reference[nodule_id].center_ras))
            print(f"  nodule {nodule_id}: {shift:.2f} mm from the axial detection")
            assert shift < 1.5
            assert candidate.diameter_mm == pytest.approx(reference[nodule_id].diameter_mm, rel=0.25)


# ---- model candidates and merging --------------------------------------------------------------------------------
def test_model_label_candidates_merge_with_classical_ones():
    case = _grid_case("axial")
    phantom = case.phantom
    labels = phantom.labels.array.copy()
    # A "model" finding where the classical detector sees nothing: a 7 mm ball of label 2 in plain lung.
    extra_ras = np.array([62.0, -5.0, -25.0])
    assert all(np.linalg.norm(np.subtract(c.center_ras, extra_ras)) > 10.0 for c in case.candidates)
    centre = np.array(_voxel_of(phantom.ct, extra_ras))
    k, j, i = np.mgrid[-5:6, -5:6, -5:6]  # 1 mm voxels: offsets in mm
    ball = k**2 + j**2 + i**2 <= 3.5**2
    labels[tuple(centre[a] + offset[ball] for a, offset in enumerate((k, j, i)))] = 2
    extra_ras = phantom.ct.ijk_to_ras[:3, :3] @ centre[::-1] + phantom.ct.ijk_to_ras[:3, 3]

    model = candidates_from_labels(phantom.ct, phantom.labels, nodule_label=2)
    assert len(model) == len(NODULES)
    for nodule in phantom.truth["nodules"]:
        match = min(model, key=lambda c: np.linalg.norm(np.subtract(c.center_ras, nodule["mask_centroid_ras"])))
        assert np.linalg.norm(np.subtract(match.center_ras, nodule["mask_centroid_ras"])) < 0.01
        assert match.diameter_mm == pytest.approx(nodule["diameter_mm"], rel=0.1)
        assert match.source == "model"

    merged = detect_candidates(phantom.ct, case.mask, model_labels=labels, nodule_label=2)
    classical = _score(case)[0]
    for nodule in phantom.truth["nodules"]:
        near = [
            c
            for c in merged
            if np.linalg.norm(np.subtract(c.center_ras, nodule["center_ras"])) <= nodule["diameter_mm"] / 2.0
        ]
        assert len(near) == 1, near  # one candidate per nodule, no duplicate from either source
        assert near[0].source == "model+classical"
        assert near[0].confidence >= max(DetectionOptions().model_confidence, classical[nodule["id"]].confidence)
        assert near[0].confidence <= 1.0
    extra = [c for c in merged if np.linalg.norm(np.subtract(c.center_ras, extra_ras)) < 1.0]
    assert len(extra) == 1 and extra[0].source == "model"
    assert [c.confidence for c in merged] == sorted((c.confidence for c in merged), reverse=True)
    print(f"\nmerged: {len(merged)} candidates, sources {sorted({c.source for c in merged})}")


def test_merge_rules():
    model = [Candidate((0.0, 0.0, 0.0), 10.0, 0.8, "model"), Candidate((50.0, 0.0, 0.0), 6.0, 0.8, "model")]
    classical = [
        Candidate((1.0, 0.0, 0.0), 8.0, 0.5, "classical"),  # same nodule as model[0]
        Candidate((3.0, 0.0, 0.0), 3.0, 0.3, "classical"),  # a second blob inside model[0]: a duplicate
        Candidate((49.0, 4.0, 0.0), 6.0, 0.6, "classical"),  # 4.1 mm from model[1], beyond 3 mm and the radii
        Candidate((-40.0, 0.0, 0.0), 5.0, 0.9, "classical"),
    ]
    merged = merge_candidates(model, classical, distance_mm=3.0)
    sources = [(c.source, c.center_ras[0]) for c in merged]
    assert ("model+classical", 0.0) in sources
    combined = next(c for c in merged if c.source == "model+classical")
    assert combined.confidence == pytest.approx(1.0 - 0.2 * 0.5)
    assert combined.diameter_mm == 10.0  # the segmentation's size wins
    assert ("classical", 3.0) not in sources
    assert ("model", 50.0) in sources and ("classical", 49.0) in sources and ("classical", -40.0) in sources
    assert len(merged) == 4
    assert [c.confidence for c in merged] == sorted((c.confidence for c in merged), reverse=True)
    assert merge_candidates([], []) == []


# ---- input checks, progress and cancellation -----------------------------------------------------------------
def test_detection_rejects_mismatched_or_empty_input():
    case = _grid_case("axial")
    ct = case.phantom.ct
    with pytest.raises(InputError, match="lung mask has shape"):
        detect_candidates(ct, case.mask[:-1])
    with pytest.raises(InputError, match="lung mask is empty"):
        detect_candidates(ct, np.zeros(ct.shape, dtype=bool))
    with pytest.raises(InputError, match="model label map has shape"):
        detect_candidates(ct, case.mask, model_labels=np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(InputError, match="min_diameter_mm"):
        DetectionOptions(min_diameter_mm=20.0, max_diameter_mm=10.0)
    with pytest.raises(InputError, match="min_blobness"):
        DetectionOptions(min_blobness=1.5)


def test_progress_and_cancellation():
    case = _grid_case("axial")
    for run in (
        lambda report: detect_candidates(case.phantom.ct, case.mask, progress=report),
        lambda report: lung_mask(case.phantom.ct, progress=report),
    ):
        seen: list[float] = []
        run(lambda fraction, _message, seen=seen: seen.append(fraction))
        assert seen[-1] == 1.0 and seen == sorted(seen)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        detect_candidates(case.phantom.ct, case.mask, token=token)
    with pytest.raises(CancelledError):
        lung_mask(case.phantom.ct, progress=Progress(token=token))
