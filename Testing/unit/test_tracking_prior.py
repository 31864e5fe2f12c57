"""Tracking UIDs carried over from the prior study's report, and the single-study assessment behind it.

The prior report here names its nodules differently from this run's numbering (``N7`` and ``LUL-A``), so the
UIDs can only be right if the nodules are found again by their segments, not by their order.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from MedAIExtension.dicom.sr import read_exam_lung_rads, read_reading_priority, read_tracking_sr, write_tracking_sr
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.phantom import NoduleSpec, PhantomSpec
from MedAIExtension.phantom.followup import write_phantom_pair
from MedAIExtension.tracking import (
    TrackingOptions,
    adopt_prior_tracking,
    assess_study,
    track_nodules,
    write_study_dicom,
)
from MedAIExtension.tracking.outputs import _report_items

OPTIONS = TrackingOptions(model=None)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("prior")
    paths = write_phantom_pair(
        root / "pair",
        baseline=PhantomSpec(
            size_ijk=(160, 128, 96),
            spacing=(1.8, 1.8, 2.5),
            seed=11,
            nodules=(
                NoduleSpec(12.0, lung="right", position=(0.3, 0.2, 0.3)),
                NoduleSpec(10.0, lung="left", position=(0.35, -0.2, -0.3)),
            ),
        ),
        volume_factors=(2.0, 1.0),
        new_nodules=(NoduleSpec(9.0, lung="right", position=(0.3, -0.3, -0.45)),),
        interval_days=120,
    )
    return {
        "root": root,
        "baseline": read_dicom_series(paths["baseline"] / "ct"),
        "followup": read_dicom_series(paths["followup"] / "ct"),
    }


def test_a_single_study_gets_seg_and_sr_with_lung_rads_and_priority(studies: dict, tmp_path: Path) -> None:
    result = assess_study(studies["baseline"], OPTIONS)
    assert [n.tracking_id for n in result.nodules] == ["N1", "N2"]
    assert all(n.status == "baseline" and n.followup is None for n in result.nodules)
    files = write_study_dicom(result, "baseline", tmp_path, reading_priority=2)
    groups = read_tracking_sr(files["baseline_sr"])
    assert [g["tracking_id"] for g in groups] == ["N1", "N2"] and all(g["time_point"] == "baseline" for g in groups)
    assert read_exam_lung_rads(files["baseline_sr"]) == str(result.exam_lung_rads["baseline"].category)
    assert read_reading_priority(files["baseline_sr"]) == 2
    with pytest.raises(ValueError, match="baseline"):
        write_study_dicom(result, "followup", tmp_path)


def test_the_follow_up_report_reuses_the_prior_reports_tracking_uids(studies: dict, tmp_path: Path) -> None:
    prior = assess_study(studies["baseline"], OPTIONS)
    files = write_study_dicom(prior, "baseline", tmp_path / "prior")
    # the prior report, as another reader/software might have named the nodules
    names = {1: ("N7", "1.2.826.0.1.3680043.8.498.7777"), 2: ("LUL-A", "1.2.826.0.1.3680043.8.498.8888")}
    items = [
        replace(item, tracking_id=names[n][0], tracking_uid=names[n][1])
        for n, item in zip((1, 2), _report_items(prior, "baseline"))
    ]
    import pydicom

    from MedAIExtension.dicom import segment_value_map

    number_of = {v: k for k, v in segment_value_map(pydicom.dcmread(files["baseline_seg"])).items()}
    items = [replace(item, segment_number=number_of[item.segment_number]) for item in items]
    renamed = write_tracking_sr(tmp_path / "prior_sr.dcm", studies["baseline"], files["baseline_seg"], items)

    result = track_nodules(studies["baseline"], studies["followup"], OPTIONS)
    assert sorted(n.status for n in result.nodules) == ["new", "persistent", "persistent"]
    warnings = adopt_prior_tracking(result, renamed, files["baseline_seg"])
    assert warnings == []
    by_id = {n.tracking_id: n for n in result.nodules}
    centres = {n: prior.nodules[n - 1].baseline.measurement.center_ras for n in (1, 2)}
    for number, (identifier, uid) in names.items():
        nodule = by_id[identifier]
        assert nodule.tracking_uid == uid and nodule.status == "persistent"
        assert nodule.baseline.measurement.center_ras == pytest.approx(centres[number])
    assert by_id["N7"].number == 7  # numbered identifiers keep their number (and so their colour)
    [new] = [n for n in result.nodules if n.status == "new"]
    assert new.tracking_uid not in {uid for _, uid in names.values()} and new.tracking_id not in names.values()
    assert len({n.number for n in result.nodules}) == 3

    out = write_study_dicom(result, "followup", tmp_path / "followup")
    groups = read_tracking_sr(out["followup_sr"])
    assert {g["tracking_id"]: g["tracking_uid"] for g in groups if g["tracking_id"] in ("N7", "LUL-A")} == {
        "N7": names[1][1],
        "LUL-A": names[2][1],
    }
    assert len(groups) == 3


def test_a_prior_nodule_not_found_again_is_reported(studies: dict, tmp_path: Path) -> None:
    prior = assess_study(studies["baseline"], OPTIONS)
    files = write_study_dicom(prior, "baseline", tmp_path)
    result = track_nodules(studies["baseline"], studies["followup"], OPTIONS)
    result.nodules[:] = [n for n in result.nodules if n.tracking_id != "N2"]  # as if this run missed N2
    warnings = adopt_prior_tracking(result, files["baseline_sr"], files["baseline_seg"])
    assert len(warnings) == 1 and "N2" in warnings[0]
    assert result.nodules[0].tracking_uid == prior.nodules[0].tracking_uid
