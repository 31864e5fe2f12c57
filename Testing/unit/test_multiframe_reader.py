"""The multi-frame reader's checks on real multi-frame files: what is refused, with which message.

Each case starts from a small Legacy Converted Enhanced CT that highdicom builds from a written series and changes
one thing in its functional groups, the way other writers' files differ.
"""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from MedAIExtension.dicom.source import load_source_datasets, reference_sop_uids, require_single_frame_source
from MedAIExtension.errors import GeometryError, InputError, MedAIError
from MedAIExtension.io import read_dicom_series, write_dicom_series
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image
from MedAIExtension.io.multiframe import read_multiframe

SHAPE_KJI = (6, 8, 10)


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Image]:
    """A 6-frame Legacy Converted Enhanced CT (oblique) and the single-frame series it was made from."""
    folder = tmp_path_factory.mktemp("series")
    direction = np.linalg.qr(np.array([[1.0, 0.3, 0.1], [-0.2, 1.0, 0.2], [0.1, -0.3, 1.0]]))[0]
    lps = affine_from_parts(np.array([-25.0, 40.0, -110.0]), np.array([0.8, 0.7, 2.5]), direction)
    voxels = np.random.default_rng(0).integers(-1000, 400, SHAPE_KJI).astype(np.int16)
    files = write_dicom_series(Image(voxels, LPS_TO_RAS @ lps, modality="CT"), folder, uid_seed="medai-multiframe")
    converted = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in files],
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    return converted, read_dicom_series(folder)


def _frames(ds: Dataset) -> list[Dataset]:
    return list(ds.PerFrameFunctionalGroupsSequence)


def _content(ds: Dataset, frame: int) -> Dataset:
    return ds.PerFrameFunctionalGroupsSequence[frame].FrameContentSequence[0]


def test_the_untouched_file_reads_like_its_series(enhanced: tuple[Dataset, Image], tmp_path: Path) -> None:
    ds, series = enhanced
    image = read_multiframe(copy.deepcopy(ds), tmp_path / "x.dcm")
    assert np.array_equal(image.array, series.array)
    assert np.allclose(image.ijk_to_ras, series.ijk_to_ras, atol=1e-5)


def test_per_frame_orientation_measures_and_rescale_override_shared(
    enhanced: tuple[Dataset, Image], tmp_path: Path
) -> None:
    """Geometry repeated per frame (no shared item) and a per-frame rescale give the same volume, rescaled."""
    ds, series = enhanced
    ds = copy.deepcopy(ds)
    shared = ds.SharedFunctionalGroupsSequence[0]
    for item in _frames(ds):
        item.PlaneOrientationSequence = copy.deepcopy(shared.PlaneOrientationSequence)
        item.PixelMeasuresSequence = copy.deepcopy(shared.PixelMeasuresSequence)
        item.PixelValueTransformationSequence = copy.deepcopy(shared.PixelValueTransformationSequence)
    for keyword in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        delattr(shared, keyword)
    frame = _frames(ds)[2].PixelValueTransformationSequence[0]
    frame.RescaleSlope, frame.RescaleIntercept = 2, -5
    image = read_multiframe(ds, tmp_path / "x.dcm")
    assert np.allclose(image.ijk_to_ras, series.ijk_to_ras, atol=1e-5)
    k = image.source_frames.index(3)
    stored = ds.pixel_array[2].astype(np.int32)
    assert np.array_equal(image.array[k], stored * 2 - 5)
    others = [i for i in range(SHAPE_KJI[0]) if i != k]
    assert np.array_equal(image.array[others], series.array[others])
    frame.RescaleSlope = 0.5  # not whole: float32 values
    image = read_multiframe(ds, tmp_path / "x.dcm")
    assert image.array.dtype == np.float32
    assert np.allclose(image.array[k], stored * 0.5 - 5)


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ("no_position", GeometryError, r"Frame 4 .* no ImagePositionPatient"),
        ("no_spacing", GeometryError, r"no PixelSpacing .*PixelMeasuresSequence"),
        ("two_stacks", GeometryError, r"2 stacks \(StackID 1, 2\)"),
        ("two_times", GeometryError, r"2 temporal positions \(TemporalPositionIndex 1, 2\).*dynamic"),
        ("duplicate", GeometryError, r"Frames 2, 3 of this multi-frame image share the same position\. It holds"),
        ("two_echoes", GeometryError, r"Frames 2, 3 .* share the same position; they differ in EffectiveEchoTime"),
        ("missing_frame", GeometryError, r"missing about 1 frame"),
        ("tilted", GeometryError, r"different orientations"),
        ("one_frame", InputError, r"single frame: that is a 2D image"),
        ("rgb", InputError, r"colour"),
        ("palette", InputError, r"colour image \(PALETTE COLOR"),
        ("huge", InputError, r"65535×65535 pixels"),
        ("no_per_frame", GeometryError, r"no per-frame functional groups"),
        ("short_pixels", InputError, r"incomplete"),
    ],
)
def test_broken_files_are_refused_by_name(
    enhanced: tuple[Dataset, Image], tmp_path: Path, change: str, error: type, pattern: str
) -> None:
    ds = copy.deepcopy(enhanced[0])
    frames = _frames(ds)
    if change == "no_position":
        del frames[3].PlanePositionSequence
    elif change == "no_spacing":
        del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    elif change == "two_stacks":
        _content(ds, 5).StackID = "2"
    elif change == "two_times":
        for frame in range(len(frames)):
            _content(ds, frame).TemporalPositionIndex = 1 + frame % 2
    elif change in ("duplicate", "two_echoes"):
        frames[2].PlanePositionSequence = copy.deepcopy(frames[1].PlanePositionSequence)
        if change == "two_echoes":  # a second dimension (echo) tells the frames at one position apart
            echo = Dataset()
            echo.DimensionOrganizationUID = ds.DimensionIndexSequence[0].DimensionOrganizationUID
            echo.DimensionIndexPointer = pydicom.tag.Tag("EffectiveEchoTime")
            echo.FunctionalGroupPointer = pydicom.tag.Tag("MREchoSequence")
            ds.DimensionIndexSequence.append(echo)
            for frame in range(len(frames)):
                _content(ds, frame).DimensionIndexValues = [frame + 1 - (frame >= 2), 1 + (frame == 2)]
    elif change == "missing_frame":
        position = frames[0].PlanePositionSequence[0]
        step = np.array(frames[1].PlanePositionSequence[0].ImagePositionPatient, dtype=float) - np.array(
            position.ImagePositionPatient, dtype=float
        )
        position.ImagePositionPatient = list(np.array(position.ImagePositionPatient, dtype=float) - step)
    elif change == "tilted":
        item = Dataset()
        item.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]
        frames[4].PlaneOrientationSequence = DicomSequence([item])
    elif change == "one_frame":
        ds.NumberOfFrames = 1
    elif change == "rgb":
        ds.SamplesPerPixel = 3
    elif change == "palette":
        ds.PhotometricInterpretation = "PALETTE COLOR"
    elif change == "huge":
        ds.Rows = ds.Columns = 65535
    elif change == "no_per_frame":
        del ds.PerFrameFunctionalGroupsSequence
    elif change == "short_pixels":
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    with pytest.raises(error, match=pattern):
        read_multiframe(ds, tmp_path / "x.dcm")


def test_several_multiframe_files_in_one_series_are_refused(enhanced: tuple[Dataset, Image], tmp_path: Path) -> None:
    ds = enhanced[0]
    for name in ("a.dcm", "b.dcm"):
        ds.save_as(tmp_path / name, enforce_file_format=True)
    with pytest.raises(InputError, match=r"2 multi-frame file\(s\).*one multi-frame file"):
        read_dicom_series(tmp_path)


def test_source_frames_are_validated_and_dropped_with_the_files(
    enhanced: tuple[Dataset, Image], tmp_path: Path
) -> None:
    path = tmp_path / "enhanced.dcm"
    enhanced[0].save_as(path, enforce_file_format=True)
    image = read_dicom_series(tmp_path)
    assert image.with_array(image.array).source_frames == image.source_frames
    assert image.with_array(image.array, source_files=()).source_frames == ()
    for frames in ((1, 2), (0, 1, 2, 3, 4, 5), (1, 1, 2, 3, 4, 5)):
        with pytest.raises(InputError, match="frame"):
            Image(image.array, image.ijk_to_ras, source_files=image.source_files, source_frames=frames)
    with pytest.raises(InputError, match="frame"):
        Image(image.array, image.ijk_to_ras, source_frames=image.source_frames)  # frames without files

    # derived objects: the SEG gets the one dataset; the others refuse with one message, before any work
    (dataset,) = load_source_datasets(image, "DICOM SEG", multiframe=True)
    assert dataset.SOPInstanceUID == enhanced[0].SOPInstanceUID
    for what in ("tracking SR", "DICOM Parametric Map"):
        with pytest.raises(InputError, match=f"multi-frame .*a {what} cannot reference"):
            load_source_datasets(image, what)
        with pytest.raises(InputError, match="multi-frame"):
            require_single_frame_source(image, what)
    assert reference_sop_uids(image) is None
    swapped = image.with_array(image.array, source_files=image.source_files, source_frames=image.source_frames[::-1])
    with pytest.raises(GeometryError, match="source_frames do not match"):
        load_source_datasets(swapped, "DICOM SEG", multiframe=True)


def test_lossy_compression_is_recorded_and_warned(enhanced: tuple[Dataset, Image], tmp_path: Path) -> None:
    ds = copy.deepcopy(enhanced[0])
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.save_as(tmp_path / "lossy.dcm", enforce_file_format=True)
    warnings: list[str] = []
    image = read_dicom_series(tmp_path, warn=warnings.append)
    assert "lossy" in image.metadata["LossyCompression"]
    assert any("lossy compressed" in w for w in warnings)


def _elements(dataset: Dataset) -> list[tuple[Dataset, int]]:
    """Every (dataset, tag) pair, nested functional-group items included."""
    found = []
    for element in dataset:
        found.append((dataset, int(element.tag)))
        if element.VR == "SQ":
            for item in element.value:
                found.extend(_elements(item))
    return found


_GARBAGE = ("", "x", "-1", "0", "1e400", "NaN", "1\\2\\3\\4\\5\\6\\7")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, len(_GARBAGE))), min_size=1, max_size=3))
def test_damaged_headers_raise_only_medai_errors(
    enhanced: tuple[Dataset, Image], tmp_path: Path, edits: list[tuple[int, int]]
) -> None:
    """Deleting or garbling any attribute (functional groups included) gives a MedAI error or a valid volume."""
    ds = copy.deepcopy(enhanced[0])
    elements = _elements(ds)
    for which, value in edits:
        parent, tag = elements[which % len(elements)]
        if tag not in parent:
            continue
        if value == len(_GARBAGE):
            del parent[tag]
        elif parent[tag].VR == "SQ":
            parent[tag].value = []
        elif tag != 0x7FE00010:
            try:
                parent[tag].value = _GARBAGE[value]
            except (ValueError, TypeError, OverflowError):  # pydicom refuses to hold some values at all
                continue
    try:
        image = read_multiframe(ds, tmp_path / "x.dcm")
    except MedAIError:
        return
    assert image.shape[0] == len(image.source_frames)
