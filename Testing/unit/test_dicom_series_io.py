"""DICOM series / NIfTI / NRRD reading: geometry for every acquisition direction and each bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io import (
    Image,
    affine_from_parts,
    list_series,
    load_image,
    read_dicom_series,
    read_volume_file,
    write_dicom_series,
    write_volume_file,
)
from MedAIExtension.io.geometry import LPS_TO_RAS, ijk_to_physical

AXIAL = np.diag([-1.0, -1.0, 1.0])
GEOMETRIES = {
    "axial": AXIAL,
    "axial-reversed": np.diag([-1.0, -1.0, -1.0]),
    "sagittal": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "coronal": np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "oblique": Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix() @ AXIAL,
}


def _image(direction: np.ndarray, shape=(6, 7, 8), spacing=(0.8, 0.9, 2.5), seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, shape).astype(np.int16)
    return Image(array, affine_from_parts([12.0, -30.0, 45.0], spacing, direction), modality="CT")


def _physical_samples(image: Image) -> dict[tuple[float, float, float], int]:
    k, j, i = np.indices(image.shape).reshape(3, -1)
    points = ijk_to_physical(image.ijk_to_ras, np.stack([i, j, k], axis=1))
    return {tuple(np.round(p, 3)): int(v) for p, v in zip(points, image.array.reshape(-1))}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_dicom_round_trip_keeps_every_voxel_at_its_physical_place(tmp_path: Path, name: str) -> None:
    image = _image(GEOMETRIES[name])
    write_dicom_series(image, tmp_path / "ct", uid_seed=name)
    back = read_dicom_series(tmp_path / "ct")
    assert back.array.dtype == np.int16
    assert _physical_samples(back) == _physical_samples(image)
    assert len(back.source_files) == image.shape[0]
    # slices are sorted along the normal: k increases along the slice normal
    normal = np.cross(back.ijk_to_lps[:3, 0], back.ijk_to_lps[:3, 1])
    assert float(back.ijk_to_lps[:3, 2] @ normal) > 0


def test_file_order_does_not_matter(tmp_path: Path) -> None:
    image = _image(AXIAL)
    files = write_dicom_series(image, tmp_path / "a")
    shuffled = tmp_path / "b"
    shuffled.mkdir()
    for index, path in enumerate(reversed(files)):
        shutil.copy(path, shuffled / f"x{index:03d}")
    back = read_dicom_series(shuffled)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.ijk_to_ras, image.ijk_to_ras, atol=1e-5)


def test_lps_ras_convention_matches_dicom_position(tmp_path: Path) -> None:
    image = _image(AXIAL)
    files = write_dicom_series(image, tmp_path)
    ds = pydicom.dcmread(files[0])
    lps = np.array(ds.ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(LPS_TO_RAS[:3, :3] @ lps, image.ijk_to_ras[:3, 3], atol=1e-5)


def test_non_dicom_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    write_dicom_series(_image(AXIAL), tmp_path)
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "DICOMDIR.bak").write_bytes(b"\0" * 300)
    warnings: list[str] = []
    back = read_dicom_series(tmp_path, warn=warnings.append)
    assert back.shape == (6, 7, 8)
    assert warnings and "Skipped 2 file(s)" in warnings[0]


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    write_dicom_series(_image(AXIAL), tmp_path / "s1", series_number=1, uid_seed="a")
    write_dicom_series(_image(AXIAL, seed=1), tmp_path / "s2", series_number=2, uid_seed="b")
    with pytest.raises(InputError, match="2 image series; choose one with --series"):
        read_dicom_series(tmp_path)
    series, _ = list_series(tmp_path)
    chosen = read_dicom_series(tmp_path, series_uid=series[1].series_uid)
    assert chosen.metadata["SeriesInstanceUID"] == series[1].series_uid
    with pytest.raises(InputError, match="is not in"):
        read_dicom_series(tmp_path, series_uid="1.2.3")


def test_missing_slice_is_rejected(tmp_path: Path) -> None:
    files = write_dicom_series(_image(AXIAL), tmp_path)
    files[3].unlink()
    with pytest.raises(GeometryError, match="missing about 1 slice"):
        read_dicom_series(tmp_path)


def test_uneven_spacing_is_rejected(tmp_path: Path) -> None:
    files = write_dicom_series(_image(AXIAL), tmp_path)
    ds = pydicom.dcmread(files[4])
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 0.6]
    ds.save_as(files[4])
    with pytest.raises(GeometryError, match="uneven"):
        read_dicom_series(tmp_path)


def test_mixed_orientation_is_rejected(tmp_path: Path) -> None:
    files = write_dicom_series(_image(AXIAL), tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(files[2])
    with pytest.raises(GeometryError, match="different orientations"):
        read_dicom_series(tmp_path)


def test_single_slice_is_a_2d_image(tmp_path: Path) -> None:
    files = write_dicom_series(_image(AXIAL), tmp_path)
    for path in files[1:]:
        path.unlink()
    with pytest.raises(InputError, match="2D image"):
        read_dicom_series(tmp_path)


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="No DICOM image series"):
        read_dicom_series(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.nii.gz")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputError, match="neither a DICOM folder nor a volume file"):
        load_image(tmp_path / "x.txt")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("name", ["axial", "sagittal", "oblique"])
def test_volume_file_round_trip(tmp_path: Path, suffix: str, name: str) -> None:
    image = _image(GEOMETRIES[name])
    path = write_volume_file(image, tmp_path / f"v{suffix}")
    back = read_volume_file(path)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.ijk_to_ras, image.ijk_to_ras, atol=1e-4)


def test_nan_voxels_and_2d_arrays_are_refused() -> None:
    array = np.zeros((3, 4, 5), dtype=np.float32)
    array[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Image(array, np.eye(4))
    with pytest.raises(InputError, match="3D volume"):
        Image(np.zeros((4, 5)), np.eye(4))
    with pytest.raises(InputError, match="2D image"):
        Image(np.zeros((1, 4, 5)), np.eye(4))


def test_nan_in_nifti_is_refused_on_load(tmp_path: Path) -> None:
    import SimpleITK as sitk

    array = np.zeros((4, 5, 6), dtype=np.float32)
    array[0, 0, 0] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "nan.nrrd"))
    with pytest.raises(InputError, match="NaN"):
        load_image(tmp_path / "nan.nrrd")


def _as_float_pixel_data(folder: Path, values: list[np.ndarray]) -> None:
    for path, slab in zip(sorted(folder.glob("*.dcm")), values):
        ds = pydicom.dcmread(path)
        del ds.PixelData
        for keyword in ("PixelRepresentation", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.BitsAllocated = 32
        del ds.BitsStored, ds.HighBit
        ds.FloatPixelData = np.ascontiguousarray(slab, dtype="<f4").tobytes()
        ds.save_as(path)


def test_float_pixel_data_keeps_its_fractions(tmp_path: Path) -> None:
    """Float Pixel Data (e.g. an ADC map) is read as float, not truncated to whole numbers."""
    image = _image(np.eye(3), shape=(4, 5, 6))
    write_dicom_series(image, tmp_path / "ct")
    fractions = [np.full((5, 6), 0.25 + k, dtype=np.float32) for k in range(4)]
    _as_float_pixel_data(tmp_path / "ct", fractions)
    read = read_dicom_series(tmp_path / "ct")
    assert read.array.dtype == np.float32
    np.testing.assert_array_equal(read.array, np.stack(fractions))
