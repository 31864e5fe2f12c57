"""Which files go into a de-identified export, and whether each is usable: collected from the inputs, then read
with its pixel data and checked (a DICOM instance with complete, decodable pixels and no burned-in text) before
anything is written. Used by :func:`MedAIExtension.deid.deidentify.deidentify_files`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import walk_files
from MedAIExtension.io.pixel_decoding import pixel_data_problem

__all__ = ["burned_in_reason"]

_SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: At most this many files are checked in parallel (compressed pixel data is decoded to check it, and the
#: decoders release the GIL); fewer on a machine with fewer cores. Each holds one file in memory.
_CHECK_THREADS = 4


def burned_in_reason(ds: Any) -> str | None:
    """Why ``ds`` may show identifying text in its pixels that this profile cannot clean, or ``None``.

    Burned In Annotation YES, Recognizable Visual Features YES, a Secondary Capture without Burned In
    Annotation (such captures are often screenshots with names on them), or an overlay stored in the
    pixel data's unused bits (removing the overlay group would not remove it).
    """
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return "Burned In Annotation is YES"
    if str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
        return "Recognizable Visual Features is YES"
    if str(ds.get("SOPClassUID", "")) in _SECONDARY_CAPTURE_CLASSES and not burned:
        return "Secondary Capture without Burned In Annotation (it may show burned-in text)"
    for group in range(0x6000, 0x6020, 2):
        if (group << 16 | 0x0010) in ds and (group << 16 | 0x3000) not in ds:
            return "overlay stored in the pixel data's unused bits"
    return None


@dataclass
class _Candidate:
    path: Path
    explicit: bool


def _collect(inputs: Sequence[str | os.PathLike[str]], output_dir: Path) -> list[_Candidate]:
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    if not inputs:
        raise InputError("No input was given. Name the DICOM files or folders to de-identify.")
    seen: set[Path] = set()
    found: list[_Candidate] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"The input {path} does not exist. Check the path of the DICOM file or folder.")
        resolved = path.resolve()
        if path.is_dir():
            if output_dir.is_relative_to(resolved):
                raise InputError(
                    f"The output folder {output_dir} is inside the input folder {path}; its files would be read as "
                    "input next time. Choose an output folder outside the input with --output."
                )
            files = [(p, False) for p in walk_files(path)]
        else:
            files = [(path, True)]
        for file, explicit in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            found.append(_Candidate(file, explicit))
    return found


@dataclass(frozen=True)
class _Inspection:
    """What the check of one input file found (no dataset is kept: only what the selection needs)."""

    sop_instance_uid: str | None = None
    problem: str | None = None  # why the file is left out (or refused when named / with ``strict``)
    damaged: bool = False  # a DICOM file whose pixel data is broken (refused with ``strict``)
    unreadable: bool = False  # a DICOM file whose header cannot be parsed (refused with ``strict``)
    burned_in: str | None = None


def _inspect(path: Path) -> _Inspection:
    """Read ``path`` with its pixel data and check it: a usable DICOM instance with complete, decodable pixels."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        return _Inspection(problem="not a DICOM file")
    except (OSError, ValueError, EOFError, TypeError, AttributeError, KeyError, IndexError, struct.error) as exc:
        return _Inspection(problem=f"not a readable DICOM file ({type(exc).__name__})", unreadable=True)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS:
        return _Inspection(problem="DICOMDIR (a media directory, not an image or document; not copied)")
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not ds.get(k)]
    if missing:
        return _Inspection(problem=f"DICOM without {', '.join(missing)} (not a storable instance)")
    try:
        damage = pixel_data_problem(ds)
    except (ValueError, TypeError, AttributeError, KeyError, OSError) as exc:  # a header value pydicom cannot parse
        damage = f"its image attributes cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    if damage is not None:
        return _Inspection(problem=f"damaged image: {damage}", damaged=True)
    return _Inspection(sop_instance_uid=str(ds.SOPInstanceUID), burned_in=burned_in_reason(ds))


def _inspect_all(paths: list[Path]) -> Iterator[_Inspection]:
    """:func:`_inspect` each path, in order, several at a time (decoding is the slow part)."""
    if len(paths) < 2:
        yield from (_inspect(p) for p in paths)
        return
    pool = ThreadPoolExecutor(max_workers=min(_CHECK_THREADS, os.cpu_count() or 1), thread_name_prefix="deid-check")
    try:
        yield from pool.map(_inspect, paths)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _summarise(paths: Sequence[Path], limit: int = 8) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
