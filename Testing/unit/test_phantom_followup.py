"""Tests of phantom follow-up studies: known growth, a known rigid patient motion, dates and the pair truth."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.phantom import DEFAULT_NODULES, LABEL_LUNG, NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.phantom.followup import followup_spec, generate_phantom_pair, write_phantom_pair
from MedAIExtension.progress import CancelToken, Progress

# Four default nodules (8 mm solid, 12 mm part-solid, 10 mm ground-glass, 5 mm juxta-pleural solid) plus a 6 mm
# nodule that resolves; one new nodule appears at follow-up.
EXTRA = NoduleSpec(6.0, "solid", lung="left", position=(0.3, 0.3, 0.4))
NEW = NoduleSpec(7.0, "solid", lung="right", position=(0.4, 0.3, -0.3))
BASELINE = PhantomSpec(size_ijk=(160, 160, 100), spacing=(2.0, 2.0, 2.0), seed=2, nodules=(*DEFAULT_NODULES, EXTRA))
FACTORS = (2.0, 1.0, 1.3, 0.7, 1.0)
ROTATION = (2.0, -3.0, 5.0)
TRANSLATION = (10.0, -6.0, 8.0)
INTERVAL = 180
BASELINE_DATE = dt.date(2025, 1, 15)
PATIENT = "FU-PHANTOM-7"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    files = write_phantom_pair(
        tmp_path_factory.mktemp("pair"),
        interval_days=INTERVAL,
        volume_factors=FACTORS,
        rotation_deg=ROTATION,
        translation_mm=TRANSLATION,
        patient_id=PATIENT,
        baseline_date=BASELINE_DATE,
        baseline=BASELINE,
        new_nodules=(NEW,),
        resolved=(5,),
    )
    truth = json.loads(files["truth"].read_text(encoding="utf-8"))
    return files, truth


def _transform(matrix: np.ndarray) -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in matrix[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in matrix[:3, 3]])
    return transform


def _apply(matrix: np.ndarray, point) -> np.ndarray:
    return matrix[:3, :3] @ np.asarray(point, dtype=float) + matrix[:3, 3]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _centroid_ras(image: Image, mask: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return _apply(image.ijk_to_ras, [i.mean(), j.mean(), k.mean()])


# ---- truth --------------------------------------------------------------------------------------------------
def test_truth_volumes_and_vdt_follow_the_factors(written):
    _, truth = written
    nodules = {n["id"]: n for n in truth["nodules"]}
    assert sorted(nodules) == [1, 2, 3, 4, 5, 6]
    assert [nodules[i]["status"] for i in range(1, 7)] == ["persistent"] * 4 + ["resolved", "new"]
    assert truth["interval_days"] == INTERVAL
    for index, factor in enumerate(FACTORS[:4], start=1):
        nodule = nodules[index]
        before, after = nodule["baseline"], nodule["followup"]
        print(
            f"nodule {index} {nodule['kind']}: {before['volume_mm3']:.1f} -> {after['volume_mm3']:.1f} mm3, VDT "
            f"{nodule['vdt_days']}, voxels {before['mask_volume_mm3']} -> {after['mask_volume_mm3']} mm3"
        )
        assert after["volume_mm3"] / before["volume_mm3"] == pytest.approx(factor, rel=1e-6)
        assert after["diameter_mm"] / before["diameter_mm"] == pytest.approx(factor ** (1 / 3), rel=1e-6)
        assert before["volume_mm3"] == pytest.approx(math.pi / 6 * before["diameter_mm"] ** 3, rel=1e-6)
        assert nodule["volume_change_percent"] == pytest.approx(100.0 * (factor - 1.0), abs=1e-4)
        assert nodule["volume_factor"] == factor
        if factor > 1.0:
            assert nodule["vdt_days"] == pytest.approx(INTERVAL * math.log(2.0) / math.log(factor), rel=1e-6)
        else:
            assert nodule["vdt_days"] is None
        # The rendered masks agree with the analytic volumes (partial volume at 2 mm voxels aside).
        assert after["mask_volume_mm3"] == pytest.approx(after["volume_mm3"], rel=0.35)
    assert nodules[1]["vdt_days"] == pytest.approx(INTERVAL, rel=1e-6)  # doubled in 180 days
    part_solid = nodules[2]
    assert part_solid["kind"] == "part-solid"
    assert part_solid["followup"]["solid_diameter_mm"] == pytest.approx(part_solid["baseline"]["solid_diameter_mm"])
    assert nodules[4]["juxta_pleural"] and nodules[4]["vdt_days"] is None
    resolved, new = nodules[5], nodules[6]
    assert resolved["followup"] is None and resolved["vdt_days"] is None and resolved["volume_change_percent"] is None
    assert new["baseline"] is None and new["vdt_days"] is None and new["followup"]["diameter_mm"] == 7.0
    assert truth["studies"]["baseline"]["study_date"] == "2025-01-15"
    assert truth["studies"]["followup"]["study_date"] == "2025-07-14"


def test_follow_up_nodule_ids_in_the_label_maps(written):
    files, truth = written
    maps = {name: read_volume_file(files[f"{name}_nodules"]) for name in ("baseline", "followup")}
    for nodule in truth["nodules"]:
        for name, image in maps.items():
            entry = nodule[name]
            if entry is None:
                continue
            mask = image.array == entry["label_id"]
            error = np.linalg.norm(_centroid_ras(image, mask) - entry["center_ras"])
            assert error < 1.0, (nodule["id"], name, error)
    assert set(np.unique(maps["followup"].array)) == {0, 1, 2, 3, 4, 5}  # 4 persistent + 1 new, 5 resolved


def test_transform_is_the_documented_rigid_motion(written):
    _, truth = written
    motion = truth["motion"]
    forward = np.array(motion["baseline_to_followup_ras"])
    backward = np.array(motion["followup_to_baseline_ras"])
    np.testing.assert_allclose(forward @ backward, np.eye(4), atol=1e-9)
    # Independent construction: extrinsic x-y-z rotation about the field-of-view centre, then the shift.
    expected = np.eye(4)
    expected[:3, :3] = Rotation.from_euler("xyz", ROTATION, degrees=True).as_matrix()
    center = np.array(BASELINE.center_ras)
    expected[:3, 3] = center + np.array(TRANSLATION) - expected[:3, :3] @ center
    np.testing.assert_allclose(forward, expected, atol=1e-9)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.array(motion["followup_to_baseline_lps"]), flip @ backward @ flip, atol=1e-9)
    np.testing.assert_allclose(np.array(motion["baseline_to_followup_lps"]), flip @ forward @ flip, atol=1e-9)


def test_follow_up_centres_map_onto_baseline_centres(written):
    files, truth = written
    backward = np.array(truth["motion"]["followup_to_baseline_ras"])
    maps = {name: read_volume_file(files[f"{name}_nodules"]) for name in ("baseline", "followup")}
    for nodule in truth["nodules"]:
        if nodule["status"] != "persistent":
            continue
        before, after = nodule["baseline"], nodule["followup"]
        mapped = _apply(backward, after["center_ras"])
        error = float(np.linalg.norm(mapped - before["center_ras"]))
        unregistered = float(np.linalg.norm(np.subtract(after["center_ras"], before["center_ras"])))
        # The same, measured on the written voxel masks (nodules of >= 8 mm: the centroid of a 5 mm sphere at
        # 2 mm voxels is off its centre by a fraction of a voxel).
        centroids = {name: _centroid_ras(maps[name], maps[name].array == nodule[name]["label_id"]) for name in maps}
        voxel_error = float(np.linalg.norm(_apply(backward, centroids["followup"]) - centroids["baseline"]))
        print(f"nodule {nodule['id']}: truth centre error {error:.4f} mm, voxel centroid error {voxel_error:.3f} mm, "
              f"unregistered {unregistered:.1f} mm")  # fmt: skip
        assert error < 0.5 and unregistered > 5.0
        if before["diameter_mm"] >= 8.0:
            assert voxel_error < 0.5


def test_registered_follow_up_matches_the_baseline_and_unregistered_does_not(written):
    files, truth = written
    baseline_ct = read_dicom_series(files["baseline_ct"])
    followup_ct = read_dicom_series(files["followup_ct"])
    baseline_labels = read_volume_file(files["baseline_labels"])
    followup_labels = read_volume_file(files["followup_labels"])
    assert baseline_ct.same_grid(followup_ct) and baseline_labels.same_grid(baseline_ct)
    # SimpleITK resamples in LPS: for each baseline (fixed) point it needs the follow-up (moving) point.
    to_followup = _transform(np.array(truth["motion"]["baseline_to_followup_lps"]))
    fixed_labels = baseline_labels.to_sitk()
    outside = 255

    def labels_on_baseline(transform: sitk.Transform) -> np.ndarray:
        moved = sitk.Resample(followup_labels.to_sitk(), fixed_labels, transform, sitk.sitkNearestNeighbor, outside)
        return sitk.GetArrayFromImage(moved)

    registered = labels_on_baseline(to_followup)
    unregistered = labels_on_baseline(sitk.Transform())
    lung = baseline_labels.array >= LABEL_LUNG

    def lung_dice(moved: np.ndarray) -> float:
        valid = moved != outside
        return _dice(lung & valid, (moved >= LABEL_LUNG) & (moved != outside))

    dice_registered, dice_unregistered = lung_dice(registered), lung_dice(unregistered)
    # The CT itself (vessels, airways, ribs) moved with the patient too: compare HU inside the baseline lungs.
    fixed_ct = baseline_ct.to_sitk()
    ct_registered = sitk.GetArrayFromImage(sitk.Resample(followup_ct.to_sitk(), fixed_ct, to_followup, sitk.sitkLinear))
    ct_unregistered = followup_ct.array.astype(np.float32)
    inside = lung & (registered != outside)
    reference = baseline_ct.array.astype(np.float32)[inside]
    corr_registered = float(np.corrcoef(reference, ct_registered[inside])[0, 1])
    corr_unregistered = float(np.corrcoef(reference, ct_unregistered[inside])[0, 1])
    print(f"lung Dice registered {dice_registered:.4f}, unregistered {dice_unregistered:.4f}; lung HU correlation "
          f"registered {corr_registered:.3f}, unregistered {corr_unregistered:.3f}")  # fmt: skip
    assert dice_registered > 0.97
    assert dice_unregistered < 0.9
    assert corr_registered > 0.6 and corr_unregistered < 0.3
    # The inverse direction in RAS gives the same alignment when converted to LPS by hand.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    by_hand = _transform(flip @ np.linalg.inv(np.array(truth["motion"]["followup_to_baseline_ras"])) @ flip)
    assert np.array_equal(labels_on_baseline(by_hand), registered)


def test_dicom_series_of_both_studies_read_back(written):
    files, truth = written
    baseline = read_dicom_series(files["baseline_ct"]).metadata
    followup = read_dicom_series(files["followup_ct"]).metadata
    assert baseline["PatientID"] == followup["PatientID"] == PATIENT
    assert baseline["StudyDate"] == "20250115" and followup["StudyDate"] == "20250714"
    assert baseline["StudyInstanceUID"] != followup["StudyInstanceUID"]
    assert baseline["FrameOfReferenceUID"] != followup["FrameOfReferenceUID"]
    for name, meta in (("baseline", baseline), ("followup", followup)):
        study = truth["studies"][name]
        assert study["study_instance_uid"] == meta["StudyInstanceUID"]
        assert study["series_instance_uid"] == meta["SeriesInstanceUID"]
        assert study["dicom_study_date"] == meta["StudyDate"] and study["folder"] == name
        assert files[name].is_dir() and files[f"{name}_truth"].is_file()
    assert not list(files["truth"].parent.glob(".medai-staging-*"))


# ---- motion semantics, in memory on a coarse grid -----------------------------------------------------------
COARSE = PhantomSpec(size_ijk=(96, 96, 80), spacing=(4.0, 4.0, 4.0), seed=4, noise_hu=15.0)


def test_without_motion_or_growth_only_the_noise_changes():
    pair = generate_phantom_pair(followup_spec(COARSE, (1.0,) * 4))
    np.testing.assert_array_equal(pair.baseline.labels.array, pair.followup.labels.array)
    np.testing.assert_array_equal(pair.baseline.nodule_ids.array, pair.followup.nodule_ids.array)
    difference = pair.followup.ct.array.astype(float) - pair.baseline.ct.array.astype(float)
    std = float(difference[pair.baseline.labels.array > 0].std())
    print(f"HU difference std between the studies: {std:.1f} (noise 15 HU each)")
    assert 15.0 < std < 30.0  # two independent noise realisations: about 15 * sqrt(2)


def test_translation_moves_the_patient_in_scanner_ras():
    shift = (12.0, -8.0, 4.0)
    pair = generate_phantom_pair(followup_spec(COARSE, (1.0,) * 4, translation_mm=shift))
    before = _centroid_ras(pair.baseline.labels, pair.baseline.labels.array == LABEL_LUNG)
    after = _centroid_ras(pair.followup.labels, pair.followup.labels.array == LABEL_LUNG)
    print(f"lung centroid moved by {np.round(after - before, 2).tolist()} mm for a shift of {shift}")
    np.testing.assert_allclose(after - before, shift, atol=0.6)
    for nodule in pair.truth["nodules"]:
        np.testing.assert_allclose(
            np.subtract(nodule["followup"]["center_ras"], nodule["baseline"]["center_ras"]), shift, atol=1e-3
        )


def test_a_moved_spec_keeps_its_pose_in_the_phantom_truth():
    spec = followup_spec(COARSE, (1.0,) * 4, rotation_deg=(0, 0, 4), translation_mm=(5, 0, 0)).followup
    phantom = generate_chest_phantom(replace(spec, noise_hu=0.0))
    assert np.allclose(phantom.truth["pose_ras"], spec.pose) and phantom.truth["noise_seed"] == spec.noise_seed
    assert np.allclose(phantom.ct.ijk_to_ras, COARSE.ijk_to_ras)  # the scanner grid did not move


# ---- validation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volume_factors": (2.0, 1.0)}, "one follow-up/baseline volume ratio per baseline nodule"),
        ({"volume_factors": (2.0, 0.0, 1.0, 1.0)}, "nodule 2 must be a finite number > 0"),
        ({"volume_factors": (2.0, float("nan"), 1.0, 1.0)}, "nodule 2"),
        ({"resolved": (0,)}, "baseline nodule ids 1..4"),
        ({"resolved": (2, 2)}, "listed twice"),
        ({"rotation_deg": (0, 0, 45)}, "beyond"),
        ({"rotation_deg": (0, 0)}, "rotation_deg must be three"),
        ({"translation_mm": (150.0, 0.0, 0.0)}, r"Nodule \d+ .*outside the follow-up field of view; reduce the motion"),
        ({"volume_factors": (1500.0, 1.0, 1.0, 1.0)}, "Nodule 1 at follow-up"),  # 8 mm -> 92 mm > 80 mm
        ({"new_nodules": (NoduleSpec(8.0, lung="right", position=(0.35, 0.25, 0.35)),)}, "nodules 1 and 5 overlap"),
        ({"new_nodules": ("big",)}, "NoduleSpec"),
        ({"solid_fractions": (0.5, None, None, None)}, "nodule 1 is solid"),
    ],
)
def test_bad_followup_specs_are_rejected(kwargs, message):
    arguments = {"volume_factors": (1.0,) * 4, **kwargs}
    with pytest.raises(InputError, match=message):
        followup_spec(COARSE, **arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_days": 0}, "interval_days must be positive"),
        ({"interval_days": -30}, "interval_days must be positive"),
        ({"interval_days": 90.5}, "whole number of days"),
        ({"baseline_date": "2025-01-15"}, "baseline_date"),
        ({"patient_id": ""}, "patient_id"),
        ({"volume_factors": (1.0,)}, "per baseline nodule"),
    ],
)
def test_bad_pair_arguments_are_rejected_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        write_phantom_pair(tmp_path / "out", baseline=COARSE, **kwargs)
    assert not (tmp_path / "out").exists()


def test_growth_into_a_neighbour_is_rejected():
    center = followup_spec(COARSE, (1.0,) * 4).nodules[0].followup.center_ras
    near = NoduleSpec(6.0, center_ras=(center[0], center[1], center[2] + 11.0))  # 4 mm from the 8 mm nodule 1
    assert followup_spec(COARSE, (1.0,) * 4, new_nodules=(near,)).nodules[4].id == 5
    with pytest.raises(InputError, match="nodules 1 and 5 overlap"):
        followup_spec(COARSE, (8.0, 1.0, 1.0, 1.0), new_nodules=(near,))


def test_invalid_poses_and_noise_seeds_are_rejected():
    scaled = np.diag([2.0, 1.0, 1.0, 1.0])
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0])
    for pose in (scaled, mirrored, np.eye(3), np.full((4, 4), np.nan)):
        with pytest.raises(InputError, match="pose_ras"):
            PhantomSpec(pose_ras=pose)
    with pytest.raises(InputError, match="noise_seed"):
        PhantomSpec(noise_seed=-1)


def test_cancelling_leaves_no_output(tmp_path):
    token = CancelToken()

    def cancel_during_followup(fraction: float, message: str) -> None:
        if fraction > 0.6:
            token.cancel()

    with pytest.raises(CancelledError):
        write_phantom_pair(tmp_path, baseline=COARSE, progress=Progress(cancel_during_followup, token))
    assert list(tmp_path.iterdir()) == []
