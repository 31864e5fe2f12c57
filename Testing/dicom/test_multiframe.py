"""Multi-frame (enhanced) CT and MR in one file, read like a series and segmented with a DICOM SEG on its frames.

Real inputs only: pydicom-data's Enhanced CT (``eCT_Supplemental.dcm``), pydicom's Enhanced MR
(``emri_small*.dcm``) in five transfer syntaxes, and a Legacy Converted Enhanced CT that highdicom builds from a
small phantom series. Expected geometry is computed here from the files' functional groups, not with the reader.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_test_data import dciodvfy_missing_reason
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from MedAIExtension.cli import main
from MedAIExtension.dicom import read_dicom_seg, run_dciodvfy, write_dicom_seg
from MedAIExtension.errors import GeometryError
from MedAIExtension.io import read_dicom_series, read_volume_file
from MedAIExtension.io.image import Image
from MedAIExtension.io.multiframe import read_multiframe
from MedAIExtension.labels import SegmentLabel

MODEL = "chest-ct-lung-nodule"
needs_dciodvfy = pytest.mark.skipif(dciodvfy_missing_reason() is not None, reason=str(dciodvfy_missing_reason()))
EMRI_SYNTAXES = (
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
)


def _lps_point(image: Image, ijk: tuple[float, float, float]) -> np.ndarray:
    return (image.ijk_to_lps @ np.array([*ijk, 1.0]))[:3]


def _legacy_enhanced_ct(series_folder: Path, target: Path) -> Path:
    """A Legacy Converted Enhanced CT made by highdicom from the single-frame files of ``series_folder``."""
    datasets = [pydicom.dcmread(p) for p in sorted(series_folder.glob("*.dcm"))]
    converted = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid=hd.UID(),
        series_number=7,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    target.mkdir(parents=True)
    path = target / "enhanced.dcm"
    converted.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small phantom chest CT (96×72×48) as single-frame files and as one Legacy Converted Enhanced CT file.

    A small body (as in Testing/phantoms.py) keeps the model at 12 windows, about 5 s per run on 2 cores.
    """
    from MedAIExtension.phantom import AnatomySpec, PhantomSpec
    from MedAIExtension.phantom.study import write_phantom_study

    root = tmp_path_factory.mktemp("multiframe")
    spec = PhantomSpec(
        size_ijk=(96, 72, 48),
        spacing=(2.6, 2.6, 3.8),
        seed=11,
        anatomy=AnatomySpec(body_semi_axes_mm=(115.0, 82.0), fat_mm=8.0, lung_height_mm=160.0),
    )
    phantom = write_phantom_study(root / "phantom", spec=spec)
    path = _legacy_enhanced_ct(phantom["ct"], root / "enhanced")
    return {"single": phantom["ct"], "multi": path.parent, "file": path}


# ---- reading ------------------------------------------------------------------------------------------------
def test_enhanced_ct_geometry_comes_from_the_functional_groups(tmp_path: Path) -> None:
    """eCT_Supplemental.dcm: every frame where its PlanePosition/PlaneOrientation/PixelMeasures put it."""
    source = Path(get_testdata_file("eCT_Supplemental.dcm"))
    shutil.copy(source, tmp_path / source.name)
    image = read_dicom_series(tmp_path)

    ds = pydicom.dcmread(source)
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    slope = float(shared.PixelValueTransformationSequence[0].RescaleSlope)
    intercept = float(shared.PixelValueTransformationSequence[0].RescaleIntercept)
    positions = [
        np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    assert image.shape == (int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)) == (2, 512, 512)
    assert image.modality == "CT"
    assert image.source_files == (tmp_path / source.name,) * 2
    assert sorted(image.source_frames) == [1, 2]
    assert image.metadata["FrameOfReferenceUID"] == ds.FrameOfReferenceUID
    normal = np.cross(orientation[:3], orientation[3:])
    for k, frame in enumerate(image.source_frames):
        origin = _lps_point(image, (0, 0, k))
        assert np.allclose(origin, positions[frame - 1], atol=1e-4)
        assert np.allclose(_lps_point(image, (1, 0, k)) - origin, orientation[:3] * column_spacing, atol=1e-6)
        assert np.allclose(_lps_point(image, (0, 1, k)) - origin, orientation[3:] * row_spacing, atol=1e-6)
        expected = ds.pixel_array[frame - 1].astype(np.int32) * slope + intercept
        assert np.array_equal(image.array[k], expected)
    # k runs along the slice normal (frame 2 lies 10 mm further along it than frame 1)
    assert float((_lps_point(image, (0, 0, 1)) - _lps_point(image, (0, 0, 0))) @ normal) == pytest.approx(10.0)
    assert image.array.dtype == np.int16


def _with_geometry(ds: Dataset) -> Dataset:
    """emri_small has no geometry at all: give it what an Enhanced MR carries (shared + per-frame groups)."""
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    measures.PixelSpacing = [0.9, 0.8]
    measures.SliceThickness = 1.2
    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for frame in range(int(ds.NumberOfFrames)):
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [-30.0 - 1.2 * frame, -20.0, 40.0]  # along the normal (-1, 0, 0)
        item.PlanePositionSequence = DicomSequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    return ds


def test_enhanced_mr_without_geometry_is_refused_and_reads_in_every_syntax_with_it(tmp_path: Path) -> None:
    """emri_small*.dcm: refused naming the missing frame geometry; with it, the same volume in all 5 syntaxes."""
    plain = Path(get_testdata_file("emri_small.dcm"))
    shutil.copy(plain, tmp_path / plain.name)
    with pytest.raises(GeometryError, match=r"10 frames but no per-frame functional groups.*plane positions"):
        read_dicom_series(tmp_path)

    reference = pydicom.dcmread(plain).pixel_array
    arrays = {}
    for name in EMRI_SYNTAXES:
        path = Path(get_testdata_file(name))
        image = read_multiframe(_with_geometry(pydicom.dcmread(path)), path)
        assert image.shape == (10, 64, 64) and image.modality == "MR"
        assert image.source_frames == tuple(range(1, 11))
        assert np.allclose(image.spacing, [0.8, 0.9, 1.2])
        arrays[name] = image.array
    for name, array in arrays.items():
        assert np.array_equal(array, reference), name

    # the same through a folder: written with its geometry, listed as a series and read
    folder = tmp_path / "with-geometry"
    folder.mkdir()
    _with_geometry(pydicom.dcmread(plain)).save_as(folder / "mr.dcm", enforce_file_format=True)
    image = read_dicom_series(folder)
    assert np.array_equal(image.array, reference)
    assert np.allclose(_lps_point(image, (0, 0, 9)), [-30.0 - 1.2 * 9, -20.0, 40.0])


def test_legacy_converted_enhanced_ct_reads_like_its_series(study: dict[str, Path]) -> None:
    single = read_dicom_series(study["single"])
    multi = read_dicom_series(study["multi"])
    assert multi.array.dtype == single.array.dtype == np.int16
    assert np.array_equal(multi.array, single.array)
    assert np.allclose(multi.ijk_to_ras, single.ijk_to_ras, atol=1e-5)
    assert multi.source_files == (study["file"],) * single.shape[0]
    assert sorted(multi.source_frames) == list(range(1, single.shape[0] + 1))


@pytest.mark.skipif(shutil.which("gdcmconv") is None, reason="gdcmconv (Debian libgdcm-tools) is not installed")
@pytest.mark.parametrize("option", ["--jpeg", "--j2k", "--jpegls", "--rle"])
def test_reencoded_multiframe_file_reads_identically(study: dict[str, Path], tmp_path: Path, option: str) -> None:
    """The Enhanced CT re-encoded by GDCM (JPEG lossless process 14, JPEG 2000, JPEG-LS, RLE) gives the same voxels."""
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "enhanced.dcm"
    subprocess.run(["gdcmconv", option, str(study["file"]), str(target)], check=True, capture_output=True)
    assert pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    single = read_dicom_series(study["single"])
    image = read_dicom_series(target.parent)
    assert np.array_equal(image.array, single.array)
    assert np.allclose(image.ijk_to_ras, single.ijk_to_ras, atol=1e-5)
    assert "LossyCompression" not in image.metadata


def _shuffled(path: Path, target: Path, seed: int) -> tuple[Path, np.ndarray]:
    """``path`` with its frames (pixels and per-frame groups together) in a random order."""
    ds = pydicom.dcmread(path)
    frames = int(ds.NumberOfFrames)
    permutation = np.random.default_rng(seed).permutation(frames)
    pixels = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(pixels[permutation]).tobytes()
    items = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence([items[i] for i in permutation])
    target.mkdir()
    ds.save_as(target / "shuffled.dcm", enforce_file_format=True)
    return target / "shuffled.dcm", permutation


def test_shuffled_frames_give_the_same_volume_and_seg_references(study: dict[str, Path], tmp_path: Path) -> None:
    single = read_dicom_series(study["single"])
    path, _ = _shuffled(study["file"], tmp_path / "shuffled", seed=4)
    image = read_dicom_series(path.parent)
    assert np.array_equal(image.array, single.array)
    assert np.allclose(image.ijk_to_ras, single.ijk_to_ras, atol=1e-5)
    assert image.source_frames != tuple(sorted(image.source_frames))

    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[3:9, 20:40, 30:50] = 1
    labels[image.shape[0] - 1, 0, 0] = 1
    seg_path = write_dicom_seg(
        image.with_array(labels, source_files=()),
        image,
        (SegmentLabel(1, "Lung", (0.5, 0.7, 0.9)),),
        tmp_path / "seg.dcm",
        algorithm_name="MedAI-TestNet",
        algorithm_version="1",
    )
    assert np.array_equal(read_dicom_seg(seg_path, image).array, labels)
    _assert_frames_reference_their_source(seg_path, path)


def _assert_frames_reference_their_source(seg_path: Path, source_path: Path) -> None:
    """Every SEG frame references one frame of the source, which lies where the SEG frame lies."""
    seg = pydicom.dcmread(seg_path)
    source = pydicom.dcmread(source_path, stop_before_pixels=True)
    source_positions = [
        np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        for item in source.PerFrameFunctionalGroupsSequence
    ]
    for item in seg.PerFrameFunctionalGroupsSequence:
        reference = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        frame = int(reference.ReferencedFrameNumber)
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        assert np.allclose(source_positions[frame - 1], position, atol=1e-3)


# ---- medai segment ------------------------------------------------------------------------------------------
def test_medai_segment_on_a_multiframe_file_matches_the_series(study: dict[str, Path], tmp_path: Path) -> None:
    """Same labels as the single-frame run; the SEG passes dciodvfy and references the right source frames."""
    outputs = {}
    for kind in ("single", "multi"):
        out = tmp_path / kind
        argv = ["segment", "--input", str(study[kind]), "--model", MODEL, "--output", str(out), "--quiet"]
        assert main([*argv, "--format", "nii.gz,dicom-seg"]) == 0
        outputs[kind] = out
    single = read_volume_file(outputs["single"] / "segmentation.nii.gz")
    multi = read_volume_file(outputs["multi"] / "segmentation.nii.gz")
    assert np.count_nonzero(single.array) > 1000
    assert np.array_equal(multi.array, single.array)
    assert np.allclose(multi.ijk_to_ras, single.ijk_to_ras, atol=1e-5)

    seg_path = outputs["multi"] / "segmentation.dcm"
    seg = hd.seg.segread(seg_path)
    assert {uids[2] for uids in seg.get_source_image_uids()} == {pydicom.dcmread(study["file"]).SOPInstanceUID}
    _assert_frames_reference_their_source(seg_path, study["file"])
    image = read_dicom_series(study["multi"])
    assert np.array_equal(read_dicom_seg(seg_path, image).array, single.array)
    if dciodvfy_missing_reason() is None:
        report = run_dciodvfy(seg_path)
        assert report.iod == "Segmentation", report.output
        assert report.errors == (), report.output


def test_track_and_explain_refuse_a_multiframe_source_before_any_work(
    study: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tracking SR and the Parametric Map cannot reference a multi-frame source yet: said up front, no output."""
    multi = str(study["multi"])
    track = ["track", "--baseline", multi, "--followup", multi, "--output", str(tmp_path / "t"), "--quiet"]
    assert main(track) == 2
    err = capsys.readouterr().err
    assert "multi-frame" in err and "tracking SR" in err and "Traceback" not in err
    explain = ["explain", "--input", multi, "--model", MODEL, "--method", "occlusion"]
    assert main([*explain, "--output", str(tmp_path / "e"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "multi-frame" in err and "--no-dicom" in err and "Traceback" not in err
    for folder in (tmp_path / "t", tmp_path / "e"):
        assert not folder.exists() or not any(folder.rglob("*"))
