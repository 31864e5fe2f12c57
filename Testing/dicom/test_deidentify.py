"""De-identification (PS3.15 Basic Profile) of a real small study: a CT series carrying what a scanner writes,
its DICOM SEG, its tracking SR (TID 1500) and a Secondary Capture, all written with MedAI's own writers.

Checks: every attribute of Table E.1-1 is handled by its action at every nesting level, private tags, overlays
and curves are gone, every reference of the SEG, SR and SC still resolves to a written instance, the SR's
Tracking UIDs are remapped consistently, dciodvfy reports no new error, highdicom reads SEG and SR back, the
UID map is keyed and deterministic across runs, burned-in annotation is refused or skipped, and a date shift
keeps the interval between two studies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from dicom_test_data import LABELS, dciodvfy_missing_reason
from pydicom.dataset import Dataset
from pydicom.uid import UID

from MedAIExtension.deid import (
    DeidOptions,
    burned_in_reason,
    deidentify_dataset,
    deidentify_files,
    load_key,
    pseudonym,
    remap_uid,
)
from MedAIExtension.deid.profile import Action, attribute_type, load_profile, resolve_action
from MedAIExtension.dicom.secondary_capture import write_secondary_capture
from MedAIExtension.dicom.seg import write_dicom_seg
from MedAIExtension.dicom.sr import NoduleReportItem, read_tracking_sr, tracking_uid_for, write_tracking_sr
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import read_dicom_series, write_dicom_series
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image

KEY = b"medai-test-key-0123456789abcdef"
OTHER_KEY = b"another-test-key-0123456789abcd"
PATIENT_ID = "MRN-4711-SECRET"
PATIENT_NAME = "Doe^Jane^Q"
STUDY_DATE = dt.date(2025, 3, 14)
SECOND_STUDY_DATE = dt.date(2025, 9, 30)
needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))

#: What a scanner writes that identifies the patient, the staff or the site (keyword -> value).
SCANNER_ATTRIBUTES: dict[str, Any] = {
    "InstitutionName": "St. Example Hospital",
    "InstitutionAddress": "1 Main Street, Springfield",
    "InstitutionalDepartmentName": "Radiology East",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Grey^Meredith",
    "OperatorsName": "Tech^Tom",
    "AccessionNumber": "ACC20250314-77",
    "PatientBirthDate": "19610704",
    "PatientSex": "F",
    "PatientAge": "063Y",
    "PatientWeight": "71.5",
    "OtherPatientIDs": "OLD-MRN-99",
    "StationName": "CT-EAST-2",
    "DeviceSerialNumber": "SN-998877",
    "StudyDescription": "CT CHEST LOW DOSE Doe",
    "ProtocolName": "Lung screening Doe",
    "StudyID": "S-4711",
    "AcquisitionDate": "20250314",
    "AcquisitionTime": "093512",
    "InstanceCreationDate": "20250314",
    "InstanceCreationTime": "093600",
    "ImageComments": "patient Jane Doe, claustrophobic",
    "AdditionalPatientHistory": "smoker 40 pack-years",
    "MedicalRecordLocator": "ROOM 12",
}


def _add_scanner_attributes(path: Path) -> None:
    """Rewrite one CT file with identifying attributes, nested sequences, a private block and an overlay."""
    ds = pydicom.dcmread(path)
    for keyword, value in SCANNER_ATTRIBUTES.items():
        setattr(ds, keyword, value)
    request = Dataset()
    request.RequestedProcedureID = "RP-12345"
    request.ScheduledProcedureStepID = "SPS-777"
    request.AccessionNumber = "ACC20250314-77"
    ds.RequestAttributesSequence = [request]
    performed = Dataset()
    performed.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    performed.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.999001"
    ds.ReferencedPerformedProcedureStepSequence = [performed]
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced_study.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.999002"
    ds.ReferencedStudySequence = [referenced_study]
    person = Dataset()
    person.PersonIdentificationCodeSequence = [Dataset()]
    code = person.PersonIdentificationCodeSequence[0]
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "EMP-42", "99HOSP", "Tech Tom badge"
    person.InstitutionName = "St. Example Hospital"
    ds.OperatorIdentificationSequence = [person]
    block = ds.private_block(0x0029, "ACME SCANNER 1.0", create=True)
    block.add_new(0x10, "LO", "Jane Doe private copy")
    block.add_new(0x11, "UI", "1.2.826.0.1.3680043.8.498.999003")
    ds.add_new(0x60000010, "US", 4)  # Overlay Rows
    ds.add_new(0x60000011, "US", 4)  # Overlay Columns
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff\x00")
    ds.add_new(0x60004000, "LT", "Jane Doe overlay")
    ds.save_as(path, enforce_file_format=True)


def _write_ct(folder: Path, seed: str, date: dt.date) -> Image:
    lps = affine_from_parts(np.array([-20.0, 30.0, -100.0]), np.array((0.9, 0.9, 2.5)), np.eye(3))
    voxels = np.random.default_rng(7).integers(-1000, 300, (8, 24, 32)).astype(np.int16)
    paths = write_dicom_series(
        Image(voxels, LPS_TO_RAS @ lps, modality="CT"),
        folder,
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
        study_date=date,
        uid_seed=seed,
    )
    for path in paths:
        _add_scanner_attributes(path)
    return read_dicom_series(folder)


@dataclass(frozen=True)
class Study:
    """A written study: CT, SEG, SR, SC and the folder holding them."""

    root: Path
    ct: Image
    seg_path: Path
    sr_path: Path
    sc_folder: Path
    tracking_uids: tuple[str, ...]


def _labelmap(ct: Image) -> Image:
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[2:5, 6:12, 8:16] = 1
    labels[4:7, 14:20, 18:26] = 3
    return ct.with_array(labels, source_files=(), modality="")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """CT with scanner attributes, SEG and tracking SR of it, and a Secondary Capture, in one study."""
    root = tmp_path_factory.mktemp("deid-study")
    ct = _write_ct(root / "ct", "deid-ct", STUDY_DATE)
    labelmap = _labelmap(ct)
    (root / "seg").mkdir()
    (root / "sr").mkdir()
    seg_path = write_dicom_seg(
        labelmap, ct, LABELS, root / "seg" / "seg.dcm", algorithm_name="T", algorithm_version="1"
    )
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    segments = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    items = []
    for tracking_id, name in (("N1", "Lung"), ("N2", "Nodule")):
        items.append(
            NoduleReportItem(
                tracking_id=tracking_id,
                tracking_uid=tracking_uid_for(f"{PATIENT_ID}/{tracking_id}"),
                segment_number=segments[name],
                kind="solid",
                volume_mm3=100.0,
                long_axis_mm=7.0,
                short_axis_mm=5.0,
                mean_diameter_mm=6.0,
                lung_rads="3",
                lung_rads_reason="solid nodule 6 mm",
            )
        )
    sr_path = write_tracking_sr(root / "sr" / "sr.dcm", ct, seg_path, items, observer_name="Reader^Rita")
    frames = [np.zeros((24, 32, 3), dtype=np.uint8) for _ in range(2)]
    sc_folder = write_secondary_capture(
        frames, ct, root / "sc", series_description="MedAI key slices", slice_indices=[2, 5]
    )
    return Study(root, ct, seg_path, sr_path, sc_folder, tuple(i.tracking_uid for i in items))


def _inputs(study: Study) -> list[Path]:
    return [study.root / "ct", study.seg_path, study.sr_path, study.sc_folder]


@pytest.fixture(scope="module")
def outputs(study: Study, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The study de-identified once with KEY: the report and every output dataset by original SOP UID."""
    out = tmp_path_factory.mktemp("deid-out") / "anon"
    report = deidentify_files(_inputs(study), out, KEY)
    originals = {}
    for path in [*study.ct.source_files, study.seg_path, study.sr_path, *sorted(study.sc_folder.iterdir())]:
        ds = pydicom.dcmread(path)
        originals[str(ds.SOPInstanceUID)] = (Path(path), ds)
    written = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in report.written}
    pairs = {}
    for sop, (path, ds) in originals.items():
        new = remap_uid(sop, KEY)
        assert new in written, f"{path} was not written"
        pairs[sop] = (path, ds, written[new], pydicom.dcmread(written[new]))
    return {"report": report, "out": out, "pairs": pairs}


def _walk(ds: Dataset, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every element of ``ds`` at every nesting level, with the keywords of the enclosing sequences."""
    found = []
    for elem in ds:
        found.append((path, elem))
        if elem.VR == "SQ":
            for item in elem.value:
                found.extend(_walk(item, (*path, elem.keyword or str(elem.tag))))
    return found


def _values(ds: Dataset, tag: int) -> list[Any]:
    return [elem.value for _path, elem in _walk(ds) if int(elem.tag) == tag]


def _uids(ds: Dataset, keyword: str) -> set[str]:
    return {str(elem.value) for _path, elem in _walk(ds) if elem.keyword == keyword and elem.value}


# ---- the profile table ---------------------------------------------------------------------------------------
def test_profile_table_is_the_shipped_one() -> None:
    """The table comes from dicom-anonymizer's dicomfields_2026c with all its categories, and combined actions
    resolve by IOD type (Type 2 kept empty, Type 1 dummied, Type 3 removed)."""
    table = load_profile()
    actions = {action for _tag, action in table.rows()}
    assert {Action.D, Action.Z, Action.X, Action.U, Action.Z_D, Action.X_Z, Action.X_D, Action.X_Z_D} <= actions
    assert Action.X_Z_U in actions
    assert len(table.rows()) > 600
    assert table.action(0x00100010) is Action.Z  # Patient's Name
    assert table.action(0x0020000D) is Action.U  # Study Instance UID
    assert table.action(0x50000000 | 0x3000) is Action.X  # Curve Data, repeating group
    assert table.action(0x60023000) is Action.X  # Overlay Data, repeating group
    seg, sr, ct = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.2"
    assert resolve_action(Action.X_Z_D, attribute_type(seg, (), "DeviceSerialNumber")) is Action.D
    assert resolve_action(Action.X_Z_D, attribute_type(ct, (), "DeviceSerialNumber")) is Action.X
    assert resolve_action(Action.X_Z_D, attribute_type(sr, (), "ReferencedPerformedProcedureStepSequence")) is Action.Z
    assert resolve_action(Action.Z_D, attribute_type(sr, (), "ContentDate")) is Action.D
    assert resolve_action(Action.Z_D, attribute_type(ct, (), "ContentDate")) is Action.Z


# ---- every attribute of the table ----------------------------------------------------------------------------
def test_no_profile_attribute_survives_with_its_value(outputs: dict[str, Any]) -> None:
    """X: absent at any level; Z/D: empty or a dummy; U: remapped; private tags, overlays and curves gone."""
    table = load_profile()
    checked: dict[str, int] = {}
    for path, original, _out_path, new in outputs["pairs"].values():
        remaining = {int(elem.tag): elem for _p, elem in _walk(new)}
        for _p, elem in _walk(original):
            tag = int(elem.tag)
            action = table.action(tag)
            if action is None or elem.tag.is_private or elem.keyword in ("PatientID", "PatientName"):
                continue
            if not elem.value and elem.value != 0:
                continue
            values = _values(new, tag)
            kind = action.value
            if elem.VR == "SQ":
                if action is Action.X:
                    assert not values, (path.name, elem.keyword)
                continue
            if action is Action.X:
                assert tag not in remaining, (path.name, elem.keyword)
            elif action is Action.U:
                assert elem.value not in values, (path.name, elem.keyword)
                assert all(str(v).startswith("2.25.") for v in values if v), (path.name, elem.keyword)
            else:
                assert elem.value not in values, (path.name, elem.keyword, elem.value)
            checked[kind] = checked.get(kind, 0) + 1
        assert not [e for _p, e in _walk(new) if e.tag.is_private], path.name
        assert not [e for _p, e in _walk(new) if e.tag.group & 0xFF00 in (0x5000, 0x6000)], path.name
        assert new.PatientIdentityRemoved == "YES"
        assert new.PatientID == new.PatientName == pseudonym(PATIENT_ID, KEY)
        codes = [item.CodeValue for item in new.DeidentificationMethodCodeSequence]
        assert codes == ["113100"]
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        text = str(new)
        for secret in (PATIENT_ID, "Doe", "Jane", "St. Example", "Gregory", "SN-998877", "EMP-42", "Reader^Rita"):
            assert secret not in text, (path.name, secret)
    print(f"\nattributes checked per action: {checked}")
    assert {"X", "Z", "U", "X/Z/D"} <= set(checked)


# ---- references ----------------------------------------------------------------------------------------------
REFERENCE_KEYWORDS = ("ReferencedSOPInstanceUID", "ReferencedFrameOfReferenceUID")


def test_references_resolve_and_ids_are_consistent(outputs: dict[str, Any]) -> None:
    """Every reference in SEG, SR and SC points at a written instance, series or frame of reference; study,
    series and frame of reference agree between CT, SEG, SR and SC."""
    news = [new for *_rest, new in outputs["pairs"].values()]
    instances = {str(ds.SOPInstanceUID) for ds in news}
    series = {str(ds.SeriesInstanceUID) for ds in news}
    frames = {str(ds.FrameOfReferenceUID) for ds in news if "FrameOfReferenceUID" in ds}
    assert len({str(ds.StudyInstanceUID) for ds in news}) == 1
    assert len(frames) == 1
    resolved = 0
    for ds in news:
        if ds.Modality == "CT":
            continue
        for _path, elem in _walk(ds):
            if elem.keyword == "ReferencedSOPInstanceUID":
                assert str(elem.value) in instances, (ds.Modality, elem.value)
            elif elem.keyword == "SeriesInstanceUID":
                assert str(elem.value) in series
            elif elem.keyword in ("FrameOfReferenceUID", "ReferencedFrameOfReferenceUID"):
                assert str(elem.value) in frames
            else:
                continue
            resolved += 1
    assert resolved > 20
    modalities = {ds.Modality for ds in news}
    assert modalities == {"CT", "SEG", "SR", "OT"}


def test_tracking_uids_are_remapped_consistently(outputs: dict[str, Any], study: Study) -> None:
    """The SR's Tracking UIDs are the keyed remap of the originals; highdicom reads SEG and SR back."""
    import highdicom as hd

    pairs = outputs["pairs"].values()
    sr_path = next(out for path, _o, out, _n in pairs if path == study.sr_path)
    seg_path = next(out for path, _o, out, _n in pairs if path == study.seg_path)
    groups = read_tracking_sr(sr_path)
    assert [g["tracking_uid"] for g in groups] == [remap_uid(u, KEY) for u in study.tracking_uids]
    assert not set(study.tracking_uids) & {g["tracking_uid"] for g in groups}
    seg = hd.seg.segread(seg_path)
    assert all(g["seg_sop_instance_uid"] == str(seg.SOPInstanceUID) for g in groups)
    ct_uids = [remap_uid(str(pydicom.dcmread(f).SOPInstanceUID), KEY) for f in study.ct.source_files]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=ct_uids, combine_segments=True)
    assert np.asarray(pixels).shape[0] == len(ct_uids)
    sr = hd.sr.srread(sr_path)
    assert {uids[2] for uids in sr.get_evidence()} == {*ct_uids, str(seg.SOPInstanceUID)}
    names = [e.value for _p, e in _walk(pydicom.dcmread(sr_path)) if e.keyword == "PersonName"]
    assert names and all(str(n) != "Reader^Rita" for n in names)


@needs_dciodvfy
def test_dciodvfy_reports_no_new_errors(outputs: dict[str, Any]) -> None:
    """Every de-identified object has no dciodvfy error its original did not have."""
    seen: dict[str, str] = {}
    for path, original, out_path, _new in outputs["pairs"].values():
        if original.Modality in seen:
            continue
        before = {e.split(" - ", 1)[-1] for e in run_dciodvfy(path).errors}
        after = run_dciodvfy(out_path)
        new_errors = [e for e in after.errors if e.split(" - ", 1)[-1] not in before]
        assert not new_errors, (path, after.output)
        seen[original.Modality] = f"{after.iod}: {len(after.errors)} errors ({len(before)} before)"
    print(f"\ndciodvfy: {seen}")
    assert set(seen) == {"CT", "SEG", "SR", "OT"}


# ---- the keyed UID map -----------------------------------------------------------------------------------------
def test_uid_map_is_keyed_and_deterministic() -> None:
    """Same key → same valid 2.25 UID; another key → another; registered UIDs are kept."""
    original = "1.2.826.0.1.3680043.8.498.12345"
    first = remap_uid(original, KEY)
    assert first == remap_uid(original, KEY) and first.startswith("2.25.")
    assert UID(first).is_valid and len(first) <= 64
    assert remap_uid(original, OTHER_KEY) != first
    assert remap_uid("1.2.840.10008.5.1.4.1.1.2", KEY) == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    assert pseudonym(PATIENT_ID, KEY) == pseudonym(PATIENT_ID, KEY) != pseudonym(PATIENT_ID, OTHER_KEY)
    with pytest.raises(InputError, match="at least"):
        remap_uid(original, b"short")


def test_same_key_twice_and_a_later_seg_run(study: Study, outputs: dict[str, Any], tmp_path: Path) -> None:
    """The same key gives the same files; another key other UIDs; the SEG de-identified on its own in a later
    run into the same folder still references the CT de-identified earlier."""
    first = {p.relative_to(outputs["out"]) for p in outputs["report"].written}
    again = deidentify_files(_inputs(study), tmp_path / "again", KEY)
    assert {p.relative_to(tmp_path / "again") for p in again.written} == first
    other = deidentify_files(_inputs(study), tmp_path / "other", OTHER_KEY)
    assert not {p.relative_to(tmp_path / "other") for p in other.written} & first

    target = tmp_path / "split"
    ct_only = deidentify_files([study.root / "ct"], target, KEY)
    seg_later = deidentify_files([study.seg_path], target, KEY)
    ct_uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in ct_only.written}
    seg = pydicom.dcmread(seg_later.written[0])
    referenced = _uids(seg, "ReferencedSOPInstanceUID")
    assert referenced and referenced <= ct_uids
    assert seg.StudyInstanceUID == pydicom.dcmread(ct_only.written[0]).StudyInstanceUID
    assert len(list(target.iterdir())) == 1  # one study folder, no staging left


# ---- burned-in annotation, bad input, atomic output ------------------------------------------------------------
def test_burned_in_is_refused_or_skipped(study: Study, tmp_path: Path) -> None:
    """A burned-in image fails the whole run (nothing written) unless skip_burned_in leaves it out."""
    burned = tmp_path / "in" / "burned.dcm"
    burned.parent.mkdir()
    ds = pydicom.dcmread(study.ct.source_files[0])
    ds.BurnedInAnnotation = "YES"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.424242"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(burned, enforce_file_format=True)
    target = tmp_path / "out"
    with pytest.raises(InputError, match="burned-in") as error:
        deidentify_files([study.root / "ct", burned], target, KEY)
    assert str(burned) in str(error.value) and "--skip-burned-in" in str(error.value)
    assert not target.exists()
    report = deidentify_files([study.root / "ct", burned], target, KEY, DeidOptions(skip_burned_in=True))
    assert report.skipped == [(burned, "burned-in annotation: Burned In Annotation is YES")]
    assert len(report.written) == len(study.ct.source_files)
    sc = pydicom.dcmread(next(study.sc_folder.iterdir()))
    del sc.BurnedInAnnotation
    assert burned_in_reason(sc) is not None
    with pytest.raises(InputError, match="burned-in"):
        deidentify_dataset(sc, KEY)


def test_bad_inputs_raise_and_leave_nothing(study: Study, tmp_path: Path) -> None:
    """Missing input, a named non-DICOM file, output inside the input: InputError, no output folder."""
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    target = tmp_path / "out"
    cases = {
        "does not exist": [tmp_path / "missing"],
        "not a DICOM file": [study.seg_path, text],
    }
    for message, inputs in cases.items():
        with pytest.raises(InputError, match=message):
            deidentify_files(inputs, target, KEY)
        assert not target.exists()
    with pytest.raises(InputError, match="inside the input folder"):
        deidentify_files([study.root], study.root / "anon", KEY)
    assert not (study.root / "anon").exists()
    # Non-DICOM files inside a folder are skipped and reported.
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "README.txt").write_text("export notes")
    (folder / "seg.dcm").write_bytes(study.seg_path.read_bytes())
    report = deidentify_files([folder], target, KEY)
    assert [(p.name, why) for p, why in report.skipped] == [("README.txt", "not a DICOM file")]
    assert len(report.written) == 1


def test_write_error_leaves_nothing(study: Study, tmp_path: Path) -> None:
    """An error while writing (here: the progress callback cancels) removes the staging and the new folder."""
    target = tmp_path / "new" / "out"

    def cancel(fraction: float, message: str) -> None:
        if fraction > 0.5:
            raise InputError("cancelled by the test")

    with pytest.raises(InputError, match="cancelled"):
        deidentify_files([study.root / "ct"], target, KEY, progress=cancel)
    assert not (tmp_path / "new").exists()


# ---- dates -----------------------------------------------------------------------------------------------------
def test_date_shift_keeps_the_interval_between_studies(study: Study, tmp_path: Path) -> None:
    """With date_shift_days every DA/DT moves by the same days (interval and order kept) and 113107 is set;
    without it the study date is emptied."""
    second = _write_ct(tmp_path / "second", "deid-second", SECOND_STUDY_DATE)
    inputs = [study.root / "ct", second.source_files[0].parent]
    report = deidentify_files(inputs, tmp_path / "shifted", KEY, DeidOptions(date_shift_days=-1234))
    dates = {}
    for path in report.written:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        dates[str(ds.StudyInstanceUID)] = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        # An X attribute is kept, shifted, under the option.
        assert ds.AcquisitionDate == (dt.date(2025, 3, 14) - dt.timedelta(days=1234)).strftime("%Y%m%d")
        assert ds.PatientBirthDate == ""
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert len(dates) == 2
    first, last = sorted(dates.values())
    assert first == STUDY_DATE - dt.timedelta(days=1234)
    assert (last - first) == (SECOND_STUDY_DATE - STUDY_DATE)
    plain = deidentify_dataset(pydicom.dcmread(second.source_files[0]), KEY)
    assert plain.StudyDate == "" and "AcquisitionDate" not in plain
    with pytest.raises(InputError, match="non-zero"):
        deidentify_dataset(pydicom.dcmread(second.source_files[0]), KEY, DeidOptions(date_shift_days=0))


def test_series_descriptions_option_and_key_loading(study: Study, tmp_path: Path) -> None:
    """keep_series_descriptions keeps Series Description (removed by default); keys come from a file or the
    environment, never shown in messages, and a random key is flagged as not persistent."""
    ds = pydicom.dcmread(study.seg_path)
    kept = deidentify_dataset(pydicom.dcmread(study.seg_path), KEY, DeidOptions(keep_series_descriptions=True))
    assert kept.SeriesDescription == ds.SeriesDescription
    assert "SeriesDescription" not in deidentify_dataset(ds, KEY)
    key_file = tmp_path / "deid.key"
    key_file.write_text("  00112233445566778899aabbccddeeff\n")
    key_file.chmod(0o640)
    with pytest.raises(InputError, match="chmod 600") as loose:
        load_key(key_file)  # readable by the group: refused, as ssh refuses such private keys
    assert "00112233" not in str(loose.value)
    key_file.chmod(0o600)
    assert load_key(key_file) == (b"00112233445566778899aabbccddeeff", True)
    assert load_key(None, {"MEDAI_DEID_KEY": "environment-key-0123456789"}) == (b"environment-key-0123456789", True)
    key, persistent = load_key(None, {})
    assert len(key) == 32 and not persistent
    key_file.write_text("tiny-secret")
    with pytest.raises(InputError, match="at least") as error:
        load_key(key_file)
    assert "tiny-secret" not in str(error.value)
    with pytest.raises(InputError, match="Cannot read the file"):
        load_key(tmp_path / "nope.key")
