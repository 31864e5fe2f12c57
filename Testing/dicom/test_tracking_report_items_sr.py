"""The reading in the tracking SR (issue 17): finding site with laterality and lung zone, "Mass" as finding type,
the location, growth, NELSON, borderline and management texts, and the exam's management.

Checks: dciodvfy accepts the SR (only warnings about the private coding scheme), highdicom reads the finding
site's laterality code back (SCT 24028007 Right / 7771000 Left), :func:`read_tracking_sr` returns every reading
field, and bad reading values raise InputError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from dicom_test_data import GEOMETRIES, LABELS, dciodvfy_missing_reason, make_labelmap, make_source

from MedAIExtension.dicom.seg import segment_value_map, write_dicom_seg
from MedAIExtension.dicom.sr import (
    PRIVATE_SCHEME,
    NoduleReportItem,
    read_exam_lung_rads,
    read_exam_management,
    read_tracking_sr,
    tracking_uid_for,
    write_tracking_sr,
)
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image

needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))

MANAGEMENT = "Diagnostic chest CT with or without contrast; tissue sampling."
EXAM_MANAGEMENT = "3-month LDCT; PET/CT may be used when there is a solid component ≥ 8 mm."


@dataclass(frozen=True)
class Written:
    """A CT, its SEG and an SR with two readings: a right upper-zone nodule and a left lower-zone mass."""

    source: Image
    seg_path: Path
    sr_path: Path
    items: tuple[NoduleReportItem, ...]


def _item(**changes: object) -> NoduleReportItem:
    fields: dict[str, object] = {
        "tracking_id": "N1",
        "tracking_uid": tracking_uid_for("reading-test/N1"),
        "segment_number": 1,
        "kind": "solid",
        "volume_mm3": 107.0,
        "long_axis_mm": 6.4,
        "short_axis_mm": 5.4,
        "mean_diameter_mm": 5.9,
        "lung_rads": "2",
        "lung_rads_reason": "solid nodule, baseline, mean diameter 5.9 mm (< 6 mm) → 2",
        "laterality": "right",
        "lung_zone": "upper",
        "location": "right upper zone, image 7",
        "management": "Continue annual screening with LDCT in 12 months.",
        "growth": "stable within measurement error",
        "nelson": "indeterminate (volume 107 mm³ in 50-500 mm³)",
        "borderline": "mean diameter 5.9 mm is within 0.1 mm of a Lung-RADS threshold",
    }
    fields.update(changes)
    return NoduleReportItem(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    folder = tmp_path_factory.mktemp("reading-sr")
    source = make_source(folder / "ct", GEOMETRIES["axial_ascending"])
    seg_path = write_dicom_seg(
        make_labelmap(source), source, list(LABELS), folder / "seg.dcm", algorithm_name="T", algorithm_version="1"
    )
    numbers = sorted(segment_value_map(pydicom.dcmread(seg_path)))  # the SEG's segment numbers
    items = (
        _item(segment_number=numbers[0]),
        _item(
            tracking_id="N2",
            tracking_uid=tracking_uid_for("reading-test/N2"),
            segment_number=numbers[1],
            volume_mm3=30000.0,
            long_axis_mm=41.0,
            short_axis_mm=35.0,
            mean_diameter_mm=38.0,
            lung_rads="4B",
            lung_rads_reason="solid nodule, baseline, mean diameter 38.0 mm (≥ 15 mm) → 4B",
            laterality="left",
            lung_zone="lower",
            location="left lower zone, image 15",
            mass=True,
            management=MANAGEMENT,
            growth="mass, volume +12 % in 180 days (no doubling time for a mass)",
            nelson="positive (volume 30000 mm³ > 500 mm³)",
            borderline=None,
        ),
    )
    sr_path = write_tracking_sr(
        folder / "sr.dcm", source, seg_path, items, exam_lung_rads="4B", exam_management=EXAM_MANAGEMENT
    )
    return Written(source, seg_path, sr_path, items)


@needs_dciodvfy
def test_the_sr_with_readings_passes_dciodvfy(written: Written) -> None:
    report = run_dciodvfy(written.sr_path)
    assert report.iod == "Comprehensive3DSR", report.output
    assert report.errors == (), report.output
    assert all(PRIVATE_SCHEME in warning for warning in report.warnings), report.output


def test_finding_site_laterality_reads_back_with_highdicom(written: Written) -> None:
    """The SR's finding sites: Lung with the side's SCT laterality code, then the zone of lung with the same."""
    sr = hd.sr.srread(written.sr_path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    expected = {
        "N1": ("24028007", "281392002", "27925004"),  # Right, Upper zone of lung, Nodule
        "N2": ("7771000", "281394001", "4147007"),  # Left, Lower zone of lung, Mass
    }
    assert sorted(g.tracking_identifier for g in groups) == ["N1", "N2"]
    for group in groups:
        side, zone, finding = expected[group.tracking_identifier]
        sites = group.finding_sites
        assert [site.value.value for site in sites] == ["39607008", zone]
        assert all(site.laterality is not None and site.laterality.value == side for site in sites)
        assert all(site.laterality.scheme_designator == "SCT" for site in sites)
        assert group.finding_type.value == finding


def test_read_tracking_sr_returns_the_reading(written: Written) -> None:
    groups = {g["tracking_id"]: g for g in read_tracking_sr(written.sr_path)}
    first, mass = groups["N1"], groups["N2"]
    assert (first["laterality"], first["lung_zone"], first["mass"]) == ("right", "upper", False)
    assert (mass["laterality"], mass["lung_zone"], mass["mass"]) == ("left", "lower", True)
    assert mass["finding_type"] == "Mass" and first["finding_type"] == "Nodule"
    for item in written.items:
        group = groups[item.tracking_id]
        for key in ("location", "management", "growth", "nelson", "borderline", "lung_rads_reason"):
            assert group[key] == getattr(item, key), key
    assert first["measurements"]["mean_diameter_mm"]["value"] == pytest.approx(5.9)
    assert read_exam_lung_rads(written.sr_path) == "4B"
    assert read_exam_management(written.sr_path) == EXAM_MANAGEMENT


def test_an_sr_without_readings_has_no_laterality(written: Written, tmp_path: Path) -> None:
    """Without a side the finding site is Lung alone (as before); the reader gives None, not a guess."""
    number = written.items[0].segment_number
    bare = _item(
        segment_number=number, laterality=None, lung_zone=None, location=None, growth=None, nelson=None, borderline=None
    )
    path = write_tracking_sr(tmp_path / "bare.dcm", written.source, written.seg_path, [bare])
    group = read_tracking_sr(path)[0]
    assert group["laterality"] is None and group["lung_zone"] is None and group["location"] is None
    assert [site["code"] for site in group["finding_sites"]] == ["39607008"]
    assert read_exam_management(path) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"laterality": "both"}, "laterality"),
        ({"lung_zone": "apical"}, "lung_zone"),
        ({"mass": "yes"}, "mass"),
    ],
)
def test_bad_reading_values_raise(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _item(**changes)


def test_reading_values_are_normalised() -> None:
    item = _item(laterality=" Right ", lung_zone="LOWER", growth="  ", management=" 6-month LDCT. ")
    assert (item.laterality, item.lung_zone, item.growth, item.management) == ("right", "lower", None, "6-month LDCT.")
