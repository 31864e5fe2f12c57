"""FROC and the LUNA16 CPM: matching rules, the curve, and lesions/candidates read from real image grids."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.segmentation.froc import (
    LUNA16_FP_RATES,
    Candidate,
    Lesion,
    ScanDetections,
    candidates_from_probability,
    froc,
    lesions_from_labelmap,
)


def _scan(candidates: list[tuple[tuple[float, float, float], float]], lesions: list[Lesion]) -> ScanDetections:
    return ScanDetections(tuple(Candidate(c, s) for c, s in candidates), tuple(lesions))


def test_curve_and_cpm_match_a_hand_computed_example() -> None:
    scan_a = _scan(
        [((0, 0, 0), 0.9), ((1, 0, 0), 0.3), ((100, 0, 0), 0.8), ((50, 0, 0), 0.4)],
        [Lesion((0, 0, 0), 10.0), Lesion((50, 0, 0), 10.0)],
    )
    scan_b = _scan([((20, 0, 0), 0.95), ((0, 1, 0), 0.6)], [Lesion((0, 0, 0), 6.0)])
    result = froc([scan_a, scan_b])
    # 0.3 is a second candidate on a lesion already hit with 0.9: neither a hit nor a false positive.
    assert result.thresholds == (0.95, 0.9, 0.8, 0.6, 0.4)
    assert result.fp_per_scan == (0.5, 0.5, 1.0, 1.0, 1.0)
    assert result.sensitivity == pytest.approx((0, 1 / 3, 1 / 3, 2 / 3, 1))
    expected = {0.125: 1 / 12, 0.25: 1 / 6, 0.5: 1 / 3, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    assert result.sensitivity_at == pytest.approx(expected)
    assert result.cpm == pytest.approx(sum(expected.values()) / 7)
    assert (result.scans, result.lesions, result.detected) == (2, 3, 3)
    assert result.to_dict()["sensitivity_at_fp_per_scan"]["0.125"] == pytest.approx(1 / 12)


def test_perfect_and_useless_detectors() -> None:
    lesions = [Lesion((0, 0, 0), 8.0), Lesion((40, 0, 0), 8.0)]
    perfect = froc([_scan([((0, 0, 1), 0.7), ((40, 1, 0), 0.6)], lesions)])
    assert perfect.cpm == 1.0 and perfect.sensitivity_at[LUNA16_FP_RATES[0]] == 1.0
    useless = froc([_scan([((100, 0, 0), 0.9), ((0, 100, 0), 0.8)], lesions)])
    assert useless.cpm == 0.0 and useless.detected == 0
    missed_one = froc([_scan([((0, 0, 0), 0.9)], lesions)])
    assert missed_one.cpm == 0.5


def test_a_candidate_between_two_lesions_counts_for_the_nearest_only() -> None:
    lesions = [Lesion((0, 0, 0), 20.0), Lesion((12, 0, 0), 20.0)]
    result = froc([_scan([((8, 0, 0), 0.9)], lesions)])
    assert result.detected == 1 and result.sensitivity[-1] == 0.5


def test_no_scans_or_no_lesions_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="at least one scan"):
        froc([])
    with pytest.raises(InputError, match="reference lesion"):
        froc([_scan([((0, 0, 0), 0.5)], [])])
    with pytest.raises(InputError, match="threshold"):
        candidates_from_probability(_grid(np.zeros((4, 4, 4), np.float32)), threshold=1.0)


def _grid(array: np.ndarray, spacing=(0.7, 0.8, 2.5)) -> Image:
    """An oblique, anisotropic grid (not our phantoms' axis-aligned 1 mm one)."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]]) @ np.diag(
        [-1.0, -1.0, 1.0]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = (12.0, -30.0, 140.0)
    return Image(array, affine, modality="CT")


def _ellipsoid(shape, centre_kji, radius_mm, spacing) -> np.ndarray:
    k, j, i = np.indices(shape)
    d = (
        ((i - centre_kji[2]) * spacing[0]) ** 2
        + ((j - centre_kji[1]) * spacing[1]) ** 2
        + ((k - centre_kji[0]) * spacing[2]) ** 2
    )
    return d <= radius_mm**2


def test_lesions_and_candidates_from_images_on_an_oblique_anisotropic_grid() -> None:
    spacing = (0.7, 0.8, 2.5)
    shape = (24, 80, 80)
    reference = np.zeros(shape, np.uint8)
    big = _ellipsoid(shape, (12, 20, 20), 8.0, spacing)
    small = _ellipsoid(shape, (10, 60, 60), 3.0, spacing)
    reference[big] = 2
    reference[small] = 2
    reference[_ellipsoid(shape, (12, 20, 60), 4.0, spacing)] = 1  # another label: not a lesion
    ref_image = _grid(reference, spacing)
    lesions = lesions_from_labelmap(ref_image, 2)
    assert len(lesions) == 2
    diameters = sorted(lesion.diameter_mm for lesion in lesions)
    assert diameters[0] == pytest.approx(6.0, rel=0.2) and diameters[1] == pytest.approx(16.0, rel=0.1)
    big_centre = (ref_image.ijk_to_ras @ np.array([20, 20, 12, 1.0]))[:3]
    assert min(np.linalg.norm(np.asarray(lesion.center_ras) - big_centre) for lesion in lesions) < 0.5

    probability = np.zeros(shape, np.float32)
    probability[big] = 0.9
    probability[_ellipsoid(shape, (5, 60, 20), 3.0, spacing)] = 0.7  # a false positive
    probability[_ellipsoid(shape, (20, 40, 40), 0.5, spacing)] = 0.95  # a speck below the volume floor
    candidates = candidates_from_probability(_grid(probability, spacing), threshold=0.5, min_volume_mm3=5.0)
    assert sorted(c.score for c in candidates) == pytest.approx([0.7, 0.9])
    result = froc([ScanDetections(candidates, lesions)])
    assert result.detected == 1 and result.thresholds == pytest.approx((0.9, 0.7))
    assert result.sensitivity == (0.5, 0.5) and result.fp_per_scan == (0.0, 1.0)


def test_a_hit_inside_an_irregular_mass_far_from_its_centroid_counts() -> None:
    spacing = (1.0, 1.0, 1.0)
    shape = (10, 60, 60)
    ring = _ellipsoid(shape, (5, 30, 30), 25.0, spacing) & ~_ellipsoid(shape, (5, 30, 30), 20.0, spacing)
    reference = np.zeros(shape, np.uint8)
    reference[ring] = 1
    image = _grid(reference, spacing)
    (lesion,) = lesions_from_labelmap(image, 1)
    on_ring = (image.ijk_to_ras @ np.array([30 + 22, 30, 5, 1.0]))[:3]  # inside the wall, ~22 mm from the centre
    assert np.linalg.norm(on_ring - np.asarray(lesion.center_ras)) > lesion.diameter_mm / 2
    assert lesion.contains(on_ring)
    outside = (image.ijk_to_ras @ np.array([30 + 28, 30, 5, 1.0]))[:3]  # just beyond the outer wall
    assert not lesion.contains(outside)
    result = froc([ScanDetections((Candidate(tuple(on_ring), 0.8),), (lesion,))])
    assert result.cpm == 1.0


# --- medai evaluate --froc ------------------------------------------------------------------------------------


def _write_case(tmp_path, name: str, spacing=(0.7, 0.8, 2.5)) -> tuple[str, str, str]:
    """A reference with two lesions (label 2) and a lung label (1); a probability map hitting one, plus an FP."""
    from MedAIExtension.io.volume_files import write_volume_file

    shape = (24, 80, 80)
    reference = np.zeros(shape, np.uint8)
    reference[_ellipsoid(shape, (12, 40, 40), 30.0, spacing)] = 1
    reference[_ellipsoid(shape, (12, 20, 20), 6.0, spacing)] = 2
    reference[_ellipsoid(shape, (10, 60, 60), 4.0, spacing)] = 2
    probability = np.zeros(shape, np.float32)
    probability[_ellipsoid(shape, (12, 20, 20), 6.0, spacing)] = 0.9
    probability[_ellipsoid(shape, (5, 60, 20), 3.0, spacing)] = 0.6
    labels = (probability > 0.5).astype(np.uint8) * 2
    ref_path = write_volume_file(_grid(reference, spacing), tmp_path / f"{name}-ref.nii.gz")
    prob_path = write_volume_file(_grid(probability, spacing), tmp_path / f"{name}-prob.nii.gz")
    label_path = write_volume_file(_grid(labels, spacing), tmp_path / f"{name}-labels.nii.gz")
    return str(prob_path), str(label_path), str(ref_path)


def test_medai_evaluate_froc_over_several_scans(tmp_path, capsys) -> None:
    import json

    from MedAIExtension.cli import main

    first, second = _write_case(tmp_path, "a"), _write_case(tmp_path, "b")
    args = ["evaluate", "--froc", "--label", "2", "--json"]
    for prob, _, ref in (first, second):
        args += ["--pred", prob, "--ref", ref]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["scans"], report["lesions"], report["detected"]) == (2, 4, 2)
    # strictest point: 2 of 4 lesions at 0 FP; then 1 FP per scan at 0.6, still half of them
    assert report["sensitivity_at_fp_per_scan"]["0.125"] == pytest.approx(0.5)
    assert report["cpm"] == pytest.approx(0.5)
    # a label map gives one operating point: every candidate scored 1
    assert main(["evaluate", "--froc", "--label", "2", "--pred", first[1], "--ref", first[2]]) == 0
    text = capsys.readouterr().out
    assert "CPM" in text and "1 scan(s), 2 lesion(s), 1 hit" in text


def test_medai_evaluate_froc_refuses_mismatched_or_unlabelled_input(tmp_path, capsys) -> None:
    from MedAIExtension.cli import main

    prob, _, ref = _write_case(tmp_path, "a")
    assert main(["evaluate", "--froc", "--pred", prob, "--ref", ref]) != 0
    assert "--label" in capsys.readouterr().err
    assert main(["evaluate", "--froc", "--label", "2", "--pred", prob, "--pred", prob, "--ref", ref]) != 0
    assert "one --ref per --pred" in capsys.readouterr().err
