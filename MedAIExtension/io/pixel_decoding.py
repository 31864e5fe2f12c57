"""Decoding a DICOM file's pixel data into numbers, with one clear error for every way a file can be broken.

Native (uncompressed) pixel data is checked for its full length first; compressed pixel data is decoded by the
installed decoders (GDCM for JPEG lossless / JPEG-LS / JPEG 2000 / JPEG baseline, pydicom itself for RLE), and
what comes back is checked against the declared matrix size. A truncated transfer, a cut codestream or a
missing decoder each become an :class:`~MedAIExtension.errors.InputError` naming the file, the transfer
syntax and the fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import InputError

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "PIXEL_KEYWORDS",
    "decode_frames",
    "decode_pixels",
    "pixel_data_problem",
    "read_dataset",
    "transfer_syntax_name",
]

#: The elements that hold an image's pixels (integer, float and double float pixel data).
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
}


def transfer_syntax_name(dataset: Any) -> str:
    """The file's transfer syntax as ``"name (UID)"``, or ``"unknown"``."""
    meta = getattr(dataset, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        return "unknown (no TransferSyntaxUID)"
    name = getattr(uid, "name", "") or ""
    return f"{name} ({uid})" if name and name != str(uid) else str(uid)


def read_dataset(path: Path) -> Dataset:
    """Read a whole DICOM file (header and pixel data), or raise :class:`InputError` naming the file."""
    import pydicom

    try:
        return pydicom.dcmread(path)
    except OSError as exc:
        raise InputError(
            f"{path.name} cannot be read ({exc.strerror or exc}). Check the file and its permissions."
        ) from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InputError(
            f"{path.name} cannot be read as DICOM ({_short(exc)}): the file is damaged or was cut short during "
            "transfer. Copy or retrieve the series again."
        ) from None


def _short(exc: BaseException) -> str:
    """The gist of a decoder's error: pydicom's preamble dropped, each plugin's complaint kept, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode as exceptions were raised"):
        lines = lines[1:]
    return ("; ".join(lines) or type(exc).__name__)[:240]


_GDCM_TYPES = {
    "UINT8": np.uint8,
    "INT8": np.int8,
    "UINT12": np.uint16,
    "INT12": np.int16,
    "UINT16": np.uint16,
    "INT16": np.int16,
    "UINT32": np.uint32,
    "INT32": np.int32,
}


def _decode_with_gdcm(path: Path, frames: int, rows: int, columns: int) -> np.ndarray | None:
    """Stored values of every frame decoded by GDCM's own image reader, or None when GDCM cannot.

    pydicom's GDCM plugin refuses some syntaxes GDCM itself reads (e.g. 12-bit JPEG Extended, process 4, still
    written by older CT scanners); GDCM's ImageReader decodes them to the same stored values.
    """
    try:
        import gdcm
    except ImportError:
        return None
    try:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        if not reader.Read():
            return None
        image = reader.GetImage()
        kind = _GDCM_TYPES.get(image.GetPixelFormat().GetScalarTypeAsString())
        if kind is None or image.GetPixelFormat().GetSamplesPerPixel() != 1:
            return None
        buffer = image.GetBuffer()  # None when the codestream does not decode
        if not isinstance(buffer, (str, bytes)):
            return None
        data = buffer.encode("utf-8", "surrogateescape") if isinstance(buffer, str) else buffer
    except Exception:  # noqa: BLE001 - the fallback failing leaves pydicom's error to be reported
        return None
    if len(data) != frames * rows * columns * np.dtype(kind).itemsize:
        return None
    return np.frombuffer(data, dtype=kind).reshape(frames, rows, columns).copy()


def pixel_data_problem(ds: Any, *, decode: bool = True) -> str | None:
    """Why the pixel data of ``ds`` cannot be used, or ``None`` when it is complete (or there is none).

    Native (uncompressed) transfer syntaxes: the element must hold at least the Rows × Columns × Samples per
    Pixel × Bits Allocated × Number of Frames bits the header declares (a cut-off file still parses, with a
    short value). Compressed (encapsulated) syntaxes: every frame is decoded with pydicom's decoders, and there
    must be as many as Number of Frames declares — or, with ``decode`` false, the items must form a complete run
    (a cheap check for a transfer cut inside a fragment).

    Args:
        ds: a pydicom ``Dataset`` read with its pixel data (a ``FileDataset``'s file meta names the syntax).
        decode: decode compressed pixel data (thorough) or only check its item structure (cheap).

    Returns:
        ``None``, or a short reason (truncated, does not decode, no decoder installed, image attributes missing).
    """
    keyword = next((k for k in PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        return None
    from pydicom.uid import UID

    value = ds[keyword].value
    if not value:
        return f"{keyword} is empty"
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", "") or "")) if meta is not None else UID("")
    if keyword == "PixelData" and syntax and syntax.is_encapsulated:
        return _decode_problem(ds, syntax) if decode else _encapsulated_problem(bytes(value))
    return _length_problem(ds, keyword, len(value))


_ENCAPSULATED_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian


def _encapsulated_problem(value: bytes) -> str | None:
    """Check that encapsulated pixel data is a complete run of items (basic offset table, then fragments)."""
    position, items = 0, 0
    while position < len(value):
        if position + 8 > len(value) or value[position : position + 4] != _ENCAPSULATED_ITEM:
            return "its compressed pixel data breaks off inside an item header"
        length = int.from_bytes(value[position + 4 : position + 8], "little")
        position += 8 + length
        if position > len(value):
            return "its compressed pixel data breaks off inside a fragment"
        items += 1
    if items < 2:
        return "its compressed pixel data holds no fragment"
    return None


def _length_problem(ds: Any, keyword: str, actual: int) -> str | None:
    """Native pixel data: the declared image size against the bytes present."""
    numbers: dict[str, int] = {}
    defaults: tuple[tuple[str, int | None], ...] = (
        ("Rows", None), ("Columns", None), ("BitsAllocated", None), ("SamplesPerPixel", 1), ("NumberOfFrames", 1)
    )  # fmt: skip
    for name, default in defaults:
        raw = ds.get(name, default)
        value = raw if raw not in (None, "") else default
        unknown = f"{name} is missing or not a number ({raw!r}), so the image size is unknown"
        if value is None:
            return unknown
        try:
            number = int(value)
        except (TypeError, ValueError):
            return unknown
        if number <= 0:
            return f"{name} is {number}, so the image is empty"
        numbers[name] = number
    rows, columns, bits = numbers["Rows"], numbers["Columns"], numbers["BitsAllocated"]
    samples, frames = numbers["SamplesPerPixel"], numbers["NumberOfFrames"]
    expected = math.ceil(rows * columns * samples * frames * bits / 8)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric == "YBR_FULL_422" and samples == 3:
        expected = expected * 2 // 3  # two chroma samples shared by each pair of pixels
    if actual < expected:
        return (
            f"its pixel data ({keyword}) is incomplete (truncated: {actual} of the {expected} bytes that Rows × "
            f"Columns × Samples per Pixel × Bits Allocated × Number of Frames ({rows}×{columns}×{samples}×{bits}×"
            f"{frames} bits) declare)"
        )
    return None


def _decode_problem(ds: Any, syntax: Any) -> str | None:
    """Compressed pixel data: decode every frame."""
    from pydicom.pixels import get_decoder, iter_pixels

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"its pixel data ({syntax.name}) has no decoder in pydicom, so it cannot be checked"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"no decoder for {syntax.name} is installed ({missing}), so its pixel data cannot be checked"
    try:
        declared = int(ds.get("NumberOfFrames", 1) or 1)
        decoded = sum(1 for _frame in iter_pixels(ds, raw=True))
    except Exception as exc:  # noqa: BLE001 - decoders raise any type on damaged data; the reason is reported
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].startswith("Unable to decode as exceptions were raised"):
            lines = lines[1:]  # pydicom's preamble; the lines after it name each decoder and its complaint
        detail = "; ".join(lines) or type(exc).__name__
        return f"its {syntax.name} pixel data does not decode ({detail[:240]})"
    if decoded < declared:  # pydicom stops quietly when frames are missing
        return f"its {syntax.name} pixel data holds {decoded} of the {declared} frames that Number of Frames declares"
    return None


def decode_frames(dataset: Any, path: Path, frames: int = 1) -> np.ndarray:
    """The stored values of every frame of a greyscale image as an ``(frames, Rows, Columns)`` array.

    Raises:
        InputError: the pixel data is missing, shorter than declared, cannot be decoded (damaged codestream,
            no decoder for the transfer syntax, unknown transfer syntax), or decodes to another shape (colour).
    """
    if not any(keyword in dataset for keyword in PIXEL_KEYWORDS):
        raise InputError(f"{path.name} has no pixel data. Export the series again with its images.")
    meta = getattr(dataset, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    keyword = next(k for k in PIXEL_KEYWORDS if k in dataset)
    if not (keyword == "PixelData" and syntax not in _NATIVE_SYNTAXES):  # native: the length tells
        problem = pixel_data_problem(dataset)
        if problem:
            raise InputError(
                f"{path.name}: {problem}; the file was cut short when it was copied or sent, or its header is "
                "damaged. Copy or retrieve the series again."
            )
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    try:
        pixels = np.asarray(dataset.pixel_array)
    except Exception as exc:  # noqa: BLE001 - decoders (pydicom, GDCM, Pillow) raise many types on damaged data
        fallback = _decode_with_gdcm(path, frames, rows, columns) if syntax not in _NATIVE_SYNTAXES else None
        if fallback is None:
            raise _decoding_error(dataset, path, exc) from None
        pixels = fallback
    if frames == 1 and pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.shape != (frames, rows, columns):
        raise InputError(
            f"{path.name}: its pixel data decodes to shape {pixels.shape}, not {frames} greyscale frame(s) of "
            f"{rows}×{columns} as its header declares. The file is damaged or not greyscale: export it again."
        )
    return pixels


def _decoding_error(dataset: Any, path: Path, exc: Exception) -> InputError:
    """The InputError for pixel data that no decoder could read: missing decoder or damaged data."""
    if isinstance(exc, NotImplementedError):
        return InputError(
            f"{path.name} is stored as {transfer_syntax_name(dataset)}, which no installed decoder reads "
            f"({_short(exc)}). Install the decoders MedAI lists in Resources/requirements.txt (python-gdcm), or "
            "re-send the series uncompressed."
        )
    return InputError(
        f"{path.name}: its pixel data ({transfer_syntax_name(dataset)}) cannot be decoded ({_short(exc)}); the "
        "file is damaged or was cut short during transfer, or needs a decoder that is not installed. Copy or "
        "retrieve the series again, or re-send it uncompressed."
    )


def decode_pixels(dataset: Any, path: Path) -> np.ndarray:
    """The ``(Rows, Columns)`` pixel array of a single-frame greyscale image (see :func:`decode_frames`)."""
    return decode_frames(dataset, path, 1)[0]
