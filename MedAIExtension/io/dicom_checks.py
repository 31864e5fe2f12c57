"""Checks of a DICOM image series' headers before any pixel is decoded or any model runs.

Every problem found here names the attribute (or the files) at fault and what to do, so a user never waits for
inference only to learn that the input was unusable. The checks cover what hospitals actually send: localizers
mixed into a series, several reconstructions under one SeriesInstanceUID, missing or malformed geometry
attributes, colour images, and sizes no CT or MR has.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from MedAIExtension.errors import GeometryError, InputError, MedAIError

__all__ = [
    "LOSSY_TRANSFER_SYNTAXES",
    "MAX_MATRIX",
    "check_image_headers",
    "check_single_reconstruction",
    "damaged_header_error",
    "drop_localizers",
    "lossy_compression",
    "numbers",
    "record_lossy",
]

#: Largest Rows or Columns accepted (CT and MR matrices are at most 2048; 8192 leaves room for anything real).
MAX_MATRIX = 8192

#: Transfer syntaxes whose compression loses information.
LOSSY_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 (lossy)",
    "1.2.840.10008.1.2.4.93": "JPEG 2000 Part 2 (lossy)",
    "1.2.840.10008.1.2.4.100": "MPEG-2",
    "1.2.840.10008.1.2.4.102": "MPEG-4",
    "1.2.840.10008.1.2.4.201": "HTJ2K (lossy)",
}


def _name(path: Path) -> str:
    return path.name


def _examples(paths: Sequence[Path], limit: int = 3) -> str:
    shown = ", ".join(_name(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def numbers(dataset: Any, keyword: str, count: int, path: Path, *, positive: bool = False) -> list[float]:
    """The ``count`` numeric values of ``keyword`` in ``dataset``, checked.

    Raises:
        GeometryError: the attribute is missing, has another number of values, or holds text that is not a
            finite number (or, with ``positive``, a value ≤ 0) — naming the attribute, the file and the fix.
    """
    try:
        raw = dataset[keyword].value if keyword in dataset else None
    except Exception:  # noqa: BLE001 - pydicom raises many types on a damaged value (wrong length, bad text)
        raise GeometryError(
            f"{_name(path)} has an unreadable {keyword}. The file's header is damaged: export the series again."
        ) from None
    if raw is None or raw in ("", b""):
        raise GeometryError(
            f"{_name(path)} has no {keyword}, so its pixels cannot be placed in space. Export the series again "
            f"with its geometry attributes (the scanner or PACS export must keep {keyword})."
        )
    values = list(raw) if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw]
    try:
        parsed = [float(v) for v in values]
    except (TypeError, ValueError):
        parsed = []
    if len(parsed) != count or not all(math.isfinite(v) for v in parsed):
        raise GeometryError(
            f"{_name(path)} has an unreadable {keyword} ({str(raw)[:60]!r}; {count} number(s) expected). "
            "The file's header is damaged: export the series again."
        )
    if positive and any(v <= 0 for v in parsed):
        raise GeometryError(
            f"{_name(path)} has {keyword} {parsed}: values must be greater than 0. The file's header is damaged: "
            "export the series again."
        )
    return parsed


def _integer(dataset: Any, keyword: str, path: Path) -> int:
    try:
        value = dataset.get(keyword)
        number = int(value)
    except Exception:  # noqa: BLE001 - pydicom raises many types on a damaged value (wrong length, text, inf)
        value = "(unreadable)"
        raise InputError(
            f"{_name(path)} has no valid {keyword} ({value!r}), so its pixel data cannot be decoded. "
            "The file is damaged or not an image: export the series again."
        ) from None
    return number


def drop_localizers(
    datasets: list[Any], files: list[Path], warn: Callable[[str], None] | None = None
) -> tuple[list[Any], list[Path]]:
    """Leave out localizer (scout) images — ImageType containing LOCALIZER — with a warning.

    Raises:
        InputError: the series holds nothing but localizers.
    """
    keep = [i for i, ds in enumerate(datasets) if "LOCALIZER" not in [str(v).upper() for v in _image_type(ds)]]
    if len(keep) == len(datasets):
        return datasets, files
    dropped = [files[i] for i in range(len(files)) if i not in set(keep)]
    if not keep:
        raise InputError(
            f"The series holds only localizer (scout) images ({len(dropped)} file(s)); they are not a 3D volume. "
            "Choose the axial (or other) reconstruction of the study instead."
        )
    if warn:
        warn(
            f"Left out {len(dropped)} localizer (scout) image(s) found inside the series ({_examples(dropped)}); "
            "the volume is built from the other slices."
        )
    return [datasets[i] for i in keep], [files[i] for i in keep]


def _image_type(dataset: Any) -> list[Any]:
    value = dataset.get("ImageType", [])
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def check_image_headers(datasets: Sequence[Any], files: Sequence[Path]) -> None:
    """Check every file's pixel description and geometry attributes before any pixel is decoded.

    Raises:
        InputError: colour or palette images, a missing or impossible matrix size, or damaged pixel attributes.
        GeometryError: missing or malformed ImagePositionPatient / ImageOrientationPatient / PixelSpacing.
    """
    for ds, path in zip(datasets, files):
        try:
            _check_image_header(ds, path)
        except MedAIError:
            raise
        except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily and raises many types on damage
            raise damaged_header_error(exc, path.name) from None


def damaged_header_error(exc: BaseException, where: str) -> InputError:
    """The InputError for a header value pydicom cannot convert (wrong length, bad text), naming ``where``."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return InputError(
        f"{where} has a damaged header value ({detail}). The file was damaged in storage or transfer: export or "
        "retrieve the series again."
    )


def _check_image_header(ds: Any, path: Path) -> None:
    """The checks of :func:`check_image_headers` for one file."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1) if str(ds.get("SamplesPerPixel", "1")).isdigit() else 0
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise InputError(
            f"{_name(path)} is a colour image ({photometric}, {samples} sample(s) per pixel). MedAI's models read "
            "greyscale CT/MR volumes: choose the original greyscale series, not a screenshot or rendering."
        )
    rows, columns = _integer(ds, "Rows", path), _integer(ds, "Columns", path)
    if not (1 <= rows <= MAX_MATRIX and 1 <= columns <= MAX_MATRIX):
        raise InputError(
            f"{_name(path)} declares an image of {rows}×{columns} pixels (Rows×Columns); CT and MR images have "
            f"1 to {MAX_MATRIX} pixels a side, so the header is damaged or too large to read. Export the series "
            "again."
        )
    bits = _integer(ds, "BitsAllocated", path)
    if bits not in (8, 16, 32, 64):
        raise InputError(
            f"{_name(path)} has BitsAllocated {bits}; greyscale images use 8, 16 or 32 bits. The header is "
            "damaged: export the series again."
        )
    if "PixelRepresentation" in ds:
        _integer(ds, "PixelRepresentation", path)
    numbers(ds, "PixelSpacing", 2, path, positive=True)
    numbers(ds, "ImagePositionPatient", 3, path)
    iop = numbers(ds, "ImageOrientationPatient", 6, path)
    row, col = iop[:3], iop[3:]
    row_norm, col_norm = math.sqrt(sum(v * v for v in row)), math.sqrt(sum(v * v for v in col))
    dot = sum(a * b for a, b in zip(row, col))
    if abs(row_norm - 1) > 1e-2 or abs(col_norm - 1) > 1e-2 or abs(dot) > 1e-2:
        raise GeometryError(
            f"{_name(path)} has an ImageOrientationPatient {iop} whose row and column directions are not "
            "perpendicular unit vectors. The header is damaged: export the series again."
        )
    for keyword, limit in (("RescaleSlope", 1e4), ("RescaleIntercept", 1e6)):
        if keyword in ds and not _empty(ds, keyword):
            (value,) = numbers(ds, keyword, 1, path)
            if abs(value) > limit or (keyword == "RescaleSlope" and value == 0):
                raise InputError(
                    f"{_name(path)} has {keyword} {value:g}, which turns its pixels into no measurable values "
                    "(CT and MR use slopes near 1 and intercepts of a few thousand at most). The header is "
                    "damaged: export the series again."
                )


def _empty(dataset: Any, keyword: str) -> bool:
    try:
        return dataset[keyword].value in (None, "", b"")
    except Exception:  # noqa: BLE001 - a damaged value is not empty; numbers() names the damage
        return False


def _reconstruction_traits(dataset: Any) -> dict[str, str]:
    """What tells two reconstructions of one acquisition apart (text, rounded where numeric)."""
    kernel = dataset.get("ConvolutionKernel", "")
    if not isinstance(kernel, str):
        try:
            kernel = "\\".join(str(v) for v in kernel)
        except TypeError:
            kernel = str(kernel)
    try:
        raw_thickness = dataset.get("SliceThickness")
        thickness = f"{round(float(raw_thickness), 2):g} mm" if raw_thickness not in (None, "") else ""
    except (TypeError, ValueError):
        thickness = str(dataset.get("SliceThickness"))
    return {
        "SliceThickness": thickness,
        "ConvolutionKernel": str(kernel),
        "Rows×Columns": f"{dataset.get('Rows')}×{dataset.get('Columns')}",
    }


def check_single_reconstruction(datasets: Sequence[Any], files: Sequence[Path], series_uid: str) -> None:
    """Refuse a series that mixes reconstructions (slice thickness, kernel, matrix size).

    Mixed orientations are found by the geometry check, which compares orientations within a tolerance.

    Scanners and PACS exports sometimes put a thin and a thick reconstruction, or a soft and a sharp kernel, under
    one SeriesInstanceUID; stacking them would give a volume with duplicated or interleaved slices.

    Raises:
        GeometryError: naming each attribute that differs with the file count per value and how to split them.
    """
    traits = [_reconstruction_traits(ds) for ds in datasets]
    differing = []
    for key in traits[0]:
        counts = Counter(t[key] for t in traits)
        if len(counts) > 1:
            values = ", ".join(f"{value or '(empty)'} ({n} file(s))" for value, n in counts.most_common())
            differing.append(f"{key}: {values}")
    if not differing:
        return
    largest = Counter(tuple(t.values()) for t in traits).most_common(1)[0][0]
    others = [files[i] for i, t in enumerate(traits) if tuple(t.values()) != largest]
    raise GeometryError(
        f"Series {series_uid} mixes several reconstructions that cannot form one volume — "
        + "; ".join(differing)
        + f". Split them: copy the files of one reconstruction into a folder of their own (e.g. leave out "
        f"{_examples(others)}) or re-export them from the PACS as separate series, then point --input at that "
        "folder (--series cannot separate them: they share the SeriesInstanceUID)."
    )


def lossy_compression(dataset: Any) -> str | None:
    """The name of the lossy compression the file's pixels went through, or None when lossless / unknown."""
    syntax = str(getattr(getattr(dataset, "file_meta", None), "get", lambda *_: "")("TransferSyntaxUID", ""))
    if syntax in LOSSY_TRANSFER_SYNTAXES:
        return LOSSY_TRANSFER_SYNTAXES[syntax]
    if str(dataset.get("LossyImageCompression", "")).strip() == "01":
        methods = dataset.get("LossyImageCompressionMethod", "")
        return f"lossy compression earlier ({methods})" if methods else "lossy compression earlier"
    return None


def record_lossy(metadata: dict[str, Any], methods: Iterable[str], warn: Callable[[str], None] | None) -> None:
    """Note lossy compression of the input in ``metadata["LossyCompression"]`` and warn the user once."""
    methods = sorted(set(methods))
    if not methods:
        return
    metadata["LossyCompression"] = ", ".join(methods)
    if warn:
        warn(
            f"The input was lossy compressed ({metadata['LossyCompression']}): its voxels differ from what the "
            "scanner measured, so results can differ from those on the original images."
        )
