"""DICOM Parametric Map writer and reader on real files, in every acquisition direction.

Checks: dciodvfy conformance, exact float32 read-back (by source instance, by geometry, on the map's own grid
and decoded frame by frame with plain pydicom), the references to the source series, the recorded method,
target and model, and the failure modes leaving no file behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_test_data import GEOMETRIES, dciodvfy_missing_reason, make_source

from MedAIExtension.dicom.parametric_map import (
    PARAMETRIC_MAP_STORAGE,
    quantity_of,
    read_parametric_map,
    read_parametric_map_info,
    write_parametric_map,
)
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.errors import GeometryError, InputError, OutputError
from MedAIExtension.explain.types import ExplainMethod
from MedAIExtension.io.image import Image

needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))
MODEL = {"model_name": "chest-ct-nodule-classifier", "model_version": "1.2.3"}


@dataclass(frozen=True)
class MapCase:
    """One written Parametric Map and what it was made from."""

    name: str
    source: Image
    values: Image
    path: Path


def make_map(source: Image, seed: int = 0) -> Image:
    """A float32 map with negative, tiny and large values and a peak at an asymmetric voxel (flips show)."""
    k_size, j_size, i_size = source.shape
    kk, jj, ii = np.ogrid[:k_size, :j_size, :i_size]
    blob = np.exp(-(((kk - 14) / 3.0) ** 2 + ((jj - 30) / 6.0) ** 2 + ((ii - 45) / 7.0) ** 2))
    noise = np.random.default_rng(seed).normal(scale=1e-3, size=source.shape)
    values = (blob + noise).astype(np.float32)
    values[0, 0, 0] = -2.5e-7  # a value float16 or 8-bit storage would lose
    values[-1, -1, -2] = 1234.5678
    return source.with_array(values, source_files=(), modality="")


def _write(values: Image, source: Image, path: Path, **kwargs: object) -> Path:
    arguments = {"method": "gradcam", "target": "Nodule", **MODEL, **kwargs}
    return write_parametric_map(values, source, path, **arguments)  # type: ignore[arg-type]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file()]


def _source_uids(source: Image) -> list[str]:
    return [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in source.source_files]


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def map_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MapCase:
    name = request.param
    folder = tmp_path_factory.mktemp(f"pm-{name}")
    source = make_source(folder / "source", GEOMETRIES[name])
    values = make_map(source)
    return MapCase(name, source, values, _write(values, source, folder / "map.dcm"))


@pytest.fixture(scope="module")
def axial(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return make_source(tmp_path_factory.mktemp("pm-axial") / "source", GEOMETRIES["axial_ascending"])


# ---- conformance and read-back ------------------------------------------------------------------------------
@needs_dciodvfy
def test_dciodvfy_reports_no_error(map_case: MapCase) -> None:
    report = run_dciodvfy(map_case.path)
    assert report.iod == "ParametricMap"
    assert report.errors == (), report.output


def test_reads_back_exactly_by_source_instance(map_case: MapCase) -> None:
    """float32 values are stored as Float Pixel Data with an identity mapping: the read-back is bit-exact."""
    back = read_parametric_map(map_case.path, map_case.source)
    assert back.same_grid(map_case.source)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, map_case.values.array)


def test_reads_back_exactly_by_geometry(map_case: MapCase) -> None:
    """A reference without source files on the same grid: frames placed by position (highdicom's volume)."""
    reference = map_case.source.with_array(np.zeros(map_case.source.shape, np.int16), source_files=())
    back = read_parametric_map(map_case.path, reference)
    assert back.same_grid(map_case.source)
    np.testing.assert_array_equal(back.array, map_case.values.array)


def test_own_grid_puts_every_value_at_its_source_position(map_case: MapCase) -> None:
    """Without a reference the map keeps its own grid; each voxel must lie where the source voxel lies."""
    back = read_parametric_map(map_case.path)
    to_source = np.linalg.inv(map_case.source.ijk_to_ras) @ back.ijk_to_ras
    assert np.allclose(to_source, np.round(to_source), atol=1e-4)  # same lattice, at most reversed axes
    kk, jj, ii = np.indices(back.shape).reshape(3, -1)
    ijk = np.round(to_source @ np.stack([ii, jj, kk, np.ones_like(ii)])).astype(int)
    np.testing.assert_array_equal(back.array[kk, jj, ii], map_case.values.array[ijk[2], ijk[1], ijk[0]])


def test_plain_pydicom_decode_matches_source_slices(map_case: MapCase) -> None:
    """Decode the file without highdicom: each frame sits on the slice it references and holds its values."""
    ds = pydicom.dcmread(map_case.path)
    assert ds.SOPClassUID == PARAMETRIC_MAP_STORAGE
    assert int(ds.BitsAllocated) == 32 and "FloatPixelData" in ds
    frames = np.frombuffer(ds.FloatPixelData, dtype="<f4").reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    slope, intercept = float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)
    slice_of = {uid: k for k, uid in enumerate(_source_uids(map_case.source))}
    lps = map_case.source.ijk_to_lps
    seen = set()
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        k = slice_of[str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)]
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, lps[:3, 2] * k + lps[:3, 3], atol=1e-3)
        np.testing.assert_array_equal(frame * slope + intercept, map_case.values.array[k])
        seen.add(k)
    assert seen == set(range(map_case.source.shape[0]))


def test_references_the_source_series_and_joins_its_study(map_case: MapCase) -> None:
    ds = pydicom.dcmread(map_case.path, stop_before_pixels=True)
    source = pydicom.dcmread(map_case.source.source_files[0], stop_before_pixels=True)
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    (series,) = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {str(item.ReferencedSOPInstanceUID) for item in series.ReferencedInstanceSequence}
    assert referenced == set(_source_uids(map_case.source))


def test_records_method_target_and_model(map_case: MapCase) -> None:
    info = read_parametric_map_info(map_case.path)
    assert (info.method, info.method_title, info.target) == ("gradcam", "Grad-CAM", "Nodule")
    assert (info.model_name, info.model_version) == (MODEL["model_name"], MODEL["model_version"])
    assert info.units == "1"
    assert info.quantity == "Gradient-weighted class activation"
    assert info.value_range == (float(map_case.values.array.min()), float(map_case.values.array.max()))
    assert info.source_series_instance_uids == (map_case.source.metadata["SeriesInstanceUID"],)
    assert info.series_description == "MedAI Grad-CAM Nodule"
    assert "Grad-CAM" in info.content_description and MODEL["model_name"] in info.content_description
    ds = pydicom.dcmread(map_case.path, stop_before_pixels=True)
    assert ds.ContentQualification == "RESEARCH"
    assert "99MEDAI" in {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}


# ---- methods, units, other grids (axial only) ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("gradcam", ("130403", "DCM")),
        ("gradcampp", ("130403", "DCM")),
        ("occlusion", ("130404", "DCM")),
        ("ig", ("130404", "DCM")),
        ("uncertainty", ("PREDENTROPY", "99MEDAI")),
    ],
)
def test_each_method_records_its_quantity(axial: Image, tmp_path: Path, method: str, code: tuple[str, str]) -> None:
    path = _write(make_map(axial), axial, tmp_path / "map.dcm", method=method, target="Vessel", units="%")
    info = read_parametric_map_info(path)
    term = quantity_of(method)
    assert (term.value, term.scheme) == code
    assert info.quantity == term.meaning
    assert info.method == ExplainMethod.parse(method).value
    assert info.method_title == ExplainMethod.parse(method).display_name
    assert (info.target, info.units) == ("Vessel", "%")


def test_reads_onto_another_grid_of_the_same_frame_of_reference(axial: Image, tmp_path: Path) -> None:
    """A reference covering slices 3..12 only (same patient space): the map is resampled onto it."""
    values = make_map(axial)
    path = _write(values, axial, tmp_path / "map.dcm")
    shifted = axial.ijk_to_ras.copy()
    shifted[:3, 3] += 3 * shifted[:3, 2]
    reference = Image(np.zeros((10, *axial.shape[1:]), np.int16), shifted, metadata=dict(axial.metadata))
    back = read_parametric_map(path, reference)
    assert back.same_grid(reference)
    np.testing.assert_allclose(back.array, values.array[3:13], rtol=1e-5, atol=1e-5)


@needs_dciodvfy
def test_map_spanning_less_than_one_passes_dciodvfy(axial: Image, tmp_path: Path) -> None:
    """Grad-CAM maps span 0..1 (probabilities even less): the display window must still be valid DICOM."""
    raw = make_map(axial).array.astype(np.float32)
    values = axial.with_array(0.4 * (raw - raw.min()) / (raw.max() - raw.min()), source_files=())
    path = _write(values, axial, tmp_path / "map.dcm")
    report = run_dciodvfy(path)
    assert report.errors == (), report.output
    np.testing.assert_array_equal(read_parametric_map(path, axial).array, values.array)


def test_float64_map_is_stored_as_float32(axial: Image, tmp_path: Path) -> None:
    values = axial.with_array(make_map(axial).array.astype(np.float64) / 3.0, source_files=())
    back = read_parametric_map(_write(values, axial, tmp_path / "map.dcm"), axial)
    np.testing.assert_array_equal(back.array, values.array.astype(np.float32))
    assert np.abs(back.array - values.array).max() <= 2.0**-24 * np.abs(values.array).max()


# ---- bad input ----------------------------------------------------------------------------------------------
def test_map_on_another_grid_is_refused(axial: Image, tmp_path: Path) -> None:
    moved = axial.ijk_to_ras.copy()
    moved[:3, 3] += 1.0
    values = Image(make_map(axial).array, moved)
    with pytest.raises(GeometryError, match="not on the grid of the source"):
        _write(values, axial, tmp_path / "map.dcm")
    assert _leftovers(tmp_path) == []


def test_nan_values_are_refused(axial: Image, tmp_path: Path) -> None:
    array = make_map(axial).array.copy()
    array[5, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        axial.with_array(array)  # an Image never holds NaN ...
    values = make_map(axial)
    values.array[5, 5, 5] = np.nan  # ... unless its array is changed in place afterwards
    with pytest.raises(InputError, match="1 NaN or infinite"):
        _write(values, axial, tmp_path / "map.dcm")
    assert _leftovers(tmp_path) == []


def test_values_beyond_float32_are_refused(axial: Image, tmp_path: Path) -> None:
    values = axial.with_array(np.full(axial.shape, 1e39), source_files=())
    with pytest.raises(InputError, match="32-bit float range"):
        _write(values, axial, tmp_path / "map.dcm")
    assert _leftovers(tmp_path) == []


def test_source_without_dicom_files_is_refused(axial: Image, tmp_path: Path) -> None:
    plain = axial.with_array(axial.array, source_files=())
    with pytest.raises(InputError, match="not read from DICOM"):
        _write(make_map(axial), plain, tmp_path / "map.dcm")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"method": "lime"}, InputError, "Unknown explanation method"),
        ({"target": " "}, InputError, "target is empty"),
        ({"model_version": ""}, InputError, "model_version is empty"),
        ({"units": "a\\b"}, InputError, "UCUM code"),
    ],
)
def test_bad_arguments_are_refused(
    axial: Image, tmp_path: Path, changes: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _write(make_map(axial), axial, tmp_path / "map.dcm", **changes)
    assert _leftovers(tmp_path) == []


def test_missing_output_folder_is_an_output_error(axial: Image, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        _write(make_map(axial), axial, tmp_path / "missing" / "map.dcm")


def test_existing_file_is_kept_when_writing_fails(axial: Image, tmp_path: Path) -> None:
    path = _write(make_map(axial), axial, tmp_path / "map.dcm")
    before = path.read_bytes()
    with pytest.raises(InputError):
        _write(make_map(axial), axial, path, target="")
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == [path]


def test_reading_onto_another_frame_of_reference_is_refused(axial: Image, tmp_path: Path) -> None:
    path = _write(make_map(axial), axial, tmp_path / "map.dcm")
    other = make_source(tmp_path / "other", GEOMETRIES["axial_ascending"])
    assert other.metadata["FrameOfReferenceUID"] != axial.metadata["FrameOfReferenceUID"]
    with pytest.raises(GeometryError, match="frame of reference"):
        read_parametric_map(path, other)


def test_reading_onto_misplaced_source_slices_is_refused(axial: Image, tmp_path: Path) -> None:
    """The reference holds the source files but claims another position: the frames do not lie on its slices."""
    path = _write(make_map(axial), axial, tmp_path / "map.dcm")
    moved = axial.ijk_to_ras.copy()
    moved[:3, 3] += 2.0
    reference = Image(axial.array, moved, source_files=axial.source_files, metadata=dict(axial.metadata))
    with pytest.raises(GeometryError, match="does not match the reference"):
        read_parametric_map(path, reference)


def test_reading_a_file_that_is_not_a_map_is_refused(axial: Image) -> None:
    with pytest.raises(InputError, match="Parametric Map"):
        read_parametric_map(axial.source_files[0])
    with pytest.raises(InputError, match="not a Parametric Map"):
        read_parametric_map_info(axial.source_files[0])
