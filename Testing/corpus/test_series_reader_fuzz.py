"""Property test of the DICOM series reader on damaged input (issue 14).

Starting from a small valid series (6 slices of 16×16 written by ``write_dicom_series``), hypothesis deletes header
attributes, writes corrupt values (wrong VR text, negative, huge, empty, wrong multiplicity, random bytes) and
truncates or overwrites pixel bytes and whole files. ``read_dicom_series``, ``read_dicom_files`` and ``list_series``
must then either give a valid image or raise one of MedAI's own errors (which the CLI prints as one line) — never
pydicom's, numpy's or Python's exceptions, which the user would see as a traceback. Examples are derandomised so
CI runs the same cases every time.
"""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from MedAIExtension.errors import MedAIError
from MedAIExtension.io.dicom_series import list_series, read_dicom_files, read_dicom_series
from MedAIExtension.io.image import Image

SLICES = 6
#: Header attributes the reader depends on (or may trip over); each may be deleted or corrupted.
ATTRIBUTES = (
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "RescaleSlope",
    "RescaleIntercept",
    "SliceThickness",
    "SOPInstanceUID",
    "SOPClassUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "ImageType",
    "NumberOfFrames",
    "ConvolutionKernel",
    "PixelData",
)
#: Text values that break DS/IS/CS/UI parsing or geometry: wrong VR text, negative, huge, empty, wrong multiplicity.
TEXT_VALUES = (
    "",
    " ",
    "abc",
    "-1",
    "-2.5\\-2.5",
    "0",
    "0\\0",
    "1e308",
    "1e999",
    "-1e999\\1e999",
    "nan",
    "NaN\\NaN",
    "inf\\inf\\inf",
    "99999999999999999999",
    "2.5",
    "1\\0\\0\\0\\1",
    "1\\0\\0\\0\\1\\0\\0",
    "0\\0\\0\\0\\0\\0",
    "1\\0\\0\\1\\0\\0",
    "1\\2\\3\\4\\5\\6\\7\\8\\9",
    "1.2.3..4",
    "ORIGINAL\\PRIMARY\\LOCALIZER",
    "RGB",
    "MONOCHROME1",
    "PALETTE COLOR",
    "3",
)
#: Unsigned short values for US attributes (Rows, BitsAllocated, …), including impossible ones.
US_VALUES = (0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 31, 32, 64, 255, 4096, 32768, 65535)


@dataclass(frozen=True)
class Delete:
    """Remove an attribute from one file."""

    file: int
    keyword: str


@dataclass(frozen=True)
class Corrupt:
    """Store raw value bytes (any text or binary) for an attribute of one file, bypassing pydicom's checks."""

    file: int
    keyword: str
    value: bytes


@dataclass(frozen=True)
class FileDamage:
    """Damage one written file: truncate it, overwrite bytes with garbage, or change its transfer syntax UID."""

    file: int
    kind: str  # truncate | garbage | transfer-syntax | delete-meta-ts | remove | duplicate
    position: float  # 0..1 of the file length
    payload: bytes


@dataclass(frozen=True)
class PixelDamage:
    """Cut, extend or overwrite the PixelData value of one file."""

    file: int
    kind: str  # cut | extend | garbage
    position: float
    payload: bytes


Mutation = Delete | Corrupt | FileDamage | PixelDamage


def _pad(value: bytes) -> bytes:
    return value + b" " if len(value) % 2 else value


@st.composite
def _corrupt(draw: st.DrawFn) -> Corrupt:
    keyword = draw(st.sampled_from(ATTRIBUTES[:-1]))
    vr = dictionary_VR(tag_for_keyword(keyword))
    if vr == "US":
        value = draw(
            st.one_of(
                st.sampled_from(US_VALUES).map(lambda v: struct.pack("<H", v)),
                st.lists(st.sampled_from(US_VALUES), min_size=0, max_size=3).map(
                    lambda vs: struct.pack(f"<{len(vs)}H", *vs)
                ),
                st.binary(max_size=6),
            )
        )
    else:
        value = draw(
            st.one_of(
                st.sampled_from(TEXT_VALUES).map(lambda t: _pad(t.encode("latin-1"))),
                st.binary(max_size=24),
            )
        )
    return Corrupt(draw(st.integers(0, SLICES - 1)), keyword, value)


_FILES = st.integers(0, SLICES - 1)
_MUTATION: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(Delete, _FILES, st.sampled_from(ATTRIBUTES)),
    _corrupt(),
    st.builds(
        FileDamage,
        _FILES,
        st.sampled_from(("truncate", "garbage", "transfer-syntax", "delete-meta-ts", "remove", "duplicate")),
        st.floats(0.0, 1.0),
        st.binary(min_size=1, max_size=64),
    ),
    st.builds(
        PixelDamage,
        _FILES,
        st.sampled_from(("cut", "extend", "garbage")),
        st.floats(0.0, 1.0),
        st.binary(min_size=1, max_size=64),
    ),
)
_MUTATIONS = st.lists(_MUTATION, min_size=1, max_size=4)

#: Transfer syntax UIDs (20 bytes, the length of Explicit VR Little Endian's padded UID) to swap in.
_TS_SWAPS = (
    b"1.2.840.10008.1.2\0\0\0",  # implicit VR (wrong: the file is explicit)
    b"1.2.840.10008.1.2.2\0",  # big endian (wrong)
    b"1.2.840.10008.1.2.5\0",  # RLE (the pixel data is not encapsulated)
    b"1.2.840.10008.1.2.4.5",  # unknown, in the DICOM root
    b"9.9.9.9.9.9.9.9.9.9\0",  # nonsense
    b"\0" * 20,
)


class ValidSeries(list[bytes]):
    """The bytes of each file of the valid series (a short repr keeps hypothesis' failure reports readable)."""

    def __repr__(self) -> str:
        return f"<valid series: {len(self)} files>"


@pytest.fixture(scope="module")
def valid_series(tmp_path_factory: pytest.TempPathFactory) -> ValidSeries:
    """The bytes of each file of a small valid CT series (6 slices of 16×16, 0.7×0.7×2 mm)."""
    from MedAIExtension.io.dicom_series import write_dicom_series

    rng = np.random.default_rng(3)
    image = Image(
        array=rng.integers(-1000, 1000, size=(SLICES, 16, 16)).astype(np.int16),
        ijk_to_ras=np.diag([0.7, 0.7, 2.0, 1.0]),
        modality="CT",
    )
    paths = write_dicom_series(image, tmp_path_factory.mktemp("fuzz-base"), uid_seed="medai-fuzz")
    read_dicom_series(paths[0].parent)  # the unmutated series must be readable, else the test proves nothing
    return ValidSeries(p.read_bytes() for p in paths)


def _apply_to_dataset(ds: Dataset, mutation: Mutation) -> None:
    if isinstance(mutation, Delete):
        if mutation.keyword in ds:
            delattr(ds, mutation.keyword)
    elif isinstance(mutation, Corrupt):
        tag = tag_for_keyword(mutation.keyword)
        vr = dictionary_VR(tag)
        ds[tag] = RawDataElement(tag, vr, len(mutation.value), mutation.value, 0, False, True)
    elif isinstance(mutation, PixelDamage) and "PixelData" in ds:
        data = bytes(ds.PixelData)
        at = int(mutation.position * len(data))
        if mutation.kind == "cut":
            data = data[:at]
        elif mutation.kind == "extend":
            data = data + mutation.payload
        else:
            data = data[:at] + mutation.payload + data[at + len(mutation.payload) :]
        ds.PixelData = _pad(data) if len(data) % 2 else data


def _apply_to_file(path: Path, mutation: FileDamage) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    at = int(mutation.position * len(data))
    if mutation.kind == "truncate":
        path.write_bytes(data[:at])
    elif mutation.kind == "garbage":
        path.write_bytes(data[:at] + mutation.payload + data[at + len(mutation.payload) :])
    elif mutation.kind == "transfer-syntax":
        swap = _TS_SWAPS[int(mutation.position * (len(_TS_SWAPS) - 1))]
        path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\0", swap, 1))
    elif mutation.kind == "delete-meta-ts":
        try:  # a file already cut or overwritten by an earlier damage may not parse: then leave it as it is
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            del ds.file_meta.TransferSyntaxUID
            ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=False)
        except Exception:  # noqa: BLE001 - only the damage step is skipped; the reader's errors are not caught here
            path.write_bytes(data)
    elif mutation.kind == "remove":
        path.unlink()
    else:  # duplicate
        shutil.copy2(path, path.with_name(f"copy-{path.name}"))


def _write_mutated(folder: Path, base: list[bytes], mutations: list[Mutation]) -> list[Path]:
    paths = []
    for index, data in enumerate(base):
        ds = pydicom.dcmread(io.BytesIO(data))
        for mutation in mutations:
            if not isinstance(mutation, FileDamage) and mutation.file == index:
                _apply_to_dataset(ds, mutation)
        path = folder / f"{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=False)
        paths.append(path)
    for mutation in mutations:
        if isinstance(mutation, FileDamage):
            _apply_to_file(paths[mutation.file], mutation)
    return sorted(p for p in folder.iterdir() if p.is_file())


def _check_image(image: Image) -> None:
    assert isinstance(image, Image)
    assert image.array.ndim == 3 and min(image.array.shape) >= 2
    assert np.isfinite(image.ijk_to_ras).all()
    assert abs(np.linalg.det(image.ijk_to_ras[:3, :3])) > 0


def _only_medai_errors(call: Callable[[], object]) -> object | None:
    """Run ``call``; MedAI's own errors are a valid answer, any other exception fails the test."""
    try:
        return call()
    except MedAIError as error:
        assert str(error).strip(), "a MedAI error without a message"
        return None


#: Damage found by this test before, always tried first (a wrong-length US value; a non-finite frame count).
_KNOWN = (
    [Corrupt(0, "Rows", b"\x00\x00\x00")],
    [Corrupt(0, "NumberOfFrames", b"inf ")],
    [Corrupt(i, "RescaleSlope", b"1e308 ") for i in range(SLICES)],
)

_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


@_SETTINGS
@given(mutations=_MUTATIONS)
@example(mutations=_KNOWN[0])
@example(mutations=_KNOWN[1])
@example(mutations=_KNOWN[2])
def test_series_reader_gives_an_image_or_a_medai_error(valid_series: list[bytes], mutations: list[Mutation]) -> None:
    """A damaged series folder is read into a valid image or refused with MedAI's own error, never a traceback."""
    with tempfile.TemporaryDirectory(prefix="medai-fuzz-") as tmp:
        folder = Path(tmp)
        _write_mutated(folder, valid_series, mutations)
        warnings: list[str] = []
        listed = _only_medai_errors(lambda: list_series(folder))
        if listed is not None:
            series, skipped = listed  # type: ignore[misc]
            assert all(isinstance(p, Path) for p in skipped)
            assert all(f.is_file() for info in series for f in info.files), "a listed file does not exist"
        image = _only_medai_errors(lambda: read_dicom_series(folder, warn=warnings.append))
        if image is not None:
            _check_image(image)  # type: ignore[arg-type]
        assert all(isinstance(w, str) for w in warnings)


@settings(_SETTINGS, max_examples=80)
@given(mutations=_MUTATIONS)
@example(mutations=_KNOWN[0])
@example(mutations=_KNOWN[1])
def test_read_dicom_files_gives_an_image_or_a_medai_error(valid_series: list[bytes], mutations: list[Mutation]) -> None:
    """Files handed over one by one (e.g. from Slicer's DICOM database) are read or refused with MedAI's error."""
    with tempfile.TemporaryDirectory(prefix="medai-fuzz-") as tmp:
        files = _write_mutated(Path(tmp), valid_series, mutations)
        image = _only_medai_errors(lambda: read_dicom_files(files))
        if image is not None:
            _check_image(image)  # type: ignore[arg-type]


def test_mutations_really_break_the_series(valid_series: list[bytes], tmp_path: Path) -> None:
    """The mutation helpers do damage: deleting PixelSpacing everywhere makes the reader refuse the series."""
    mutations: list[Mutation] = [Delete(i, "PixelSpacing") for i in range(SLICES)]
    _write_mutated(tmp_path, valid_series, mutations)
    with pytest.raises(MedAIError, match="PixelSpacing"):
        read_dicom_series(tmp_path)
