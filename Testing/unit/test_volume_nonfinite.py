"""NaN and ±inf in volume files are refused, never read as 0 (issue 14, item 2).

SimpleITK's NIfTI reader turns NaN/inf voxels (and a NaN ``scl_slope``, ``srow`` …) into 0, so the test files are
written here byte by byte — NIfTI-1/NIfTI-2 headers with ``struct``, NRRD and MetaImage text headers — not with
SimpleITK, so that the test does not share the reader's blind spot.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.cli import main
from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io import volume_files
from MedAIExtension.io.volume_files import read_volume_file

SHAPE = (6, 7, 8)  # (k, j, i)
_DATATYPES = {np.dtype("float32"): (16, 32), np.dtype("float64"): (64, 64), np.dtype("int16"): (4, 16)}


def _nifti_bytes(
    array: np.ndarray,
    *,
    version: int = 1,
    byteorder: str = "<",
    spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
    slope: float = 1.0,
    inter: float = 0.0,
    srow_x0: float | None = None,
) -> bytes:
    """A single-file NIfTI (``.nii``) holding ``array`` (indexed ``[k, j, i]``), sform = spacing, origin 0."""
    datatype, bitpix = _DATATYPES[array.dtype]
    nk, nj, ni = array.shape
    dims = (3, ni, nj, nk, 1, 1, 1, 1)
    pixdim = (1.0, *spacing, 0.0, 0.0, 0.0, 0.0)
    srow = [spacing[0], 0, 0, 0, 0, spacing[1], 0, 0, 0, 0, spacing[2], 0]
    if srow_x0 is not None:
        srow[0] = srow_x0
    o = byteorder
    if version == 1:
        header = bytearray(348)
        struct.pack_into(f"{o}i", header, 0, 348)
        struct.pack_into(f"{o}8h", header, 40, *dims)
        struct.pack_into(f"{o}2h", header, 70, datatype, bitpix)
        struct.pack_into(f"{o}8f", header, 76, *pixdim)
        struct.pack_into(f"{o}3f", header, 108, 352.0, slope, inter)
        struct.pack_into(f"{o}2h", header, 252, 0, 1)  # qform unknown, sform scanner
        struct.pack_into(f"{o}12f", header, 280, *srow)
        header[344:348] = b"n+1\0"
        head = bytes(header) + b"\0\0\0\0"  # no extensions; data at 352
    else:
        header = bytearray(540)
        struct.pack_into(f"{o}i", header, 0, 540)
        header[4:12] = b"n+2\0\r\n\x1a\n"
        struct.pack_into(f"{o}2h", header, 12, datatype, bitpix)
        struct.pack_into(f"{o}8q", header, 16, *dims)
        struct.pack_into(f"{o}8d", header, 104, *pixdim)
        struct.pack_into(f"{o}q", header, 168, 544)
        struct.pack_into(f"{o}2d", header, 176, slope, inter)
        struct.pack_into(f"{o}2i", header, 344, 0, 1)
        struct.pack_into(f"{o}12d", header, 400, *srow)
        head = bytes(header) + b"\0\0\0\0"
    return head + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(o)).tobytes()


def _write_nifti(path: Path, array: np.ndarray, **kwargs: object) -> Path:
    data = _nifti_bytes(array, **kwargs)  # type: ignore[arg-type]
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _values(dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(1).normal(0.0, 100.0, SHAPE).astype(dtype)


def _with_nan(count: int = 3, dtype: str = "float32") -> np.ndarray:
    values = _values(dtype)
    values.reshape(-1)[np.random.default_rng(2).choice(values.size, count, replace=False)] = np.nan
    return values


# ---- NIfTI -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_clean_float_nifti_reads_exactly(tmp_path: Path, suffix: str) -> None:
    """No false alarm: a finite float volume written byte by byte reads back value for value."""
    values = _values()
    image = read_volume_file(_write_nifti(tmp_path / f"clean{suffix}", values))
    np.testing.assert_array_equal(image.array, values)
    np.testing.assert_allclose(image.spacing, (0.8, 0.9, 2.5), rtol=1e-6)


def test_scaled_int16_nifti_reads_scaled(tmp_path: Path) -> None:
    """A finite scl_slope/scl_inter on integer voxels is applied, not refused."""
    stored = np.random.default_rng(3).integers(-500, 500, SHAPE).astype(np.int16)
    image = read_volume_file(_write_nifti(tmp_path / "scaled.nii", stored, slope=2.0, inter=-1024.0))
    np.testing.assert_allclose(image.array, stored * 2.0 - 1024.0)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_nifti_with_a_few_nan_is_refused(tmp_path: Path, suffix: str, byteorder: str) -> None:
    """Three NaN voxels (plain/gzip, little/big endian): refused, naming the file and the count."""
    path = _write_nifti(tmp_path / f"nan{suffix}", _with_nan(3), byteorder=byteorder)
    with pytest.raises(InputError, match=r"3 NaN") as caught:
        read_volume_file(path)
    assert path.name in str(caught.value)
    assert not isinstance(caught.value, GeometryError)


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_nifti2_is_parsed_and_refused_clearly(tmp_path: Path, byteorder: str) -> None:
    """ITK 5 does not read NIfTI-2: a clear refusal; the raw check parses its header should ITK read it later."""
    path = _write_nifti(tmp_path / "nan2.nii.gz", _with_nan(3), version=2, byteorder=byteorder)
    header = volume_files._read_nifti_header(path)
    assert header is not None and header.version == 2 and header.shape == SHAPE[::-1]
    assert volume_files._count_nifti_nonfinite(path, header) == (3, 0, int(np.prod(SHAPE)))
    with pytest.raises(InputError, match=r"NIfTI-2"):
        read_volume_file(path)


@pytest.mark.parametrize(("value", "expected"), [(np.inf, r"2 infinite"), (-np.inf, r"2 infinite"), (np.nan, r"2 NaN")])
def test_float64_nifti_with_inf_or_nan_is_refused(tmp_path: Path, value: float, expected: str) -> None:
    """+inf, -inf and NaN in a float64 NIfTI."""
    values = _values("float64")
    values[0, 0, 0] = values[5, 6, 7] = value
    with pytest.raises(InputError, match=expected):
        read_volume_file(_write_nifti(tmp_path / "bad.nii.gz", values))


def test_all_nan_nifti_is_refused(tmp_path: Path) -> None:
    """An all-NaN volume (which used to run and report 'Lung 0.00 mL')."""
    values = np.full(SHAPE, np.nan, dtype=np.float32)
    with pytest.raises(InputError, match=rf"all {values.size} voxel values are NaN"):
        read_volume_file(_write_nifti(tmp_path / "all-nan.nii.gz", values))


@pytest.mark.parametrize(("slope", "inter"), [(np.nan, 0.0), (2.0, np.nan), (np.inf, 0.0)])
def test_nifti_with_non_finite_scaling_is_refused(tmp_path: Path, slope: float, inter: float) -> None:
    """A NaN/inf scl_slope or scl_inter (niftilib reads it as 'no scaling' / 0) is refused."""
    stored = np.random.default_rng(4).integers(-500, 500, SHAPE).astype(np.int16)
    with pytest.raises(InputError, match=r"scl_slope"):
        read_volume_file(_write_nifti(tmp_path / "scaling.nii", stored, slope=slope, inter=inter))


def test_nifti_with_nan_in_the_affine_is_a_geometry_error(tmp_path: Path) -> None:
    """A NaN in srow_x is a geometry error naming the sform, not a silently guessed orientation."""
    with pytest.raises(GeometryError, match=r"sform"):
        read_volume_file(_write_nifti(tmp_path / "affine.nii", _values(), srow_x0=float("nan")))


def test_nifti_with_nan_spacing_is_a_geometry_error(tmp_path: Path) -> None:
    with pytest.raises(GeometryError, match=r"pixdim"):
        read_volume_file(_write_nifti(tmp_path / "spacing.nii", _values(), spacing=(0.8, float("nan"), 2.5)))


# ---- NRRD and MetaImage ----------------------------------------------------------------------------------------
def _nrrd(path: Path, array: np.ndarray, spacings: str = "0.8 0.9 2.5", encoding: str = "raw") -> Path:
    nk, nj, ni = array.shape
    header = (
        f"NRRD0004\ntype: float\ndimension: 3\nsizes: {ni} {nj} {nk}\nspacings: {spacings}\n"
        f"endian: little\nencoding: {encoding}\n\n"
    )
    data = array.astype("<f4").tobytes()
    path.write_bytes(header.encode() + (gzip.compress(data) if encoding == "gzip" else data))
    return path


def _mha(path: Path, array: np.ndarray, offset: str = "0 0 0") -> Path:
    nk, nj, ni = array.shape
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n"
        f"TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = {offset}\nElementSpacing = 0.8 0.9 2.5\n"
        f"DimSize = {ni} {nj} {nk}\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + array.astype("<f4").tobytes())
    return path


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_nrrd_with_nan_is_refused(tmp_path: Path, encoding: str) -> None:
    path = _nrrd(tmp_path / "nan.nrrd", _with_nan(4), encoding=encoding)
    with pytest.raises(InputError, match=r"4 NaN") as caught:
        read_volume_file(path)
    assert "nan.nrrd" in str(caught.value)


def test_mha_with_nan_and_inf_is_refused(tmp_path: Path) -> None:
    values = _with_nan(2)
    values[1, 1, 1] = -np.inf
    with pytest.raises(InputError, match=r"2 NaN .* and 1 infinite"):
        read_volume_file(_mha(tmp_path / "nan.mha", values))


def test_clean_nrrd_and_mha_read(tmp_path: Path) -> None:
    values = _values()
    np.testing.assert_array_equal(read_volume_file(_nrrd(tmp_path / "ok.nrrd", values)).array, values)
    np.testing.assert_array_equal(read_volume_file(_mha(tmp_path / "ok.mha", values)).array, values)


def test_nan_in_text_header_geometry_is_a_geometry_error(tmp_path: Path) -> None:
    """MetaIO reads 'nan' in Offset as 0 and ITK reads NaN NRRD spacings as 1 mm: both are refused."""
    with pytest.raises(GeometryError, match=r"Offset"):
        read_volume_file(_mha(tmp_path / "offset.mha", _values(), offset="nan 0 0"))
    with pytest.raises(GeometryError, match=r"spacings"):
        read_volume_file(_nrrd(tmp_path / "spacing.nrrd", _values(), spacings="nan 0.9 2.5"))


# ---- the CLI ---------------------------------------------------------------------------------------------------
def test_segment_refuses_a_nan_nifti(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`medai segment` on a NIfTI with 100 NaN voxels: exit 2, one error line without traceback, no output."""
    values = np.random.default_rng(5).normal(-500.0, 300.0, (16, 16, 16)).astype(np.float32)
    values.reshape(-1)[np.random.default_rng(6).choice(values.size, 100, replace=False)] = np.nan
    source = _write_nifti(tmp_path / "ct-with-nan.nii.gz", values, spacing=(2.0, 2.0, 2.0))
    output = tmp_path / "out"
    status = main(["segment", "--input", str(source), "--model", "chest-ct-lung-nodule", "--output", str(output),
                   "--quiet"])  # fmt: skip
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert status == 2, captured
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "ct-with-nan.nii.gz" in lines[0] and "100 NaN" in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not output.exists()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_truncated_nifti_is_refused_and_a_complete_one_is_not(tmp_path: Path, suffix: str) -> None:
    """A cut download or copy: ITK reads a cut .nii.gz without error as a partly empty volume; MedAI refuses it."""
    import SimpleITK as sitk

    values = np.random.default_rng(7).integers(-1000, 1000, (20, 24, 28)).astype(np.int16)
    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(whole), suffix == ".nii.gz")
    np.testing.assert_array_equal(read_volume_file(whole).array, values)
    data = whole.read_bytes()
    for keep in (len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{keep}{suffix}"
        cut.write_bytes(data[:keep])
        with pytest.raises(InputError, match="is truncated"):
            read_volume_file(cut)
    if suffix == ".nii.gz":  # two gzip members (a concatenated stream): complete, read the slow way
        raw = gzip.decompress(data)
        two = tmp_path / f"two{suffix}"
        two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
        np.testing.assert_array_equal(read_volume_file(two).array, values)
