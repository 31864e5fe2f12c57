"""Grayscale Softcopy Presentation States of nodule findings on a real DICOM chest phantom.

Checks: dciodvfy (and dcmpschk) conformance, the read-back references, window and texts, and the key one: the PR
rendered onto its image (dcmp2pgm windowing, then its graphics) differs from the same image rendered through a PR
without annotations only in a ring around the nodule (located independently, in the phantom's own nodule label
map read with SimpleITK) and in the text box beside it. Then the tracking-level writer on a real ``assess_study``
result, and bad input leaving nothing behind.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_test_data import dciodvfy_missing_reason

from MedAIExtension.dicom.pr_render import GSPS_STORAGE, render_presentation_state
from MedAIExtension.dicom.presentation_state import RING_MARGIN_MM, PrAnnotation, write_presentation_state
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.phantom.study import write_phantom_study
from MedAIExtension.tracking.pipeline import StudyResult, assess_study
from MedAIExtension.tracking.presentation_state import write_tracking_presentation_state
from Testing.phantoms import SMALL_CHEST_TWO_NODULES

needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))
needs_dcmtk = pytest.mark.skipif(shutil.which("dcmp2pgm") is None, reason="dcmp2pgm (Debian package dcmtk) missing")


@dataclass(frozen=True)
class Study:
    """The phantom's DICOM series, its truth and its nodule label map in the DICOM files' pixel grid."""

    folder: Path
    image: Image = field(repr=False)
    truth: dict = field(repr=False)
    files: list[Path] = field(repr=False)  # in the SimpleITK series order (slice z of ``nodules``)
    nodules: np.ndarray = field(repr=False)  # [z, row, column] nodule ids
    spacing: np.ndarray = field(repr=False)  # (column, row) mm


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    import SimpleITK as sitk

    paths = write_phantom_study(tmp_path_factory.mktemp("pr") / "phantom", spec=SMALL_CHEST_TWO_NODULES)
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(paths["ct"]))
    reader.SetFileNames(names)
    dicom = reader.Execute()
    labels = sitk.ReadImage(str(paths["nodules"]))
    assert labels.GetSize() == dicom.GetSize()
    assert np.allclose(labels.GetOrigin(), dicom.GetOrigin(), atol=1e-3)
    assert np.allclose(labels.GetDirection(), dicom.GetDirection(), atol=1e-6)
    return Study(
        folder=Path(paths["ct"]),
        image=read_dicom_series(paths["ct"]),
        truth=json.loads(Path(paths["truth"]).read_text()),
        files=[Path(name) for name in names],
        nodules=sitk.GetArrayFromImage(labels),
        spacing=np.array(dicom.GetSpacing()[:2]),
    )


@pytest.fixture(scope="module")
def assessed(study: Study) -> StudyResult:
    return assess_study(study.image)


def _truth_annotations(study: Study) -> list[PrAnnotation]:
    return [
        PrAnnotation(tuple(n["center_ras"]), n["diameter_mm"], f"N{n['id']} {n['diameter_mm']:.1f} mm")
        for n in study.truth["nodules"]
    ]


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _annotated_files(study: Study, pr_path: Path) -> dict[str, Path]:
    """``{text: image file}`` of each graphic annotation of the PR."""
    by_uid = {_uid(path): path for path in study.files}
    state = pydicom.dcmread(pr_path)
    return {
        str(a.TextObjectSequence[0].UnformattedTextValue): by_uid[
            str(a.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
        ]
        for a in state.GraphicAnnotationSequence
    }


def _annotation_pixels(pr: Path, empty_pr: Path, image: Path, folder: Path) -> np.ndarray:
    """(column, row) of the pixels where the rendered PR differs from the rendering without annotations."""
    from PIL import Image as PilImage

    with_graphics = render_presentation_state(pr, image, folder / f"{image.stem}-pr.png")
    plain = render_presentation_state(empty_pr, image, folder / f"{image.stem}-plain.png")
    a = np.asarray(PilImage.open(with_graphics)).astype(int)
    b = np.asarray(PilImage.open(plain)).astype(int)
    assert a.shape == b.shape == (int(pydicom.dcmread(image).Rows), int(pydicom.dcmread(image).Columns))
    rows, columns = np.nonzero(a != b)
    return np.c_[columns, rows]


def _text_box(pr: Path, text: str) -> np.ndarray:
    for annotation in pydicom.dcmread(pr).GraphicAnnotationSequence:
        item = annotation.TextObjectSequence[0]
        if str(item.UnformattedTextValue) == text:
            return np.r_[item.BoundingBoxTopLeftHandCorner, item.BoundingBoxBottomRightHandCorner].astype(float)
    raise AssertionError(f"no text {text!r}")


def _through_centre(study: Study, image: Path, nodule_id: int) -> bool:
    """Whether ``image`` is the slice nearest the centre of the nodule (in the phantom's own label map)."""
    centre_z = np.nonzero(study.nodules == nodule_id)[0].mean()
    return abs(study.files.index(image) - centre_z) <= 0.75


def _check_ring(
    study: Study, pixels: np.ndarray, image: Path, nodule_id: int, diameter_mm: float, box: np.ndarray
) -> None:
    """The annotation pixels: a ring of the diameter around the nodule, plus text in its box, nothing elsewhere."""
    z = study.files.index(image)
    mask = study.nodules[z] == nodule_id
    assert mask.sum() >= 5 and _through_centre(study, image, nodule_id), "not the slice through the nodule centre"
    rows, columns = np.nonzero(mask)
    center = np.array([columns.mean(), rows.mean()])
    in_box = np.all((pixels >= box[:2] - 2) & (pixels <= box[2:] + 2), axis=1)
    assert in_box.sum() >= 5, "no text drawn in the text box"
    ring = pixels[~in_box]
    radius = (diameter_mm / 2 + RING_MARGIN_MM) / study.spacing
    distance = np.hypot(*((ring - center) / radius).T)  # 1 on the ring
    assert len(ring) >= 2 * np.pi * radius.mean() * 0.6, "the circle is missing"
    assert np.allclose(ring.mean(axis=0), center, atol=1.5), "the circle is not centred on the nodule"
    assert np.all(np.abs(distance - 1) * radius.min() <= 2.0), "annotation pixels away from the circle and text"


# ---- low level: conformance, read back, rendering ---------------------------------------------------------------
@needs_dciodvfy
def test_presentation_state_conforms_and_reads_back(study: Study, tmp_path: Path) -> None:
    path = write_presentation_state(study.image, _truth_annotations(study), tmp_path / "pr.dcm")
    report = run_dciodvfy(path)
    assert report.iod == "GrayscaleSoftcopyPresentationState"
    assert report.errors == (), report.output
    if shutil.which("dcmpschk"):
        import subprocess

        check = subprocess.run(["dcmpschk", str(path)], capture_output=True, text=True, check=False)
        assert "Test passed" in check.stdout + check.stderr, check.stdout + check.stderr
    state = pydicom.dcmread(path)
    source = pydicom.dcmread(study.files[0], stop_before_pixels=True)
    assert state.SOPClassUID == GSPS_STORAGE
    assert (state.StudyInstanceUID, state.PatientID) == (source.StudyInstanceUID, source.PatientID)
    assert state.SeriesInstanceUID != source.SeriesInstanceUID
    (series,) = state.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in series.ReferencedImageSequence} == {_uid(f) for f in study.files}
    (voi,) = state.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (-600.0, 1500.0)
    assert "ReferencedImageSequence" not in voi  # the window applies to every referenced image
    annotated = _annotated_files(study, path)
    assert sorted(annotated) == ["N1 11.0 mm", "N2 12.0 mm"]
    for number, image in enumerate(annotated.values(), start=1):  # each on the slice through its nodule's centre
        assert _through_centre(study, image, number)


@needs_dcmtk
def test_rendered_annotations_circle_the_nodules(study: Study, tmp_path: Path) -> None:
    pr = write_presentation_state(study.image, _truth_annotations(study), tmp_path / "pr.dcm")
    empty = write_presentation_state(study.image, [], tmp_path / "empty.dcm")
    for text, image in _annotated_files(study, pr).items():
        nodule = next(n for n in study.truth["nodules"] if text.startswith(f"N{n['id']} "))
        pixels = _annotation_pixels(pr, empty, image, tmp_path)
        _check_ring(study, pixels, image, nodule["id"], nodule["diameter_mm"], _text_box(pr, text))
    other = next(f for f in study.files if f not in _annotated_files(study, pr).values())
    assert len(_annotation_pixels(pr, empty, other, tmp_path)) == 0  # nothing on slices without a finding


# ---- the tracking result --------------------------------------------------------------------------------------
@needs_dcmtk
def test_tracking_presentation_state(study: Study, assessed: StudyResult, tmp_path: Path) -> None:
    path = write_tracking_presentation_state(assessed, "baseline", tmp_path / "baseline_pr.dcm")
    if dciodvfy_missing_reason() is None:
        assert run_dciodvfy(path).errors == ()
    expected = {
        f"{n.tracking_id} {n.baseline.measurement.long_axis_mm:.1f} mm": n for n in assessed.nodules if n.baseline
    }
    annotated = _annotated_files(study, path)
    assert set(annotated) == set(expected) and len(expected) == 2
    empty = write_presentation_state(study.image, [], tmp_path / "empty.dcm")
    for text, image in annotated.items():
        # the detected nodule is the phantom's nodule with the nearest centre
        found = np.asarray(expected[text].baseline.measurement.center_ras)  # type: ignore[union-attr]
        truth = min(study.truth["nodules"], key=lambda n: np.linalg.norm(np.asarray(n["center_ras"]) - found))
        assert np.linalg.norm(np.asarray(truth["center_ras"]) - found) < 3.0
        pixels = _annotation_pixels(path, empty, image, tmp_path)
        diameter = expected[text].baseline.measurement.long_axis_mm  # type: ignore[union-attr]
        _check_ring(study, pixels, image, truth["id"], diameter, _text_box(path, text))
    outlined = write_tracking_presentation_state(assessed, "baseline", tmp_path / "outlines.dcm", outlines=True)
    state = pydicom.dcmread(outlined)
    assert {a.GraphicObjectSequence[0].GraphicType for a in state.GraphicAnnotationSequence} == {"POLYLINE"}
    for text, image in _annotated_files(study, outlined).items():
        nodule_id = 1 if text.startswith("N1 ") else 2
        rows, columns = np.nonzero(study.nodules[study.files.index(image)] == nodule_id)
        box = _text_box(outlined, text)
        pixels = _annotation_pixels(outlined, empty, image, tmp_path)
        outline = pixels[~np.all((pixels >= box[:2] - 2) & (pixels <= box[2:] + 2), axis=1)]
        assert len(outline) >= 8
        assert outline[:, 0].min() >= columns.min() - 2 and outline[:, 0].max() <= columns.max() + 2
        assert outline[:, 1].min() >= rows.min() - 2 and outline[:, 1].max() <= rows.max() + 2
    with pytest.raises(InputError, match="'baseline'"):
        write_tracking_presentation_state(assessed, "followup", tmp_path / "followup_pr.dcm")
    assert not (tmp_path / "followup_pr.dcm").exists()


# ---- bad input ------------------------------------------------------------------------------------------------
def test_bad_input_writes_nothing(study: Study, tmp_path: Path) -> None:
    nifti = load_image(study.folder.parent / "ct.nii.gz")
    with pytest.raises(InputError, match="not read from DICOM"):
        write_presentation_state(nifti, _truth_annotations(study), tmp_path / "pr.dcm")
    outside = PrAnnotation((500.0, 0.0, 0.0), 8.0, "N9 8.0 mm")
    with pytest.raises(InputError, match="outside the source image"):
        write_presentation_state(study.image, [outside], tmp_path / "pr.dcm")
    with pytest.raises(InputError, match="positive diameter"):
        write_presentation_state(study.image, [PrAnnotation((69.4, 10.3, 24.0), 0.0, "N1")], tmp_path / "pr.dcm")
    assert list(tmp_path.iterdir()) == []


def test_render_refuses_bad_input(study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pr = write_presentation_state(study.image, _truth_annotations(study)[:1], tmp_path / "pr.dcm")
    with pytest.raises(InputError, match="not a Grayscale Softcopy Presentation State"):
        render_presentation_state(study.files[0], study.files[1], tmp_path / "out.png")
    other_series = tmp_path / "other.dcm"
    image = pydicom.dcmread(study.files[0])
    image.SOPInstanceUID = image.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    image.save_as(other_series)
    with pytest.raises(InputError, match="does not reference the image"):
        render_presentation_state(pr, other_series, tmp_path / "out.png")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(InputError, match=r"(?i)install dcmtk"):
        render_presentation_state(pr, study.files[0], tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
