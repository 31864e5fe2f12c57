"""DICOM SEG writer and readers on real files, in every acquisition direction.

Checks: dciodvfy conformance, voxel-identical read-back with highdicom (by source instance and by geometry)
and with dcmqi (the converter Slicer uses), frame-by-frame placement decoded with plain pydicom, the segment
metadata, and the failure modes (wrong grid, empty map, unknown values) leaving no file behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_test_data import (
    DRAWN_VALUES,
    GEOMETRIES,
    LABELS,
    SegCase,
    dciodvfy_missing_reason,
    dcmqi_missing_reason,
    make_labelmap,
)

from MedAIExtension.dicom import (
    EmptySegmentationError,
    MissingToolError,
    find_tool,
    read_dicom_seg,
    read_dicom_seg_with_dcmqi,
    run_dciodvfy,
    segment_value_map,
    validate_with_dciodvfy,
    write_dicom_seg,
)
from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.image import Image

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))
needs_dcmqi = pytest.mark.skipif(dcmqi_missing_reason() is not None, reason=str(dcmqi_missing_reason()))


def _write(labelmap: Image, source: Image, path: Path, **kwargs: object) -> Path:
    return write_dicom_seg(
        labelmap, source, LABELS, path, algorithm_name="MedAI-TestNet", algorithm_version="1.2.3", **kwargs
    )


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file()]


# ---- test set-up sanity -------------------------------------------------------------------------------------
def test_geometries_cover_every_direction(seg_case: SegCase) -> None:
    """The read-back source has the intended orientation (k inferior / reversed file order where asked)."""
    direction = seg_case.source.direction_ras
    if seg_case.name == "axial_descending":
        assert direction[2, 2] < -0.99  # k points to the feet
    if seg_case.name == "axial_reversed_files":
        assert seg_case.source.source_files[0].name == "0020.dcm"
    if seg_case.name == "oblique":
        assert np.all(np.abs(direction) < 0.99)  # no axis is aligned with a patient axis
    assert set(np.unique(seg_case.labelmap.array)) == {0, *DRAWN_VALUES}


# ---- conformance --------------------------------------------------------------------------------------------
@needs_dciodvfy
def test_dciodvfy_reports_no_error(seg_case: SegCase) -> None:
    """dicom3tools accepts the SEG as a Segmentation IOD without errors."""
    report = run_dciodvfy(seg_case.seg_path)
    assert report.iod == "Segmentation", report.output
    assert report.errors == (), report.output
    assert validate_with_dciodvfy(seg_case.seg_path) == []


@needs_dciodvfy
def test_dciodvfy_finds_errors_in_a_broken_seg(seg_case: SegCase, tmp_path: Path) -> None:
    """The validator really reports errors (a Type 1 attribute removed)."""
    ds = pydicom.dcmread(seg_case.seg_path)
    del ds.SegmentSequence[0].SegmentLabel  # Type 1
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken)
    errors = validate_with_dciodvfy(broken)
    assert errors and all(line.startswith("Error") for line in errors)
    assert any("SegmentLabel" in line for line in errors), errors


def test_missing_tool_error_names_the_fix() -> None:
    """A missing tool raises a typed error whose message says how to install it."""
    with pytest.raises(MissingToolError, match="apt-get install no-such-package"):
        find_tool("medai-no-such-tool", "Install it with apt-get install no-such-package.")


# ---- read-back ----------------------------------------------------------------------------------------------
def test_highdicom_readback_is_voxel_identical(seg_case: SegCase) -> None:
    """Highdicom reads the SEG back, matched by source instance, voxel for voxel."""
    result = read_dicom_seg(seg_case.seg_path, seg_case.source)
    assert result.same_grid(seg_case.source)
    np.testing.assert_array_equal(result.array, seg_case.labelmap.array)


def test_geometric_readback_is_voxel_identical(seg_case: SegCase) -> None:
    """A reference without DICOM files (e.g. the same volume from NRRD) is matched in physical space."""
    reference = seg_case.source.with_array(seg_case.source.array, source_files=())
    result = read_dicom_seg(seg_case.seg_path, reference)
    np.testing.assert_array_equal(result.array, seg_case.labelmap.array)


def _cropped(image: Image, k0: int, j0: int, i0: int) -> Image:
    """``image[k0:, j0:, i0:]`` as a new image (no DICOM files) with the matching affine."""
    affine = image.ijk_to_ras.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([i0, j0, k0], dtype=float) + affine[:3, 3]
    return Image(image.array[k0:, j0:, i0:], affine)


def test_readback_onto_a_cropped_reference(seg_case: SegCase) -> None:
    """A reference grid that is a sub-block of the source receives exactly that block, placed in physical space."""
    reference = _cropped(seg_case.source, 1, 3, 2)
    result = read_dicom_seg(seg_case.seg_path, reference)
    assert result.same_grid(reference)
    np.testing.assert_array_equal(result.array, seg_case.labelmap.array[1:, 3:, 2:])


def test_reading_onto_another_frame_of_reference_raises(seg_case: SegCase) -> None:
    """A reference in other patient coordinates is refused rather than overlaid by coincidence."""
    metadata = {**seg_case.source.metadata, "FrameOfReferenceUID": "1.2.3.4"}
    other = Image(seg_case.source.array, seg_case.source.ijk_to_ras, metadata=metadata)
    with pytest.raises(GeometryError, match="frame of reference"):
        read_dicom_seg(seg_case.seg_path, other)


def test_reading_a_file_that_is_not_a_seg_raises(seg_case: SegCase) -> None:
    """A CT slice given as a SEG is refused with a typed error."""
    with pytest.raises(InputError, match="as a DICOM Segmentation"):
        read_dicom_seg(seg_case.source.source_files[0], seg_case.source)


@needs_dcmqi
def test_dcmqi_readback_is_voxel_identical(seg_case: SegCase, tmp_path: Path) -> None:
    """The converter behind Slicer's SEG import (dcmqi) reads back the same voxels in physical space."""
    result = read_dicom_seg_with_dcmqi(seg_case.seg_path, seg_case.source, tmp_path)
    assert result.same_grid(seg_case.source)
    np.testing.assert_array_equal(result.array, seg_case.labelmap.array)
    cropped = _cropped(seg_case.source, 1, 3, 2)
    np.testing.assert_array_equal(
        read_dicom_seg_with_dcmqi(seg_case.seg_path, cropped, tmp_path).array, seg_case.labelmap.array[1:, 3:, 2:]
    )
    assert list(tmp_path.iterdir()) == []  # dcmqi's output folder is removed


def test_frames_sit_on_their_source_slices(seg_case: SegCase) -> None:
    """Decode the SEG with plain pydicom: every frame's pixels, position and source reference match slice k."""
    ds = pydicom.dcmread(seg_case.seg_path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    uid_to_k = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): k
        for k, p in enumerate(seg_case.source.source_files)
    }
    values = {int(item.SegmentNumber): int(item.SegmentDescription.split()[-1]) for item in ds.SegmentSequence}
    lps = seg_case.source.ijk_to_lps
    seen = set()
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = uid_to_k[str(source_uid)]
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, lps[:3, 2] * k + lps[:3, 3], atol=1e-3)
        np.testing.assert_array_equal(frame.astype(bool), seg_case.labelmap.array[k] == values[number])
        seen.add((k, number))
    expected = {
        (k, number)
        for number, value in values.items()
        for k in range(seg_case.source.shape[0])
        if np.any(seg_case.labelmap.array[k] == value)
    }
    assert seen == expected  # empty frames omitted, no non-empty frame missing


# ---- metadata -----------------------------------------------------------------------------------------------
def test_segments_carry_labels_codes_colour_and_algorithm(seg_case: SegCase) -> None:
    """Segment names, codes, colours, algorithm identification and references are in the file."""
    import highdicom as hd

    ds = pydicom.dcmread(seg_case.seg_path)
    assert ds.SOPClassUID == SEGMENTATION_STORAGE
    assert ds.SegmentationType == "BINARY"
    assert ds.SeriesDescription == "MedAI segmentation"
    assert int(ds.SeriesNumber) == 300
    assert ds.ContentLabel == "MEDAI"
    assert ds.Manufacturer == "MedAI"
    assert ds.FrameOfReferenceUID == seg_case.source.metadata["FrameOfReferenceUID"]
    assert ds.StudyInstanceUID == seg_case.source.metadata["StudyInstanceUID"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == seg_case.source.metadata["SeriesInstanceUID"]

    by_value = {label.value: label for label in LABELS}
    segments = list(ds.SegmentSequence)
    assert [int(s.SegmentNumber) for s in segments] == [1, 2]  # only the labels present, in catalogue order
    for item, value in zip(segments, DRAWN_VALUES, strict=True):
        label = by_value[value]
        assert item.SegmentLabel == label.name
        assert item.SegmentDescription == f"MedAI label value {value}"
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "MedAI-TestNet"
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator, category.CodeMeaning) == (
            label.category.value,
            label.category.scheme,
            label.category.meaning,
        )
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == (
            label.type.value,
            label.type.scheme,
            label.type.meaning,
        )
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "MedAI-TestNet"
        assert algorithm.AlgorithmVersion == "1.2.3"
        family = algorithm.AlgorithmFamilyCodeSequence[0]
        assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")
        lab = hd.color.CIELabColor.from_dicom_value(tuple(int(v) for v in item.RecommendedDisplayCIELabValue))
        assert np.abs(np.array(lab.to_rgb()) - np.array(label.color_rgb255)).max() <= 1

    seg = hd.seg.segread(seg_case.seg_path)
    assert segment_value_map(seg) == {1: 1, 2: 3}


# ---- failure modes and defined edge cases -------------------------------------------------------------------
def test_labelmap_on_another_grid_raises_and_leaves_no_file(axial_source: Image, tmp_path: Path) -> None:
    """A label map off the source grid is refused with a clear message and no file."""
    out = tmp_path / "out"
    out.mkdir()
    shifted_affine = axial_source.ijk_to_ras.copy()
    shifted_affine[:3, 3] += [0.0, 0.0, 2.5]  # one slice off
    labels = np.zeros(axial_source.shape, dtype=np.uint8)
    labels[5, 10, 10] = 1
    shifted = Image(labels, shifted_affine)
    with pytest.raises(GeometryError, match="not on the grid of the source"):
        _write(shifted, axial_source, out / "seg.dcm")
    cropped = Image(labels[:, :, :-1], axial_source.ijk_to_ras)
    with pytest.raises(GeometryError, match="resample the label map"):
        _write(cropped, axial_source, out / "seg.dcm")
    assert _leftovers(out) == []


def test_empty_labelmap_raises_and_leaves_no_file(axial_source: Image, tmp_path: Path) -> None:
    """An empty label map is a defined error: nothing to store, no file written."""
    empty = axial_source.with_array(np.zeros(axial_source.shape, dtype=np.uint8), source_files=())
    with pytest.raises(EmptySegmentationError, match="no segmented voxel"):
        _write(empty, axial_source, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
    assert _leftovers(tmp_path) == []


def test_single_label_present_writes_one_segment(axial_source: Image, tmp_path: Path) -> None:
    """Only the labels present become segments; their values survive the round trip."""
    labels = np.zeros(axial_source.shape, dtype=np.int16)  # any integer type is accepted
    labels[4:6, 20:30, 20:30] = 2
    labelmap = axial_source.with_array(labels, source_files=())
    path = _write(labelmap, axial_source, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Airway"]
    np.testing.assert_array_equal(read_dicom_seg(path, axial_source).array, labels)


def test_unknown_label_value_raises(axial_source: Image, tmp_path: Path) -> None:
    """A voxel value without a catalogue label is refused rather than dropped."""
    labels = np.zeros(axial_source.shape, dtype=np.uint8)
    labels[3, 3, 3] = 7
    with pytest.raises(InputError, match=r"value\(s\) \[7\] that are not in the label list"):
        _write(axial_source.with_array(labels, source_files=()), axial_source, tmp_path / "seg.dcm")
    assert _leftovers(tmp_path) == []


def test_source_without_dicom_files_raises(axial_source: Image, tmp_path: Path) -> None:
    """A source that was not read from DICOM cannot be referenced."""
    labels = np.zeros(axial_source.shape, dtype=np.uint8)
    labels[3, 3, 3] = 1
    no_files = axial_source.with_array(axial_source.array, source_files=())
    with pytest.raises(InputError, match="read the source with read_dicom_series"):
        _write(axial_source.with_array(labels, source_files=()), no_files, tmp_path / "seg.dcm")


def test_duplicate_label_values_raise(axial_source: Image, tmp_path: Path) -> None:
    """A label list with a repeated value is refused."""
    labels = np.zeros(axial_source.shape, dtype=np.uint8)
    labels[3, 3, 3] = 1
    with pytest.raises(InputError, match="more than once"):
        write_dicom_seg(
            axial_source.with_array(labels, source_files=()),
            axial_source,
            [LABELS[0], LABELS[0]],
            tmp_path / "seg.dcm",
            algorithm_name="x",
            algorithm_version="1",
        )


def test_keeping_empty_frames_reads_back_the_same(axial_source: Image, tmp_path: Path) -> None:
    """omit_empty_frames=False stores every frame and still reads back identically."""
    labelmap = make_labelmap(axial_source)
    path = _write(labelmap, axial_source, tmp_path / "seg.dcm", omit_empty_frames=False)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert int(ds.NumberOfFrames) == 2 * axial_source.shape[0]
    np.testing.assert_array_equal(read_dicom_seg(path, axial_source).array, labelmap.array)


def test_geometry_table_is_complete() -> None:
    """The parametrisation covers axial (both orders), sagittal, coronal and oblique."""
    assert {"axial_ascending", "axial_descending", "sagittal", "coronal", "oblique"} <= set(GEOMETRIES)
