"""The nodule tracking SR (Comprehensive 3D SR, TID 1500) on two real time points of one phantom patient.

Baseline and follow-up are separate studies (same patient, different dates, different grids: the follow-up is
written head-to-feet with another spacing). Each gets a DICOM SEG with one segment per nodule — in a different
segment order at follow-up, so segment numbers differ between the time points — and an SR whose groups carry
the same Tracking UIDs. Checks: dciodvfy and dcmtk's dsr2xml accept both SRs, highdicom reads back the tracking
identifiers, UIDs, measurements and evaluations, each group references the right SEG instance and segment (the
segment's voxels are the nodule's voxels) and the CT images that segment was derived from, and bad input raises
InputError without leaving a file.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_test_data import dciodvfy_missing_reason

from MedAIExtension.dicom.seg import write_dicom_seg
from MedAIExtension.dicom.sr import (
    PRIVATE_SCHEME,
    NoduleReportItem,
    read_exam_lung_rads,
    read_reading_priority,
    read_tracking_sr,
    tracking_uid_for,
    write_tracking_sr,
)
from MedAIExtension.dicom.tools import MissingToolError, find_tool
from MedAIExtension.dicom.validation import run_dciodvfy, run_dsr2xml
from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import read_dicom_series, write_dicom_series
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.phantom import AXIAL, NoduleSpec, Phantom, PhantomSpec, generate_chest_phantom

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PATIENT_ID = "MEDAI-TRACK-01"
BASELINE_DATE = dt.date(2025, 1, 6)
FOLLOW_UP_DATE = dt.date(2025, 7, 7)
#: (tracking id, kind, baseline diameter, follow-up diameter, relative position in the right lung)
NODULES = (
    ("N1", "solid", 7.0, 9.0, (0.35, 0.25, 0.35)),  # growing
    ("N2", "part-solid", 10.0, 10.0, (0.35, -0.2, 0.35)),  # stable
    ("N3", "ground-glass", 6.0, 5.0, (0.55, 0.0, 0.1)),  # shrinking: no doubling time
)
UNITS = {
    "volume_mm3": "mm3",
    "long_axis_mm": "mm",
    "short_axis_mm": "mm",
    "mean_diameter_mm": "mm",
    "mean_hu": "[hnsf'U]",
    "solid_volume_mm3": "mm3",
    "solid_mean_diameter_mm": "mm",
    "volume_change_percent": "%",
    "vdt_days": "d",
    "diameter_change_mm": "mm",
}
FOLLOW_UP_KEYS = {"volume_change_percent", "vdt_days", "diameter_change_mm"}


def _tool_missing(name: str) -> str | None:
    try:
        find_tool(name, "")
    except MissingToolError as exc:
        return str(exc)
    return None


needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))
needs_dsr2xml = pytest.mark.skipif(_tool_missing("dsr2xml") is not None, reason="dcmtk's dsr2xml is not installed")


@dataclass(frozen=True)
class TimePoint:
    """One written time point: CT, SEG, SR and what they were made from."""

    name: str
    phantom: Phantom
    ct: Image
    seg_path: Path
    sr_path: Path
    items: tuple[NoduleReportItem, ...]
    segment_of: dict[str, int]  # tracking id -> segment number in this time point's SEG
    nodule_id_of: dict[str, int]  # tracking id -> phantom nodule id
    write_seconds: float


def _phantom(follow_up: bool) -> Phantom:
    nodules = tuple(
        NoduleSpec(after if follow_up else before, kind, lung="right", position=position)
        for _, kind, before, after, position in NODULES
    )
    center = (105.0, 0.0, 28.0)  # a reduced field of view around the right upper lung
    if follow_up:  # head-to-feet slices, finer grid, other noise
        direction = AXIAL @ np.diag([1.0, 1.0, -1.0])
        spec = PhantomSpec((72, 88, 48), (0.9, 0.9, 1.25), direction, center, seed=7, nodules=nodules)
    else:
        spec = PhantomSpec((64, 80, 40), (1.0, 1.0, 1.5), center_ras=center, seed=3, nodules=nodules)
    return generate_chest_phantom(spec)


def _labels(order: tuple[int, ...]) -> list[SegmentLabel]:
    """One SEG label per nodule id, named after its tracking id, listed in ``order`` (= segment number order)."""
    return [
        SegmentLabel(
            nodule_id,
            NODULES[nodule_id - 1][0],
            (1.0, 0.6, 0.1),
            category=CodedTerm("49755003", "SCT", "Morphologically Abnormal Structure"),
            type=CodedTerm("27925004", "SCT", "Nodule"),
        )
        for nodule_id in order
    ]


def _segment_numbers(seg_path: Path) -> dict[str, int]:
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    return {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}


def _write_time_point(folder: Path, name: str, prior: TimePoint | None) -> TimePoint:
    follow_up = prior is not None
    phantom = _phantom(follow_up)
    assert all(n["fully_in_field_of_view"] and n["mask_voxels"] > 20 for n in phantom.truth["nodules"])
    date = FOLLOW_UP_DATE if follow_up else BASELINE_DATE
    write_dicom_series(phantom.ct, folder / "ct", patient_id=PATIENT_ID, study_date=date, uid_seed=f"track-{name}")
    ct = read_dicom_series(folder / "ct")
    labelmap = ct.with_array(phantom.nodule_ids.array, source_files=(), modality="")
    order = (3, 1, 2) if follow_up else (1, 2, 3)
    seg_path = write_dicom_seg(
        labelmap, ct, _labels(order), folder / "seg.dcm", algorithm_name="MedAI-NoduleSeg", algorithm_version="1.0"
    )
    segment_of = _segment_numbers(seg_path)
    nodule_id_of = {tracking_id: index for index, (tracking_id, *_rest) in enumerate(NODULES, start=1)}
    voxel_mm3 = ct.voxel_volume_mm3
    items = []
    for truth, (tracking_id, kind, *_rest) in zip(phantom.truth["nodules"], NODULES, strict=True):
        mask = phantom.nodule_ids.array == truth["id"]
        volume = float(np.count_nonzero(mask)) * voxel_mm3
        diameter = float(truth["diameter_mm"])
        fields: dict[str, object] = {}
        if prior is not None:
            before = next(i for i in prior.items if i.tracking_id == tracking_id)
            ratio = volume / before.volume_mm3
            days = (FOLLOW_UP_DATE - BASELINE_DATE).days
            fields = {
                "volume_change_percent": (ratio - 1.0) * 100.0,
                "vdt_days": days * math.log(2.0) / math.log(ratio) if ratio > 1.0 else None,
                "diameter_change_mm": diameter - before.mean_diameter_mm,
            }
        category = "4B" if prior is not None and tracking_id == "N1" else ("3" if diameter >= 6 else "2")
        items.append(
            NoduleReportItem(
                tracking_id=tracking_id,
                tracking_uid=tracking_uid_for(f"{PATIENT_ID}/{tracking_id}"),
                segment_number=segment_of[tracking_id],
                kind=kind,
                volume_mm3=volume,
                long_axis_mm=diameter + 0.3,
                short_axis_mm=diameter - 0.3,
                mean_diameter_mm=diameter,
                mean_hu=float(phantom.ct.array[mask].mean()),
                center_ras=tuple(truth["center_ras"]),
                solid_volume_mm3=truth["solid_mask_volume_mm3"] if kind == "part-solid" else None,
                solid_mean_diameter_mm=truth["solid_diameter_mm"] if kind == "part-solid" else None,
                lung_rads=category,
                lung_rads_reason=f"{kind} nodule, mean diameter {diameter:.1f} mm",
                **fields,
            )
        )
    start = time.perf_counter()
    sr_path = write_tracking_sr(
        folder / "sr.dcm",
        ct,
        seg_path,
        items,
        time_point=name,
        exam_lung_rads=max(i.lung_rads for i in items if i.lung_rads),
        observer_name="Reader^Test",
        include_image_library=not follow_up,
    )
    seconds = time.perf_counter() - start
    return TimePoint(name, phantom, ct, seg_path, sr_path, tuple(items), segment_of, nodule_id_of, seconds)


@pytest.fixture(scope="module")
def time_points(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TimePoint]:
    """Baseline and follow-up of one patient, each with CT, SEG and tracking SR on disk."""
    root = tmp_path_factory.mktemp("tracking-sr")
    baseline = _write_time_point(root / "baseline", "baseline", None)
    follow_up = _write_time_point(root / "follow-up", "follow-up", baseline)
    for point in (baseline, follow_up):
        print(
            f"\n{point.name}: SR {point.sr_path.stat().st_size / 1024:.1f} kB written in {point.write_seconds:.2f} s, "
            f"{len(point.items)} nodules, segments {point.segment_of}"
        )
    return {"baseline": baseline, "follow-up": follow_up}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- conformance --------------------------------------------------------------------------------------------
@needs_dciodvfy
@pytest.mark.parametrize("name", ["baseline", "follow-up"])
def test_dciodvfy_reports_no_error(time_points: dict[str, TimePoint], name: str) -> None:
    """dicom3tools validates each SR as a Comprehensive 3D SR without errors."""
    report = run_dciodvfy(time_points[name].sr_path)
    print(f"\n{name}: dciodvfy {report.iod!r}, {len(report.errors)} errors, {len(report.warnings)} warnings")
    assert report.iod == "Comprehensive3DSR", report.output
    assert report.errors == (), report.output
    # The only warnings allowed are about the private coding scheme, which dciodvfy cannot know.
    assert all(PRIVATE_SCHEME in warning for warning in report.warnings), report.output


@needs_dsr2xml
@pytest.mark.parametrize("name", ["baseline", "follow-up"])
def test_dsr2xml_parses_the_report(time_points: dict[str, TimePoint], name: str) -> None:
    """dcmtk parses each SR (content item errors abort it) and its XML shows every tracking id and UID."""
    point = time_points[name]
    result = run_dsr2xml(point.sr_path)
    print(f"\n{name}: dsr2xml exit {result.returncode}, {len(result.xml)} characters of XML")
    assert result.returncode == 0 and result.ok, result.errors
    for item in point.items:
        assert f">{item.tracking_id}<" in result.xml
        assert item.tracking_uid in result.xml
    assert "Imaging Measurement Report" in result.xml


@needs_dsr2xml
def test_dsr2xml_rejects_a_broken_report(time_points: dict[str, TimePoint], tmp_path: Path) -> None:
    """The dsr2xml check can fail: a content item without its Value Type is reported as an error."""
    ds = pydicom.dcmread(time_points["baseline"].sr_path)
    measurements = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    del measurements.ContentSequence[0].ContentSequence[0].ValueType
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken)
    result = run_dsr2xml(broken)
    assert not result.ok and result.errors, (result.returncode, result.errors)


# ---- read-back ----------------------------------------------------------------------------------------------
def test_tracking_uids_link_the_time_points(time_points: dict[str, TimePoint]) -> None:
    """highdicom reads the same Tracking UID for each nodule in both reports; nodules have distinct UIDs."""
    groups = {name: read_tracking_sr(point.sr_path) for name, point in time_points.items()}
    uids = {name: {g["tracking_id"]: g["tracking_uid"] for g in found} for name, found in groups.items()}
    assert list(uids["baseline"]) == ["N1", "N2", "N3"]
    assert uids["baseline"] == uids["follow-up"]
    assert len(set(uids["baseline"].values())) == 3
    for tracking_id, uid in uids["baseline"].items():
        assert uid == tracking_uid_for(f"{PATIENT_ID}/{tracking_id}")
    headers = {name: pydicom.dcmread(point.sr_path, stop_before_pixels=True) for name, point in time_points.items()}
    assert headers["baseline"].StudyInstanceUID != headers["follow-up"].StudyInstanceUID
    assert {h.PatientID for h in headers.values()} == {PATIENT_ID}
    print(f"\ntracking UIDs shared by both reports: {uids['baseline']}")


@pytest.mark.parametrize("name", ["baseline", "follow-up"])
def test_measurements_and_evaluations_round_trip(time_points: dict[str, TimePoint], name: str) -> None:
    """Values, units, kind, Lung-RADS category and reason come back as written; change values only at follow-up."""
    point = time_points[name]
    groups = {g["tracking_id"]: g for g in read_tracking_sr(point.sr_path)}
    for item in point.items:
        group = groups[item.tracking_id]
        written = item.measurement_values()
        read = group["measurements"]
        assert set(read) == set(written)
        for key, value in written.items():
            assert read[key]["value"] == pytest.approx(value, rel=1e-12, abs=1e-12)
            assert read[key]["unit"] == UNITS[key]
        assert group["kind"] == item.kind.value
        assert group["lung_rads"] == item.lung_rads
        assert group["lung_rads_reason"] == item.lung_rads_reason
        assert group["time_point"] == name
        has_solid_part = item.kind.value == "part-solid"
        assert ("solid_volume_mm3" in read) == has_solid_part
        if name == "baseline":
            assert not FOLLOW_UP_KEYS & set(read)
    if name == "follow-up":
        assert groups["N1"]["measurements"]["vdt_days"]["value"] > 0  # growing
        assert groups["N1"]["measurements"]["volume_change_percent"]["value"] > 25
        assert "vdt_days" not in groups["N3"]["measurements"]  # shrinking: no doubling time
        assert groups["N3"]["measurements"]["volume_change_percent"]["value"] < 0
        print(
            f"\nfollow-up N1: volume {groups['N1']['measurements']['volume_mm3']['value']:.1f} mm3, change "
            f"{groups['N1']['measurements']['volume_change_percent']['value']:+.1f} %, VDT "
            f"{groups['N1']['measurements']['vdt_days']['value']:.0f} d"
        )
    expected_exam = "4B" if name == "follow-up" else "3"
    assert read_exam_lung_rads(point.sr_path) == expected_exam


@pytest.mark.parametrize("name", ["baseline", "follow-up"])
def test_groups_reference_the_nodules_segment_and_source_images(time_points: dict[str, TimePoint], name: str) -> None:
    """Each group points at its time point's SEG and at the segment whose voxels are that nodule, with the CT
    images the segment was derived from; the CT series and the SEG are the SR's evidence."""
    import highdicom as hd

    point = time_points[name]
    seg = hd.seg.segread(point.seg_path)
    ct_uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in point.ct.source_files]
    for group in read_tracking_sr(point.sr_path):
        tracking_id = group["tracking_id"]
        assert group["seg_sop_instance_uid"] == str(seg.SOPInstanceUID)
        assert group["segment_number"] == point.segment_of[tracking_id]
        segment = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=ct_uids,
            segment_numbers=[group["segment_number"]],
            combine_segments=True,
            relabel=True,
        )
        nodule = point.phantom.nodule_ids.array == point.nodule_id_of[tracking_id]
        assert np.array_equal(np.asarray(segment) > 0, nodule)
        slices = np.flatnonzero(nodule.any(axis=(1, 2)))
        assert sorted(group["source_sop_instance_uids"]) == sorted(ct_uids[k] for k in slices)
    sr = hd.sr.srread(point.sr_path)
    evidence = {uids[2] for uids in sr.get_evidence()}
    assert evidence == {*ct_uids, str(seg.SOPInstanceUID)}
    header = pydicom.dcmread(point.sr_path, stop_before_pixels=True)
    assert header.SOPClassUID == COMPREHENSIVE_3D_SR
    assert header.StudyInstanceUID == point.ct.metadata["StudyInstanceUID"]
    assert PRIVATE_SCHEME in {item.CodingSchemeDesignator for item in header.CodingSchemeIdentificationSequence}


# ---- identifiers and bad input ------------------------------------------------------------------------------
def test_tracking_uid_for_is_deterministic() -> None:
    """The same seed gives the same valid UID on every run; another seed gives another UID."""
    from pydicom.uid import UID

    first = tracking_uid_for("P1/1.2.3/N1")
    assert first == tracking_uid_for("P1/1.2.3/N1")
    assert first != tracking_uid_for("P1/1.2.3/N2")
    assert UID(first).is_valid
    with pytest.raises(InputError, match="non-empty seed"):
        tracking_uid_for("  ")


def _rewrite_items(point: TimePoint, **changes: object) -> list[NoduleReportItem]:
    return [replace(point.items[0], **changes), *point.items[1:]]


def test_bad_input_raises_and_leaves_no_file(time_points: dict[str, TimePoint], tmp_path: Path) -> None:
    """Non-DICOM source, duplicates, a foreign SEG or an unknown segment: InputError naming the fix, no file."""
    baseline, follow_up = time_points["baseline"], time_points["follow-up"]
    target = tmp_path / "sr.dcm"
    cases = {
        "not read from DICOM": (baseline.phantom.ct, baseline.seg_path, baseline.items),
        "more than once": (baseline.ct, baseline.seg_path, _rewrite_items(baseline, tracking_id="N2")),
        "tracking UID": (
            baseline.ct,
            baseline.seg_path,
            _rewrite_items(baseline, tracking_uid=baseline.items[1].tracking_uid),
        ),
        "segment number": (baseline.ct, baseline.seg_path, _rewrite_items(baseline, segment_number=2)),
        "not made from this CT": (follow_up.ct, baseline.seg_path, follow_up.items),
        "not in the SEG": (baseline.ct, baseline.seg_path, _rewrite_items(baseline, segment_number=9)),
        "nodule-free exam": (baseline.ct, None, []),  # no items needs the exam category
        "without nodules": (baseline.ct, baseline.seg_path, []),
        "give seg_path": (baseline.ct, None, baseline.items),
    }
    for message, (source, seg_path, items) in cases.items():
        with pytest.raises(InputError, match=message):
            write_tracking_sr(target, source, seg_path, items)
        assert _leftovers(tmp_path) == [], message
    with pytest.raises(InputError, match="Lung-RADS"):
        write_tracking_sr(target, baseline.ct, baseline.seg_path, baseline.items, exam_lung_rads="5")
    assert _leftovers(tmp_path) == []


@needs_dciodvfy
def test_a_nodule_free_exam_gets_a_valid_report(time_points: dict[str, TimePoint], tmp_path: Path) -> None:
    """No nodule: no SEG, and an SR whose one group (TID 1501, no ROI) says none was found, with the category."""
    path = write_tracking_sr(
        tmp_path / "negative.dcm", time_points["baseline"].ct, None, [], exam_lung_rads="1", reading_priority=5
    )
    report = run_dciodvfy(path)
    assert report.ok, report.errors
    assert run_dsr2xml(path).ok
    assert read_tracking_sr(path) == [] and read_exam_lung_rads(path) == "1" and read_reading_priority(path) == 5
    ds = pydicom.dcmread(path)
    assert (
        ds.SOPClassUID == COMPREHENSIVE_3D_SR
        and ds.StudyInstanceUID == time_points["baseline"].ct.metadata["StudyInstanceUID"]
    )
    evidence = {
        str(item.ReferencedSOPClassUID)
        for s in ds.CurrentRequestedProcedureEvidenceSequence
        for series in s.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {str(pydicom.dcmread(time_points["baseline"].ct.source_files[0]).SOPClassUID)}


def test_items_validate_their_values() -> None:
    """An item is never half-valid: impossible values raise InputError when it is built."""
    good = {
        "tracking_id": "N1",
        "tracking_uid": tracking_uid_for("item-test"),
        "segment_number": 1,
        "kind": "solid",
        "volume_mm3": 100.0,
        "long_axis_mm": 6.5,
        "short_axis_mm": 5.5,
        "mean_diameter_mm": 6.0,
    }
    assert NoduleReportItem(**good).kind.value == "solid"
    bad = {
        "not a valid DICOM UID": {"tracking_uid": "not-a-uid"},
        "is not one of": {"kind": "calcified"},
        "short axis": {"short_axis_mm": 7.0},
        "growing nodule": {"vdt_days": 300.0},
        "growing nodule ": {"vdt_days": 300.0, "volume_change_percent": -5.0},
        "Lung-RADS v2022": {"lung_rads": "5"},
        "without a lung_rads": {"lung_rads_reason": "why"},
        "volume_mm3 must be >": {"volume_mm3": 0.0},
        "Segment number": {"segment_number": 0},
    }
    for message, change in bad.items():
        with pytest.raises(InputError, match=message.strip()):
            NoduleReportItem(**{**good, **change})


def test_reading_a_file_that_is_no_report_raises(time_points: dict[str, TimePoint], tmp_path: Path) -> None:
    """A CT image, a SEG or a missing file give InputError, not a highdicom traceback."""
    point = time_points["baseline"]
    for path in (point.ct.source_files[0], point.seg_path, tmp_path / "missing.dcm"):
        with pytest.raises(InputError):
            read_tracking_sr(path)
