"""The decision SR of `medai view`: a reader's decisions on a DICOM SEG written by MedAI's own output writer.

A 20-slice CT series, a label map segmented into a result folder (``write_outputs`` with ``dicom-seg``), decisions
saved in the folder's store, the store closed and opened again (a server restart), then the SR exported. Checks:
dciodvfy (no error; warnings only about MedAI's private coding scheme) and dcmtk's dsr2xml accept it; pydicom finds
the same patient and study as the CT, the SEG in the evidence and in the content tree, the accepted finding with
its reader, comment and segment number; decisions on an older result are left out; bad input raises InputError
without leaving a file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_test_data import GEOMETRIES, LABELS, dciodvfy_missing_reason, make_labelmap, make_source

from MedAIExtension.dicom.sr import PRIVATE_SCHEME
from MedAIExtension.dicom.validation import run_dciodvfy, run_dsr2xml
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.review.store.decisions import DecisionStore, result_reference
from MedAIExtension.segmentation.outputs import write_outputs
from MedAIExtension.view.decision_sr import read_decision_sr, write_decision_sr

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))
needs_dsr2xml = pytest.mark.skipif(shutil.which("dsr2xml") is None, reason="dcmtk's dsr2xml is not installed")


@dataclass(frozen=True)
class Exported:
    source: Image
    result: Path
    seg: pydicom.Dataset
    sr_path: Path
    sr: pydicom.Dataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    folder = tmp_path_factory.mktemp("decision-sr")
    source = make_source(folder / "ct", GEOMETRIES["axial_ascending"])
    result = folder / "result"
    write_outputs(make_labelmap(source), LABELS, result, ["dicom-seg"], source=source, algorithm_name="MedAI-TestNet")
    reference = result_reference(result)
    with DecisionStore.for_result(result) as store:
        store.add("rejected", "dr_b", finding_id="Nodule", comment="looked like a vessel", result_ref="1.2.3.old")
        store.add("rejected", "dr_b", finding_id="Nodule", result_ref=reference)
        store.add("accepted", "dr_a", finding_id="Nodule", comment="solid nodule, 8 mm", result_ref=reference)
        store.add("commented", "Doe^Jane", finding_id="Lung", comment="motion at the base ≥ 2 mm", result_ref=reference)
        store.add("accepted", "dr_a", result_ref=reference)
    with DecisionStore.for_result(result) as store:  # a restart: only what was committed counts
        sr_path = write_decision_sr(store, result, folder / "decisions.dcm", source=folder / "ct")
    seg = pydicom.dcmread(result / "segmentation.dcm", stop_before_pixels=True)
    return Exported(source, result, seg, sr_path, pydicom.dcmread(sr_path))


def _items(sequence: pydicom.Sequence) -> list[pydicom.Dataset]:
    out = []
    for item in sequence:
        out.append(item)
        out.extend(_items(item.get("ContentSequence", [])))
    return out


def _meaning(item: pydicom.Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning)


@needs_dciodvfy
def test_dciodvfy_reports_no_error(exported: Exported) -> None:
    report = run_dciodvfy(exported.sr_path)
    print(f"\ndciodvfy {report.iod!r}, {len(report.errors)} errors, {len(report.warnings)} warnings")
    assert report.iod == "ComprehensiveSR", report.output
    assert report.errors == (), report.output
    assert all(PRIVATE_SCHEME in warning for warning in report.warnings), report.output


@needs_dsr2xml
def test_dsr2xml_parses_it(exported: Exported) -> None:
    result = run_dsr2xml(exported.sr_path)
    assert result.ok, result.errors
    assert [w for w in result.warnings if "Specific Character Set" not in w] == [], result.warnings
    assert "solid nodule, 8 mm" in result.xml


def test_sr_joins_the_study_and_references_the_seg(exported: Exported) -> None:
    sr, seg = exported.sr, exported.seg
    assert str(sr.SOPClassUID) == COMPREHENSIVE_SR
    ct = pydicom.dcmread(exported.source.source_files[0], stop_before_pixels=True)
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        assert str(getattr(sr, keyword)) == str(getattr(ct, keyword)), keyword
    assert str(sr.SeriesInstanceUID) not in (str(ct.SeriesInstanceUID), str(seg.SeriesInstanceUID))
    evidence = {
        str(instance.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert str(seg.SOPInstanceUID) in evidence and str(ct.SOPInstanceUID) in evidence
    composite = [i for i in _items(sr.ContentSequence) if i.ValueType == "COMPOSITE"]
    assert [str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in composite] == [str(seg.SOPInstanceUID)]


def test_accepted_finding_reader_and_segment_are_in_the_sr(exported: Exported) -> None:
    """Read with pydicom alone: the Nodule container holds ACCEPTED, dr_a, the comment and SEG segment 3."""
    findings = [i for i in exported.sr.ContentSequence if _meaning(i) == "Review of an AI finding"]
    nodule = next(f for f in findings if any(getattr(c, "TextValue", None) == "Nodule" for c in f.ContentSequence))
    current = [c for c in nodule.ContentSequence if c.ValueType == "CODE" and _meaning(c) == "Reader decision"]
    assert [str(c.ConceptCodeSequence[0].CodeValue) for c in current] == ["ACCEPTED"]
    segment = next(c for c in nodule.ContentSequence if c.ValueType == "IMAGE")
    reference = segment.ReferencedSOPSequence[0]
    assert str(reference.ReferencedSOPInstanceUID) == str(exported.seg.SOPInstanceUID)
    nodule_number = next(s.SegmentNumber for s in exported.seg.SegmentSequence if s.SegmentLabel == "Nodule")
    assert int(reference.ReferencedSegmentNumber) == int(nodule_number)
    entries = [c for c in nodule.ContentSequence if _meaning(c) == "Reader decision entry"]
    assert len(entries) == 2  # the decision on the older result is left out
    last = _items(entries[-1].ContentSequence)
    assert "dr_a^" in [str(i.PersonName) for i in last if i.ValueType == "PNAME"]
    assert "solid nodule, 8 mm" in [i.TextValue for i in last if i.ValueType == "TEXT"]
    assert len(str(entries[-1].ObservationDateTime)) >= 14


def test_read_back_matches_the_store(exported: Exported) -> None:
    subjects = {(s.scope, s.finding_id): s for s in read_decision_sr(exported.sr_path)}
    with DecisionStore.for_result(exported.result) as store:
        reference = result_reference(exported.result)
        latest = store.latest(result_ref=reference)
        history = store.history(result_ref=reference)
    assert set(subjects) == set(latest) == {("study", ""), ("finding", "Nodule"), ("finding", "Lung")}
    for key, record in latest.items():
        subject = subjects[key]
        assert subject.decision == record.decision
        mine = [r for r in history if (r.scope, r.finding_id) == key]
        assert [(e.decision, e.reader, e.comment) for e in subject.entries] == [
            (r.decision, r.reader, r.comment) for r in mine
        ]
    assert subjects[("finding", "Lung")].entries[0].comment == "motion at the base ≥ 2 mm"
    assert subjects[("finding", "Lung")].segment_number is not None
    assert subjects[("study", "")].segment_number is None


def test_bad_exports_raise_input_error_and_leave_no_file(exported: Exported, tmp_path: Path) -> None:
    empty = tmp_path / "empty-result"
    shutil.copytree(exported.result, empty, ignore=shutil.ignore_patterns("review"))
    target = tmp_path / "out.dcm"
    with DecisionStore.for_result(empty) as store:
        with pytest.raises(InputError, match="No decision was recorded"):
            write_decision_sr(store, empty, target)
        store.add("accepted", "dr_a", result_ref="1.2.3.another-result")
        with pytest.raises(InputError, match="No decision was recorded"):
            write_decision_sr(store, empty, target)
    no_seg = tmp_path / "nifti-result"
    no_seg.mkdir()
    with DecisionStore.for_result(no_seg) as store:
        store.add("accepted", "dr_a")
        with pytest.raises(InputError, match="has no DICOM SEG or Parametric Map"):
            write_decision_sr(store, no_seg, target)
        other = make_source(tmp_path / "other-ct", GEOMETRIES["axial_ascending"], seed=1)
        written = write_decision_sr(store, no_seg, tmp_path / "from-source.dcm", source=other)
        assert read_decision_sr(written)[0].decision == "accepted"
    with DecisionStore.for_result(exported.result) as store:
        with pytest.raises(InputError, match="belongs to study"):
            write_decision_sr(store, exported.result, target, source=other)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".dcm") == ["from-source.dcm"]


def test_a_verdict_on_an_explanation_references_its_parametric_map(tmp_path: Path) -> None:
    """``medai view`` on a ``medai explain`` result: the reader's verdict on the map as a whole, the SR joining the
    study of the Parametric Map and referencing it."""
    from MedAIExtension.dicom.parametric_map import write_parametric_map

    source = make_source(tmp_path / "ct", GEOMETRIES["axial_ascending"])
    folder = tmp_path / "explanation"
    (folder / "dicom").mkdir(parents=True)
    heat = source.with_array(np.linspace(0, 1, source.array.size, dtype=np.float32).reshape(source.shape))
    pm_path = write_parametric_map(
        heat,
        source,
        folder / "dicom" / "ct_gradcam_pm.dcm",
        method="gradcam",
        target="Nodule",
        model_name="MedAI-TestNet",
        model_version="1.0",
    )
    name = "dicom/ct_gradcam_pm.dcm"
    reference = result_reference(folder, name)
    pm = pydicom.dcmread(pm_path, stop_before_pixels=True)
    assert reference == pm.SOPInstanceUID
    with DecisionStore.for_result(folder) as store:
        store.add("rejected", "dr_a", comment="the map sits on the rib, not the nodule", result_ref=reference)
        sr_path = write_decision_sr(store, folder, tmp_path / "decisions.dcm", seg_name=name)
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == pm.StudyInstanceUID
    referenced = [item for item in _items(sr.ContentSequence) if "ReferencedSOPSequence" in item]
    assert [str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in referenced] == [reference]
    (study,) = read_decision_sr(sr_path)
    assert (study.scope, study.decision) == ("study", "rejected")
    assert study.entries[0].comment == "the map sits on the rib, not the nodule"
    if dciodvfy_missing_reason() is None:
        report = run_dciodvfy(sr_path)
        assert report.errors == (), report.output
