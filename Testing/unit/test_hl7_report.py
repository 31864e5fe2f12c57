"""The report a RIS takes (issue 21): plain text, HL7 v2.5.1 ORU^R01 and FHIR R4 DiagnosticReport of a nodule result.

A real phantom study assessed by :func:`assess_study` (two nodules, about 4 s, once per module) and a hand-built
follow-up (:mod:`Testing.interop_helpers`) with growth, a stable, a resolved and a new nodule. Every ORU is read
back with python-hl7's parser; expected values come from the result, never written out by hand.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import hl7
import pydicom
import pytest

from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.interop.fhir_report import LUNG_RADS_SYSTEM, diagnostic_report, write_fhir_report
from MedAIExtension.interop.hl7_oru import build_oru, hl7_escape
from MedAIExtension.interop.report_text import PRELIMINARY, report_content, tracking_report_text
from MedAIExtension.interop.triage import Triage, from_lung_rads
from MedAIExtension.io.loader import load_image
from MedAIExtension.phantom.study import write_phantom_study
from MedAIExtension.tracking.pipeline import TrackingOptions, assess_study
from MedAIExtension.tracking.reading import STABLE_WORDING
from MedAIExtension.tracking.recommendations import management_recommendation
from MedAIExtension.tracking.results import StudyResult, TrackingResult
from Testing.interop_helpers import NASTY_NAME, follow_up_result, study_dataset
from Testing.phantoms import SMALL_CHEST_TWO_NODULES

MODEL, VERSION = "chest-ct-lung-nodule", "2.1.0"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyResult:
    folder = tmp_path_factory.mktemp("phantom")
    files = write_phantom_study(folder, spec=SMALL_CHEST_TWO_NODULES)
    result = assess_study(load_image(files["ct"]), TrackingOptions(model=None))
    assert len(result.nodules) == 2, "the phantom's two nodules are found"
    return result


@pytest.fixture(scope="module")
def follow_up() -> TrackingResult:
    return follow_up_result()


def _obx(message: Any, code: str, sub_id: str = "") -> list[Any]:
    """The OBX segments with observation identifier ``code`` (and sub-ID ``sub_id`` when given)."""
    found = [s for s in message.segments("OBX") if str(s(3)(1)(1)) == code]
    return [s for s in found if not sub_id or str(s(4)) == sub_id]


def _text_lines(message: Any) -> list[str]:
    return [message.unescape(str(s(5))) for s in _obx(message, "REPORT-TEXT")]


def test_text_report_states_every_nodule_the_exam_and_the_ai(study: StudyResult) -> None:
    text = tracking_report_text(study, model=MODEL, model_version=VERSION)
    assert text.splitlines()[1] == PRELIMINARY and text.rstrip().endswith("before use.")
    assert f"AI: {MODEL} version {VERSION}" in text
    for nodule in study.nodules:
        m = nodule.baseline.measurement
        line = next(row for row in text.splitlines() if row.startswith(f"{nodule.tracking_id}: "))
        assert f"mean diameter {m.mean_diameter_mm:.1f} mm" in line and f"volume {m.volume_mm3:.0f} mm³" in line
        assert f"Lung-RADS {nodule.baseline_lung_rads.category}" in line
        assert "no prior study for comparison" in line and ", image " in line and " zone" in line
    exam = study.exam_lung_rads["baseline"]
    assert f"Lung-RADS {exam.category} (exam): {exam.reason}" in text
    assert f"Recommendation (Lung-RADS v2022): {management_recommendation(exam.category)}" in text
    assert "Phantom" not in text, "the text names no patient"
    pid = hl7.parse(build_oru(study)).segment("PID")  # the patient from the study's own DICOM files
    metadata = study.baseline.image.metadata
    assert str(pid(3)(1)(1)) == metadata["PatientID"] and str(pid(5)) == metadata["PatientName"]


def test_oru_reads_back_with_priority_lung_rads_model_and_disclaimer(study: StudyResult) -> None:
    header = pydicom.dcmread(study.baseline.image.source_files[0], stop_before_pixels=True)
    header.AccessionNumber = "A2026-77"
    message = hl7.parse(build_oru(study, dataset=header, model=MODEL, model_version=VERSION, control_id="MSG0001"))
    msh, obr, orc = message.segment("MSH"), message.segment("OBR"), message.segment("ORC")
    assert (str(msh(9)), str(msh(10)), str(msh(12))) == ("ORU^R01^ORU_R01", "MSG0001", "2.5.1")
    exam = study.exam_lung_rads["baseline"]
    triage = from_lung_rads(str(exam.category), exam.reason)
    code = {1: "S", 2: "A"}.get(triage.priority, "R")
    assert str(obr(5)) == code and str(orc(7)(1)(6)) == code and str(message.segment("TQ1")(9)(1)(1)) == code
    assert str(obr(2)) == str(obr(3)) == str(orc(3)) == "A2026-77"
    assert str(obr(25)) == "P" and {str(s(11)) for s in message.segments("OBX")} == {"P"}
    assert str(message.segment("PID")(3)(1)(1)) == str(header.PatientID)
    assert str(obr(7)).startswith(str(header.StudyDate))
    assert str(_obx(message, "LUNGRADS-EXAM")[0](5)(1)(1)) == str(exam.category)
    management = message.unescape(str(_obx(message, "LUNGRADS-MANAGEMENT")[0](5)))
    assert management == management_recommendation(exam.category)
    assert int(str(_obx(message, "MEDAI-PRIORITY")[0](5))) == triage.priority
    assert str(_obx(message, "AI-MODEL")[0](5)) == f"{MODEL} version {VERSION}"
    assert str(_obx(message, "113014")[0](5)) == str(header.StudyInstanceUID)
    assert PRELIMINARY in str(message.segment("NTE")(3))
    for nodule in study.nodules:
        m = nodule.baseline.measurement
        diameter = _obx(message, "NODULE-DIAMETER", nodule.tracking_id)[0]
        assert (float(str(diameter(5))), str(diameter(6)(1)(1))) == (round(m.mean_diameter_mm, 1), "mm")
        volume = _obx(message, "NODULE-VOLUME", nodule.tracking_id)[0]
        assert (int(str(volume(5))), str(volume(6)(1)(1))) == (round(m.volume_mm3), "mm3")
        category = _obx(message, "NODULE-LUNGRADS", nodule.tracking_id)[0]
        assert str(category(5)(1)(1)) == str(nodule.baseline_lung_rads.category)
    text = tracking_report_text(study, dataset=header, model=MODEL, model_version=VERSION)
    assert _text_lines(message) == text.splitlines(), "one TX line per line of the plain-text report"
    assert "Accession number: A2026-77" in _text_lines(message)


@pytest.mark.parametrize(("priority", "code"), [(1, "S"), (2, "A"), (3, "R"), (4, "R"), (5, "R")])
def test_priority_goes_into_obr5_orc7_and_tq1(follow_up: TrackingResult, priority: int, code: str) -> None:
    content = report_content(follow_up, dataset=study_dataset())
    triage = Triage(priority, "given by the test")
    message = hl7.parse(build_oru(dataclasses.replace(content, triage=triage)))
    assert str(message.segment("OBR")(5)) == code and str(message.segment("ORC")(7)(1)(6)) == code
    assert str(_obx(message, "MEDAI-PRIORITY")[0](5)) == str(priority)


def test_patient_data_with_hl7_delimiters_survive_escaping(follow_up: TrackingResult) -> None:
    dataset = study_dataset()
    raw = build_oru(follow_up, dataset=dataset)
    message = hl7.parse(raw)
    assert [str(s(0)) for s in message][:4] == ["MSH", "SFT", "PID", "ORC"], "no delimiter split a segment"
    pid = message.segment("PID")
    family, given = NASTY_NAME.split("^")
    assert message.unescape(str(pid(5)(1)(1))) == family and message.unescape(str(pid(5)(1)(2))) == given
    assert message.unescape(str(pid(3)(1)(1))) == "\\".join(dataset.PatientID)
    assert (str(pid(7)), str(pid(8))) == ("19580317", "F")
    for text in ("a|b^c&d~e\\f", "line 1\nline 2", "≥ 8 mm³"):
        assert message.unescape(hl7_escape(text)) == text.replace("\n", "\r")


def test_follow_up_reports_doubling_time_stable_resolved_and_new(follow_up: TrackingResult) -> None:
    message = hl7.parse(build_oru(follow_up, dataset=study_dataset()))
    grown = follow_up.nodules[0]
    assert grown.reported_vdt_days is not None
    vdt = _obx(message, "NODULE-VDT", "N1")[0]
    assert (int(str(vdt(5))), str(vdt(6)(1)(1))) == (round(grown.reported_vdt_days), "d")
    growth = message.unescape(str(_obx(message, "NODULE-GROWTH", "N1")[0](5)))
    assert growth.startswith(f"growing, VDT {grown.reported_vdt_days:.0f} days")
    assert message.unescape(str(_obx(message, "NODULE-GROWTH", "N2")[0](5))) == STABLE_WORDING
    assert not _obx(message, "NODULE-VDT", "N2") and not _obx(message, "NODULE-DIAMETER", "N3")
    assert "resolved" in str(_obx(message, "NODULE-STATUS", "N3")[0](5))
    assert message.unescape(str(_obx(message, "NODULE-GROWTH", "N4")[0](5))) == "new"
    exam = follow_up.exam_lung_rads["followup"]
    assert str(_obx(message, "LUNGRADS-EXAM")[0](5)(1)(1)) == str(exam.category)
    text = tracking_report_text(follow_up, dataset=study_dataset())
    assert f"Comparison: prior CT {follow_up.interval_days:g} days earlier" in text
    assert "N2: solid nodule" in text and STABLE_WORDING in text and "N3: solid nodule not seen" in text
    assert NASTY_NAME not in text


def test_oru_without_patient_id_or_with_a_bad_result_is_refused(follow_up: TrackingResult) -> None:
    with pytest.raises(InputError, match="PatientID"):
        build_oru(follow_up)  # the hand-built CT has no DICOM header
    with pytest.raises(InputError, match="TrackingResult or StudyResult"):
        build_oru("not a result")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pydicom Dataset"):
        build_oru(follow_up, dataset={"PatientID": "x"})


def test_fhir_diagnostic_report(follow_up: TrackingResult, tmp_path: Path) -> None:
    dataset = study_dataset()
    report = diagnostic_report(follow_up, dataset=dataset, model=MODEL, model_version=VERSION)
    exam = follow_up.exam_lung_rads["followup"]
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    study_ref = report["imagingStudy"][0]["identifier"]
    assert study_ref == {"system": "urn:dicom:uid", "value": f"urn:oid:{dataset.StudyInstanceUID}"}
    assert report["conclusionCode"][0]["coding"][0] == {
        "system": LUNG_RADS_SYSTEM,
        "code": str(exam.category),
        "display": f"Lung-RADS {exam.category}",
    }
    assert PRELIMINARY in report["conclusion"] and management_recommendation(exam.category) in report["conclusion"]
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode("utf-8")
    assert text == tracking_report_text(follow_up, dataset=dataset, model=MODEL, model_version=VERSION)
    assert report["identifier"][0]["value"] == dataset.AccessionNumber and report["effectiveDateTime"] == "2026-01-05"
    path = write_fhir_report(
        follow_up, tmp_path / "report.fhir.json", dataset=dataset, model=MODEL, model_version=VERSION
    )
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["conclusion"] == report["conclusion"] and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    with pytest.raises(OutputError, match="does not exist"):
        write_fhir_report(follow_up, tmp_path / "missing" / "r.json", dataset=dataset)
    with pytest.raises(InputError, match="StudyInstanceUID"):
        write_fhir_report(follow_up, tmp_path / "none.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "nothing written on an error"
