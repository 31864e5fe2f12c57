"""DICOM Secondary Capture of blended key slices on real files.

Checks: dciodvfy conformance of every file, same study and patient as the source, pixel data read back equal
to the frames, the not-for-diagnosis statement and source-slice references, patient orientation in every
acquisition direction, and the failure modes leaving nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_test_data import GEOMETRIES, SPACING_IJK, dciodvfy_missing_reason, make_source

from MedAIExtension.dicom.secondary_capture import (
    NOT_FOR_DIAGNOSIS,
    SECONDARY_CAPTURE_STORAGE,
    slice_patient_orientation,
    write_secondary_capture,
)
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image

needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))


def make_frames(count: int, shape: tuple[int, int] = (48, 64), seed: int = 0) -> list[np.ndarray]:
    """Random RGB frames (every pixel and channel differs, so a channel swap or transposition shows)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(count)]


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


@pytest.fixture(scope="module", params=["axial_ascending", "oblique"])
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Image:
    return make_source(tmp_path_factory.mktemp(f"sc-{request.param}") / "source", GEOMETRIES[request.param])


@pytest.fixture(scope="module")
def axial(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return make_source(tmp_path_factory.mktemp("sc-axial") / "source", GEOMETRIES["axial_ascending"])


def _write(frames: list[np.ndarray], source: Image, path: Path, **kwargs: object) -> Path:
    return write_secondary_capture(frames, source, path, series_description="MedAI Grad-CAM key slices", **kwargs)  # type: ignore[arg-type]


# ---- conformance and content --------------------------------------------------------------------------------
@needs_dciodvfy
def test_dciodvfy_reports_no_error(source: Image, tmp_path: Path) -> None:
    folder = _write(
        make_frames(3),
        source,
        tmp_path / "sc",
        slice_indices=[1, 5, 9],
        frame_comments=["Slice 2", "Slice 6", "Slice 10"],
        patient_orientation=slice_patient_orientation(source),
    )
    files = _files(folder)
    assert [f.name for f in files] == ["sc_0001.dcm", "sc_0002.dcm", "sc_0003.dcm"]
    for path in files:
        report = run_dciodvfy(path)
        assert report.iod == "SCImage"
        assert report.errors == (), report.output


@needs_dciodvfy
def test_unknown_orientation_is_written_empty_and_valid(axial: Image, tmp_path: Path) -> None:
    (path,) = _files(_write(make_frames(1), axial, tmp_path / "sc"))
    assert run_dciodvfy(path).errors == ()
    assert pydicom.dcmread(path).PatientOrientation in (None, "")


def test_joins_the_source_study_and_keeps_the_pixels(source: Image, tmp_path: Path) -> None:
    frames = make_frames(4, shape=(40, 72), seed=3)
    files = _files(_write(frames, source, tmp_path / "sc", slice_indices=[0, 3, 7, 19]))
    original = pydicom.dcmread(source.source_files[0], stop_before_pixels=True)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in source.source_files]
    series = set()
    for number, (path, frame, k) in enumerate(zip(files, frames, [0, 3, 7, 19], strict=True), start=1):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == SECONDARY_CAPTURE_STORAGE
        assert ds.StudyInstanceUID == original.StudyInstanceUID
        assert (ds.PatientID, str(ds.PatientName)) == (original.PatientID, str(original.PatientName))
        assert ds.SeriesInstanceUID != original.SeriesInstanceUID
        assert (int(ds.InstanceNumber), int(ds.SeriesNumber)) == (number, 311)
        assert ds.PhotometricInterpretation == "RGB"
        np.testing.assert_array_equal(ds.pixel_array, frame)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == uids[k]
        assert ds.ImageComments == NOT_FOR_DIAGNOSIS
        assert NOT_FOR_DIAGNOSIS in ds.DerivationDescription
        assert ds.BurnedInAnnotation == "NO"
        series.add(ds.SeriesInstanceUID)
    assert len(series) == 1


def test_frame_comments_come_before_the_statement(axial: Image, tmp_path: Path) -> None:
    (path,) = _files(_write(make_frames(1), axial, tmp_path / "sc", frame_comments=["Slice 12 of 20, Grad-CAM"]))
    assert pydicom.dcmread(path).ImageComments == f"Slice 12 of 20, Grad-CAM. {NOT_FOR_DIAGNOSIS}"


def test_rewriting_replaces_an_earlier_capture(axial: Image, tmp_path: Path) -> None:
    _write(make_frames(3), axial, tmp_path / "sc")
    frames = make_frames(1, seed=9)
    (path,) = _files(_write(frames, axial, tmp_path / "sc"))
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, frames[0])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("axial_ascending", ("L", "P")),
        ("axial_descending", ("L", "A")),
        ("sagittal", ("P", "F")),
        ("coronal", ("L", "F")),
    ],
)
def test_slice_patient_orientation(name: str, expected: tuple[str, str]) -> None:
    lps = affine_from_parts(np.zeros(3), np.array(SPACING_IJK), GEOMETRIES[name])
    assert slice_patient_orientation(Image(np.zeros((3, 4, 5)), LPS_TO_RAS @ lps)) == expected


def test_oblique_orientation_lists_the_main_direction_first() -> None:
    lps = affine_from_parts(np.zeros(3), np.array(SPACING_IJK), GEOMETRIES["oblique"])
    rows, columns = slice_patient_orientation(Image(np.zeros((3, 4, 5)), LPS_TO_RAS @ lps))
    direction = GEOMETRIES["oblique"][:, 0]
    main = int(np.argmax(np.abs(direction)))
    assert rows[0] == (("L", "R"), ("P", "A"), ("H", "F"))[main][0 if direction[main] > 0 else 1]
    assert len(rows) == 3 and len(columns) == 3


# ---- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "No key-slice image"),
        ([np.zeros((48, 64), np.uint8)], "RGB image"),
        ([np.zeros((48, 64, 3), np.float32)], "8-bit"),
    ],
)
def test_bad_frames_are_refused(axial: Image, tmp_path: Path, frames: list[np.ndarray], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _write(frames, axial, tmp_path / "sc")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slice_indices": [0, 20]}, "outside the source"),
        ({"slice_indices": [0]}, "one per frame"),
        ({"frame_comments": ["a", "b", "c"]}, "one per frame"),
        ({"patient_orientation": ("L", "X")}, "direction codes"),
        ({"series_description": ""}, "series_description is empty"),
    ],
)
def test_bad_arguments_are_refused(axial: Image, tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    arguments = {"series_description": "MedAI key slices", **kwargs}
    with pytest.raises(InputError, match=message):
        write_secondary_capture(make_frames(2), axial, tmp_path / "sc", **arguments)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_source_without_dicom_files_is_refused(axial: Image, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not read from DICOM"):
        _write(make_frames(1), axial.with_array(axial.array, source_files=()), tmp_path / "sc")
    assert list(tmp_path.iterdir()) == []


def test_folder_with_other_files_is_left_alone(axial: Image, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "report.json").write_text("{}")
    with pytest.raises(OutputError, match="holds other files"):
        _write(make_frames(1), axial, folder)
    assert [p.name for p in folder.iterdir()] == ["report.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_missing_parent_folder_is_an_output_error(axial: Image, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        _write(make_frames(1), axial, tmp_path / "missing" / "sc")
