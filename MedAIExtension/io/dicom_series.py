"""Reading a DICOM image series into an :class:`Image`, and writing an :class:`Image` as a CT/MR series.

Reading groups files by SeriesInstanceUID, sorts slices by their position along the slice normal and checks
the geometry (one orientation, no missing slice, even spacing) so that every acquisition direction
(axial in either order, sagittal, coronal, oblique) gives a correct IJK-to-RAS affine.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import GeometryError, InputError, MedAIError
from MedAIExtension.io.dicom_checks import (
    check_image_headers,
    check_single_reconstruction,
    damaged_header_error,
    drop_localizers,
    lossy_compression,
    record_lossy,
)
from MedAIExtension.io.dicom_metadata import SERIES_METADATA_KEYS, series_metadata
from MedAIExtension.io.geometry import affine_parts
from MedAIExtension.io.image import Image
from MedAIExtension.io.multiframe import is_multiframe_file, is_multiframe_volume, read_multiframe_files
from MedAIExtension.io.pixel_decoding import decode_pixels, read_dataset
from MedAIExtension.io.slice_stack import SPACING_TOLERANCE, stack_affine, stack_order

__all__ = [
    "SERIES_METADATA_KEYS",
    "SeriesInfo",
    "list_series",
    "read_dicom_files",
    "read_dicom_series",
    "series_metadata",
    "walk_files",
    "write_dicom_series",
]

_ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder."""

    series_uid: str
    description: str
    modality: str
    files: tuple[Path, ...]

    def summary(self) -> str:
        """One line naming the series for a user who has to pick one."""
        return f"{self.series_uid}  {self.modality or '?'}  {len(self.files)} file(s)  {self.description!r}"


def walk_files(folder: Path) -> Iterable[Path]:
    """Every file under ``folder``, recursively, in a stable (sorted) order."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


#: SOP classes of objects derived from images (segmentations, reports, maps, states): never a volume to read.
_DERIVED_SOP_CLASS_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, fiducials, segmentation, surface segmentation
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.30",  # parametric map
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
    "1.2.840.10008.5.1.4.1.1.481.",  # radiotherapy objects
)


def _is_volume_image(dataset: Any) -> bool:
    """Whether a header (read without pixels) describes an image that may be part of a volume.

    A file counts when it declares an image matrix (Rows) and is not a derived object (SEG, SR, Parametric Map,
    presentation state, ...). Files missing geometry attributes still count, so that reading the series can say
    which attribute is missing instead of reporting no series at all.
    """
    if "Rows" not in dataset:
        return False
    sop_class = str(dataset.get("SOPClassUID", ""))
    return not any(sop_class.startswith(prefix) for prefix in _DERIVED_SOP_CLASS_PREFIXES)


def list_series(folder: str | os.PathLike[str]) -> tuple[list[SeriesInfo], list[Path]]:
    """Find the image series in ``folder`` (recursively).

    Returns:
        The series that hold pixel data, and the files that were skipped (not DICOM, or no image).
    """
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder. Give a folder of DICOM files, or a .nii.gz/.nrrd file.")
    groups: dict[str, list[Path]] = {}
    meta: dict[str, tuple[str, str]] = {}
    skipped: list[Path] = []
    for path in walk_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any unreadable file is skipped and counted
            skipped.append(path)
            continue
        try:
            if not (_is_volume_image(ds) or is_multiframe_volume(ds)):
                skipped.append(path)
                continue
            uid = str(ds.get("SeriesInstanceUID", ""))
            description, modality = str(ds.get("SeriesDescription", "")), str(ds.get("Modality", ""))
        except Exception:  # noqa: BLE001 - a header whose identifying values cannot be decoded is skipped
            skipped.append(path)
            continue
        groups.setdefault(uid, []).append(path)
        meta.setdefault(uid, (description, modality))
    series = [SeriesInfo(uid, meta[uid][0], meta[uid][1], tuple(files)) for uid, files in sorted(groups.items())]
    return series, skipped


def read_dicom_series(
    folder: str | os.PathLike[str],
    series_uid: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Image:
    """Read one DICOM image series from ``folder`` into an :class:`Image`.

    Args:
        folder: folder holding the series (searched recursively); other files are skipped with a warning.
        series_uid: which series to read when the folder holds several.
        warn: receives warnings (skipped files) as text.

    Raises:
        InputError: no series, several series and none chosen, or a 2D image.
        GeometryError: mixed orientation, missing slices, uneven spacing, duplicate positions.
    """
    series, skipped = list_series(folder)
    if not series:
        raise InputError(f"No DICOM image series found in {folder}. Point --input at a folder of DICOM image files.")
    if skipped and warn:
        warn(f"Skipped {len(skipped)} file(s) that are not DICOM images, e.g. {skipped[0].name}.")
    if series_uid is not None:
        chosen = [s for s in series if s.series_uid == series_uid]
        if not chosen:
            listing = "\n  ".join(s.summary() for s in series)
            raise InputError(f"Series {series_uid} is not in {folder}. The folder holds:\n  {listing}")
        info = chosen[0]
    elif len(series) > 1:
        listing = "\n  ".join(s.summary() for s in series)
        raise InputError(
            f"{folder} holds {len(series)} image series; choose one with --series <SeriesInstanceUID>:\n  {listing}"
        )
    else:
        info = series[0]

    datasets = [read_dataset(p) for p in info.files]
    return _assemble_checked(datasets, list(info.files), warn)


def read_dicom_files(files: Iterable[str | os.PathLike[str]], warn: Callable[[str], None] | None = None) -> Image:
    """Read the given files (one series, any order) into an :class:`Image`, e.g. from Slicer's DICOM database."""
    paths = [Path(f) for f in files]
    if not paths:
        raise InputError("No DICOM files were given; select a volume loaded from DICOM.")
    datasets = [read_dataset(p) for p in paths]
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in datasets}) > 1:
        raise InputError("The files belong to more than one series; give the files of a single series.")
    return _assemble_checked(datasets, paths, warn)


def _assemble_checked(datasets: list, files: list[Path], warn: Callable[[str], None] | None) -> Image:
    """:func:`_assemble`, with any value pydicom fails to convert reported as a damaged header, never raw."""
    try:
        return _assemble(datasets, files, warn)
    except MedAIError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom converts header values lazily; any of them may be damaged
        raise damaged_header_error(exc, f"A file of the series in {files[0].parent}") from None


def _assemble(datasets: list, files: list[Path], warn: Callable[[str], None] | None = None) -> Image:
    """One volume from the datasets of one series: headers checked first, then geometry, then pixels."""
    first = datasets[0]
    if any(is_multiframe_file(ds) for ds in datasets):  # Enhanced / Legacy Converted CT, MR: one file, many frames
        return read_multiframe_files(datasets, files, warn)
    datasets, files = drop_localizers(datasets, files, warn)
    if len(datasets) < 2:
        raise InputError(
            "The series has a single slice: that is a 2D image. MedAI needs a 3D volume (a series of slices)."
        )
    check_image_headers(datasets, files)
    check_single_reconstruction(datasets, files, str(first.get("SeriesInstanceUID", "")))
    orientations = [np.array(ds.ImageOrientationPatient, dtype=float) for ds in datasets]
    iop = orientations[0]
    other = [files[i] for i, o in enumerate(orientations) if not np.allclose(o, iop, atol=_ORIENTATION_TOLERANCE)]
    if other:
        raise GeometryError(
            f"The slices of this series have different orientations (mixed ImageOrientationPatient: "
            f"{len(other)} of {len(files)} file(s) differ from {files[0].name}, e.g. {other[0].name}); it is not one "
            "volume. Copy the slices of one orientation into a folder of their own, or re-export that "
            "reconstruction as its own series."
        )
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.array(ds.ImagePositionPatient, dtype=float) for ds in datasets])
    order, step_vector = stack_order(positions, normal)
    datasets = [datasets[i] for i in order]
    files = [files[i] for i in order]
    positions = positions[order]

    first = datasets[0]
    rows, cols = int(first.Rows), int(first.Columns)
    pixel_spacing = [float(v) for v in first.PixelSpacing]
    spacings = [[float(v) for v in ds.PixelSpacing] for ds in datasets]
    if any(not np.allclose(spacing, pixel_spacing, rtol=SPACING_TOLERANCE) for spacing in spacings):
        raise GeometryError(
            "The slices of this series have different PixelSpacing; it is not one volume. Choose a series whose "
            "slices share one pixel spacing."
        )
    slices = []
    lossy = set()
    for ds, path in zip(datasets, files):
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise GeometryError("The slices of this series have different sizes; it is not one volume.")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        slices.append((decode_pixels(ds, path), slope, intercept))
        method = lossy_compression(ds)
        if method:
            lossy.add(method)
    # int16 only for whole-number pixels and rescale; float pixel data (e.g. a Parametric Map) stays float
    integer_rescale = all(
        np.issubdtype(a.dtype, np.integer) and float(s).is_integer() and float(b).is_integer() for a, s, b in slices
    )
    out_dtype: type[np.number[Any]] = np.float32
    if integer_rescale:
        lo = min(float(a.min()) * s + b for a, s, b in slices)
        hi = max(float(a.max()) * s + b for a, s, b in slices)
        if -32768 <= lo and hi <= 32767:
            out_dtype = np.int16
    array = np.empty((len(slices), rows, cols), dtype=out_dtype)
    for k, (pixels, slope, intercept) in enumerate(slices):
        array[k] = (
            pixels.astype(np.float32) * slope + intercept
            if out_dtype == np.float32
            else (pixels.astype(np.int32) * int(slope) + int(intercept))
        )

    metadata = series_metadata(first)
    record_lossy(metadata, lossy, warn)
    return Image(
        array=array,
        ijk_to_ras=stack_affine(iop, pixel_spacing, step_vector, positions[0]),
        modality=str(first.get("Modality", "")),
        source_files=tuple(files),
        metadata=metadata,
    )


def write_dicom_series(
    image: Image,
    folder: str | os.PathLike[str],
    *,
    patient_id: str = "MEDAI-PHANTOM",
    patient_name: str = "Phantom^Chest",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: _dt.date | None = None,
    series_description: str = "MedAI synthetic chest CT",
    series_number: int = 1,
    uid_seed: str | None = None,
) -> list[Path]:
    """Write ``image`` as a classic single-frame CT (or MR) image series, one file per slice ``k``.

    Geometry (ImageOrientationPatient, ImagePositionPatient, PixelSpacing) comes from the affine, so any
    orientation round-trips through :func:`read_dicom_series`. Voxel values are stored as int16 with
    RescaleSlope 1 / RescaleIntercept 0 (HU for CT). ``uid_seed`` makes all UIDs deterministic.

    Returns:
        The written file paths, in slice order.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    if not image.is_orthogonal():
        raise GeometryError("Cannot write a sheared volume as a DICOM series; resample it first.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def uid(tag: str) -> UID:
        return generate_uid(entropy_srcs=[uid_seed, tag]) if uid_seed else generate_uid()

    study_uid = study_uid or uid("study")
    series_uid = series_uid or uid(f"series{series_number}")
    frame_of_reference_uid = frame_of_reference_uid or uid("frame")
    study_date = study_date or _dt.date(2026, 1, 5)
    modality = image.modality or "CT"
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage

    origin, spacing, direction = affine_parts(image.ijk_to_lps)
    values = np.asarray(image.array)
    if np.issubdtype(values.dtype, np.floating):
        values = np.rint(values)
    values = np.clip(values, -32768, 32767).astype(np.int16)
    paths = []
    date_text = study_date.strftime("%Y%m%d")
    for k in range(values.shape[0]):
        position = origin + direction[:, 2] * spacing[2] * k
        sop_uid = uid(f"{series_uid}.{k}")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Modality = modality
        ds.Manufacturer = "MedAI"
        ds.PatientID = patient_id
        ds.PatientName = patient_name
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date_text
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.SeriesDescription = series_description
        ds.BodyPartExamined = "CHEST"
        if modality == "CT":
            ds.KVP = 120
            ds.RescaleType = "HU"
        else:
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = 2.0
            ds.RepetitionTime = 5.0
            ds.EchoTrainLength = 1
        ds.PatientPosition = "HFS"
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.SliceLocation = f"{float(position @ np.cross(direction[:, 0], direction[:, 1])):.6f}"
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = values.shape[1], values.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.WindowCenter = -600 if modality == "CT" else int(values.mean())
        ds.WindowWidth = 1500 if modality == "CT" else int(max(values.std() * 4, 1))
        ds.PixelData = np.ascontiguousarray(values[k]).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
