"""``medai demo`` end to end: its DICOM SEG is valid (dciodvfy) and reads back voxel-identical (highdicom, dcmqi);
its presentation state is valid, references the demo CT and renders a ring around the phantom's largest nodule; its
HL7 ORU^R01, FHIR DiagnosticReport and plain-text report state the same Lung-RADS category, as preliminary."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAIExtension.cli import main
from MedAIExtension.dicom import read_dicom_seg, read_dicom_seg_with_dcmqi, validate_with_dciodvfy
from MedAIExtension.dicom.pr_render import GSPS_STORAGE, render_presentation_state
from MedAIExtension.dicom.presentation_state import RING_MARGIN_MM, write_presentation_state
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.interop.report_text import PRELIMINARY
from MedAIExtension.io import read_dicom_series, read_volume_file


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--output", str(out), "--quiet"]) == 0
    return out


def test_demo_writes_the_promised_files(demo_dir: Path) -> None:
    for name in (
        "summary.html",
        "overlay.png",
        "segmentation/segmentation.dcm",
        "segmentation/segmentation.seg.nrrd",
        "segmentation/segmentation.nii.gz",
        "phantom/ct",
        "phantom/truth.json",
        "explanation/explanation.json",
        "explanation/phantom-ct_gradcam.nrrd",
        "explanation/dicom/phantom-ct_gradcam_pm.dcm",
        "explanation/png/phantom-ct_gradcam_axial.png",
        "report/presentation_state.dcm",
        "report/report.txt",
        "report/report.hl7",
        "report/diagnostic_report.json",
        "report/baseline_seg.dcm",
        "report/baseline_sr.dcm",
        *(["report/presentation_state.png"] if shutil.which("dcmp2pgm") else []),
    ):
        assert (demo_dir / name).exists(), name
    html = (demo_dir / "summary.html").read_text()
    assert "Lung lesion" in html and "Dice vs truth" in html and "Grad-CAM sanity" in html
    assert "Nodule assessment" in html
    for name in ("presentation_state.dcm", "report.txt", "report.hl7", "diagnostic_report.json"):
        assert f'href="report/{name}"' in html, name
    explanation = json.loads((demo_dir / "explanation" / "explanation.json").read_text(encoding="utf-8"))
    assert explanation["sanity"]["randomisation"]["passed"] is True and explanation["score"] > 0.5
    assert (demo_dir / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(demo_dir.rglob(".medai-staging-*"))


def test_demo_seg_is_valid_and_reads_back_voxel_identical(demo_dir: Path) -> None:
    seg = demo_dir / "segmentation" / "segmentation.dcm"
    assert validate_with_dciodvfy(seg) == []
    ct = read_dicom_series(demo_dir / "phantom" / "ct")
    labelmap = read_volume_file(demo_dir / "segmentation" / "segmentation.nii.gz")
    assert labelmap.same_grid(ct)
    assert set(np.unique(labelmap.array)) == {0, 1, 2}
    np.testing.assert_array_equal(read_dicom_seg(seg, ct).array, labelmap.array)
    np.testing.assert_array_equal(read_dicom_seg_with_dcmqi(seg, ct, demo_dir).array, labelmap.array)


def test_seg_nrrd_reads_back_with_slicerio(demo_dir: Path) -> None:
    slicerio = pytest.importorskip("slicerio")
    segmentation = slicerio.read_segmentation(str(demo_dir / "segmentation" / "segmentation.seg.nrrd"))
    names = sorted(segment["name"] for segment in segmentation["segments"])
    assert names == ["Lung", "Lung lesion"]


def test_evaluate_prints_the_metrics_table(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "evaluate",
            "--pred",
            str(demo_dir / "segmentation" / "segmentation.nii.gz"),
            "--ref",
            str(demo_dir / "phantom" / "labels.nii.gz"),
            "--model",
            "chest-ct-lung-nodule",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    lung = next(line for line in out.splitlines() if " Lung " in line and "nodule" not in line)
    assert float(lung.split()[2]) > 0.9  # Dice column


# ---- the nodule reports (issue 21) ------------------------------------------------------------------------------
def _ct_files(demo_dir: Path) -> dict[str, Path]:
    """SOPInstanceUID -> file of the demo CT."""
    files = [f for f in (demo_dir / "phantom" / "ct").iterdir() if f.is_file()]
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}


def test_demo_presentation_state_is_valid_and_references_the_ct(demo_dir: Path) -> None:
    pr = demo_dir / "report" / "presentation_state.dcm"
    if shutil.which("dciodvfy"):
        report = run_dciodvfy(pr)
        assert report.iod == "GrayscaleSoftcopyPresentationState" and report.errors == (), report.output
    state = pydicom.dcmread(pr)
    ct_files = _ct_files(demo_dir)
    source = pydicom.dcmread(next(iter(ct_files.values())), stop_before_pixels=True)
    assert state.SOPClassUID == GSPS_STORAGE
    assert (state.StudyInstanceUID, state.PatientID) == (source.StudyInstanceUID, source.PatientID)
    (series,) = state.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert {str(item.ReferencedSOPInstanceUID) for item in series.ReferencedImageSequence} == set(ct_files)
    assert len(state.GraphicAnnotationSequence) >= 1


@pytest.mark.skipif(shutil.which("dcmp2pgm") is None, reason="dcmp2pgm (Debian package dcmtk) missing")
def test_demo_presentation_state_png_rings_the_largest_nodule(demo_dir: Path, tmp_path: Path) -> None:
    """The PNG differs from the same slice rendered without annotations only around the phantom's largest nodule
    (its truth, projected onto the CT) and in the label text box."""
    from PIL import Image as PilImage

    png = demo_dir / "report" / "presentation_state.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ct = read_dicom_series(demo_dir / "phantom" / "ct")
    truth = json.loads((demo_dir / "phantom" / "truth.json").read_text(encoding="utf-8"))["nodules"]
    largest = max(truth, key=lambda n: n["diameter_mm"])
    i, j, k = (np.linalg.inv(ct.ijk_to_ras) @ np.r_[largest["center_ras"], 1.0])[:3]
    image = ct.source_files[int(np.floor(k + 0.5))]
    empty = write_presentation_state(ct, [], tmp_path / "empty.dcm")
    plain = np.asarray(PilImage.open(render_presentation_state(empty, image, tmp_path / "plain.png"))).astype(int)
    drawn = np.asarray(PilImage.open(png)).astype(int)
    assert drawn.shape == plain.shape == (ct.shape[1], ct.shape[2])
    rows, columns = np.nonzero(drawn != plain)
    pixels = np.c_[columns, rows].astype(float)
    state = pydicom.dcmread(demo_dir / "report" / "presentation_state.dcm")
    uid = str(pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID)
    (annotation,) = [
        a for a in state.GraphicAnnotationSequence if a.ReferencedImageSequence[0].ReferencedSOPInstanceUID == uid
    ]
    text = annotation.TextObjectSequence[0]
    box = np.r_[text.BoundingBoxTopLeftHandCorner, text.BoundingBoxBottomRightHandCorner].astype(float)
    in_box = np.all((pixels >= box[:2] - 2) & (pixels <= box[2:] + 2), axis=1)
    ring = pixels[~in_box]
    radius = (largest["diameter_mm"] / 2 + RING_MARGIN_MM) / np.asarray(ct.spacing[:2])  # (column, row) pixels
    assert in_box.sum() >= 5, "no label drawn"
    assert len(ring) >= 2 * np.pi * radius.mean() * 0.6, "no circle drawn"
    assert np.allclose(ring.mean(axis=0), [i, j], atol=1.5), "the circle is not centred on the largest nodule"
    distance = np.hypot(*((ring - [i, j]) / radius).T)  # 1 on a circle of the nodule's diameter
    assert np.all(np.abs(distance - 1) * radius.min() <= 2.5), "annotation pixels away from the nodule and its label"


def test_demo_reports_state_the_same_lung_rads_as_preliminary(demo_dir: Path) -> None:
    import hl7

    raw = (demo_dir / "report" / "report.hl7").read_bytes()
    assert b"\n" not in raw and raw.startswith(b"MSH|")
    message = hl7.parse(raw.decode("utf-8"))
    assert str(message.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(message.segment("OBR")[25]) == "P"
    assert PRELIMINARY in str(message.segment("NTE")[3])
    exam = next(obx for obx in message.segments("OBX") if str(obx[3][0][0]) == "LUNGRADS-EXAM")
    category = str(exam[5][0][0])
    source = pydicom.dcmread(next(iter(_ct_files(demo_dir).values())), stop_before_pixels=True)
    assert str(message.segment("PID")[3][0][0]) == source.PatientID

    fhir = json.loads((demo_dir / "report" / "diagnostic_report.json").read_text(encoding="utf-8"))
    assert (fhir["resourceType"], fhir["status"]) == ("DiagnosticReport", "preliminary")
    assert [c["code"] for c in fhir["conclusionCode"][0]["coding"]] == [category]
    text = (demo_dir / "report" / "report.txt").read_text(encoding="utf-8")
    assert base64.b64decode(fhir["presentedForm"][0]["data"]).decode("utf-8") == text
    assert text.startswith("MedAI lung nodule report") and PRELIMINARY in text
    assert f"Lung-RADS {category} (exam)" in text
    assert category in {"0", "1", "2", "3", "4A", "4B", "4X"}
