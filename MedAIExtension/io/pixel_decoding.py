"""Decoding a DICOM file's pixel data into numbers, with one clear error for every way a file can be broken.

Native (uncompressed) pixel data is checked for its full length first; compressed pixel data is decoded by the
installed decoders (GDCM for JPEG lossless / JPEG-LS / JPEG 2000 / JPEG baseline, pydicom itself for RLE), and
what comes back is checked against the declared matrix size. A truncated transfer, a cut codestream or a
missing decoder each become an :class:`~MedAIExtension.errors.InputError` naming the file, the transfer
syntax and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError

__all__ = ["decode_pixels", "expected_pixel_bytes", "read_dataset", "transfer_syntax_name"]

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


def read_dataset(path: Path) -> Any:
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


def expected_pixel_bytes(dataset: Any) -> int:
    """Bytes that native pixel data of this header must hold (one frame unless NumberOfFrames says more)."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    bits = int(dataset.BitsAllocated)
    return (rows * columns * samples * frames * bits + 7) // 8


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def decode_pixels(dataset: Any, path: Path) -> np.ndarray:
    """The pixel array of a single-frame greyscale image, checked against Rows×Columns.

    Raises:
        InputError: the pixel data is missing, shorter than declared, cannot be decoded (damaged codestream,
            no decoder for the transfer syntax, unknown transfer syntax), or decodes to another size.
    """
    if "PixelData" not in dataset and "FloatPixelData" not in dataset and "DoubleFloatPixelData" not in dataset:
        raise InputError(f"{path.name} has no pixel data. Export the series again with its images.")
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", "")) if getattr(dataset, "file_meta", None) else ""
    element = dataset["PixelData"] if "PixelData" in dataset else None
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    if element is not None and syntax in _NATIVE_SYNTAXES and not element.is_undefined_length:
        have, need = len(element.value or b""), expected_pixel_bytes(dataset)
        if have < need:
            raise InputError(
                f"{path.name}: its pixel data is incomplete ({have} of {need} bytes); the file was cut short when "
                "it was copied or sent. Copy or retrieve the series again."
            )
    try:
        pixels = dataset.pixel_array
    except NotImplementedError as exc:
        raise InputError(
            f"{path.name} is stored as {transfer_syntax_name(dataset)}, which no installed decoder reads "
            f"({_short(exc)}). Install the decoders MedAI lists in Resources/requirements.txt (python-gdcm), or "
            "re-send the series uncompressed."
        ) from None
    except Exception as exc:  # noqa: BLE001 - decoders (pydicom, GDCM, Pillow) raise many types on damaged data
        raise InputError(
            f"{path.name}: its pixel data ({transfer_syntax_name(dataset)}) cannot be decoded ({_short(exc)}); the "
            "file is damaged or was cut short during transfer. Copy or retrieve the series again."
        ) from None
    pixels = np.asarray(pixels)
    if pixels.shape != (rows, columns):
        raise InputError(
            f"{path.name}: its pixel data decodes to shape {pixels.shape}, not the {rows}×{columns} image its header "
            "declares. The file is damaged: export the series again."
        )
    return pixels
