"""The source series a derived DICOM object (SEG, SR, Parametric Map, Secondary Capture) refers to.

Shared by every writer and reader in :mod:`MedAIExtension.dicom`: loading the source headers in slice order
(checked against the image geometry), the source SOP Instance UIDs, the frame-of-reference check, and the
anatomy attributes copied into a derived series.

A source read from one multi-frame (enhanced) object (:attr:`Image.source_frames` set) can be referenced by a
DICOM SEG (highdicom maps each SEG frame to its source frame); the other derived objects refuse it up front with
:func:`require_single_frame_source`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.multiframe import frame_geometry

__all__ = [
    "POSITION_TOLERANCE_MM",
    "check_frame_of_reference",
    "copy_anatomy",
    "frame_of_reference_allows",
    "has_frame_of_reference",
    "load_source_datasets",
    "reference_frames",
    "reference_sop_uids",
    "require_frame_of_reference",
    "require_single_frame_source",
]

#: How far (mm) a slice's ImagePositionPatient may lie from where the image geometry puts it.
POSITION_TOLERANCE_MM = 1e-2


def require_single_frame_source(source: Image, what: str) -> None:
    """InputError when ``source`` was read from one multi-frame (enhanced) object, which a ``what`` cannot reference.

    Call it before long work (inference) whose results are to be written as a ``what``.
    """
    if source.source_frames:
        name = source.source_files[0].name if source.source_files else "the input"
        raise InputError(
            f"The input is one multi-frame (enhanced) DICOM object ({name}); a {what} cannot reference a "
            "multi-frame source yet (a DICOM SEG can). Leave the DICOM outputs out (e.g. --no-dicom), use a "
            "NIfTI/NRRD copy of the image, or convert it to a single-frame series (e.g. export it from Slicer's "
            "DICOM module) first."
        )


def has_frame_of_reference(image: Image) -> bool:
    """Whether ``image`` was read with a FrameOfReferenceUID (derived DICOM objects must share it)."""
    return bool(str(image.metadata.get("FrameOfReferenceUID", "") or "").strip())


def require_frame_of_reference(source: Image, what: str) -> None:
    """InputError when a DICOM ``source`` has no FrameOfReferenceUID: no ``what`` can then share its coordinates."""
    if source.source_files and not has_frame_of_reference(source):
        raise InputError(
            f"The source series has no FrameOfReferenceUID, which a {what} must share with its source images, so "
            f"no {what} can be written for it. Re-export the series with its Frame of Reference module, or write "
            "the result as .seg.nrrd / .nii.gz."
        )


def frame_of_reference_allows(
    sources: Sequence[tuple[str, Image]], what: str, warn: Callable[[str], None] | None = None
) -> bool:
    """Before the work: can ``what`` objects reference these DICOM ``sources`` (``(name, image)`` pairs)?

    False, with one warning naming the series and what is left out, when any of them has no FrameOfReferenceUID:
    the job then writes its other outputs. Refusing instead is :func:`require_frame_of_reference`.
    """
    lacking = [name for name, image in sources if image.source_files and not has_frame_of_reference(image)]
    if not lacking:
        return True
    if warn is not None:
        warn(
            f"The {' and '.join(lacking)} series has no FrameOfReferenceUID, which {what} must share with their "
            "source images: they are left out, the other outputs are written. Re-export the series with its Frame "
            "of Reference module to get them."
        )
    return False


def load_source_datasets(source: Image, what: str = "DICOM object", *, multiframe: bool = False) -> list[Any]:
    """The source series' datasets in slice order ``k`` (headers only), checked against the source affine.

    ``what`` names the object being written (e.g. ``"DICOM SEG"``) in error messages. For a source read from one
    multi-frame object the result is that one dataset (its frames checked against the affine through
    ``source.source_frames``, plane orientation and pixel measures in its shared functional groups as highdicom
    expects) when ``multiframe`` is true, and an :class:`InputError` otherwise (see
    :func:`require_single_frame_source`).
    """
    import pydicom

    require_frame_of_reference(source, what)
    if source.source_frames:
        if not multiframe:
            require_single_frame_source(source, what)
        return [_load_multiframe_source(source, what)]
    files = source.source_files
    if not files:
        raise InputError(
            f"The source image was not read from DICOM (it has no source files), so a {what} cannot reference its "
            "images or join its study: read the source with read_dicom_series (a DICOM folder) and use that image."
        )
    if len(files) != source.shape[0]:
        raise InputError(
            f"The source image has {len(files)} DICOM file reference(s) for {source.shape[0]} slices. A {what} "
            "must reference the DICOM series it was computed from: read the source with read_dicom_series."
        )
    datasets = []
    for path in files:
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise InputError(
                f"Cannot read the source DICOM file {path} ({exc}). The {what} needs the source series on disk; "
                "keep the input folder in place until the results are written."
            ) from None
    lps = source.ijk_to_lps
    for k, ds in enumerate(datasets):
        expected = lps[:3, 2] * k + lps[:3, 3]
        position = np.array(ds.get("ImagePositionPatient", [np.nan] * 3), dtype=float)
        if not np.allclose(position, expected, atol=POSITION_TOLERANCE_MM + 1e-4 * np.abs(expected).max()):
            raise GeometryError(
                f"Source file {files[k].name} lies at {position.round(3).tolist()} mm but slice {k} of the source "
                f"image is at {expected.round(3).tolist()} mm: source_files do not match the image's slice order. "
                "Read the source with read_dicom_series and do not reorder its slices."
            )
    return datasets


def reference_sop_uids(reference: Image) -> list[str] | None:
    """SOP Instance UIDs of the reference image's slices in ``k`` order; None when they cannot be read.

    None too for a reference read from one multi-frame object (its slices are frames of one instance): use
    :func:`reference_frames` there.
    """
    import pydicom

    if len(reference.source_files) != reference.shape[0] or reference.source_frames:
        return None
    uids = []
    for path in reference.source_files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except (OSError, pydicom.errors.InvalidDicomError):
            return None
        uids.append(str(ds.SOPInstanceUID))
    return uids


def reference_frames(reference: Image) -> tuple[str, list[int]] | None:
    """For a reference read from one multi-frame object: its SOP Instance UID and the frame number of each slice
    ``k``; None for other images or when the file cannot be read."""
    import pydicom

    if not reference.source_frames or len(set(reference.source_files)) != 1:
        return None
    try:
        ds = pydicom.dcmread(reference.source_files[0], stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except (OSError, pydicom.errors.InvalidDicomError):
        return None
    return str(ds.SOPInstanceUID), list(reference.source_frames)


def _load_multiframe_source(source: Image, what: str) -> Any:
    """The header of the one multi-frame object ``source`` was read from, checked frame by frame."""
    import pydicom

    paths = set(source.source_files)
    if len(paths) != 1:
        raise InputError(
            f"The source image's slices come from {len(paths)} multi-frame files; a {what} references one "
            "multi-frame source. Read the source with read_dicom_series from a folder holding its one file."
        )
    path = source.source_files[0]
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(
            f"Cannot read the source DICOM file {path} ({exc}). The {what} needs the source image on disk; "
            "keep the input file in place until the results are written."
        ) from None
    geometry = frame_geometry(dataset)
    if max(source.source_frames) > len(geometry.positions):
        raise GeometryError(
            f"The source image refers to frame {max(source.source_frames)} but {path.name} has "
            f"{len(geometry.positions)} frames: the file changed since it was read. Read the source again."
        )
    lps = source.ijk_to_lps
    for k, frame in enumerate(source.source_frames):
        expected = lps[:3, 2] * k + lps[:3, 3]
        position = geometry.positions[frame - 1]
        if not np.allclose(position, expected, atol=POSITION_TOLERANCE_MM + 1e-4 * np.abs(expected).max()):
            raise GeometryError(
                f"Frame {frame} of {path.name} lies at {position.round(3).tolist()} mm but slice {k} of the source "
                f"image is at {expected.round(3).tolist()} mm: source_frames do not match the image's slice order. "
                "Read the source with read_dicom_series and do not reorder its slices."
            )
    return _with_shared_plane_groups(dataset, geometry)


def _with_shared_plane_groups(dataset: Any, geometry: Any) -> Any:
    """``dataset`` with its (checked, common) plane orientation and pixel measures in the shared functional groups.

    highdicom reads them only from there; files that repeat them per frame or give them at the top level are
    valid too, so a copy of the header gets them in the shared item (per-frame copies removed).
    """
    import copy

    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    shared = (dataset.get("SharedFunctionalGroupsSequence") or [None])[0]
    if shared is not None and "PlaneOrientationSequence" in shared and "PixelMeasuresSequence" in shared:
        return dataset
    dataset = copy.deepcopy(dataset)
    if shared is None:
        dataset.SharedFunctionalGroupsSequence = DicomSequence([Dataset()])
    shared = dataset.SharedFunctionalGroupsSequence[0]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    if "PlaneOrientationSequence" not in shared:
        item = Dataset()
        item.ImageOrientationPatient = [float(v) for v in geometry.orientation]
        shared.PlaneOrientationSequence = DicomSequence([item])
        for frame_item in per_frame:
            if "PlaneOrientationSequence" in frame_item:
                del frame_item.PlaneOrientationSequence
    if "PixelMeasuresSequence" not in shared:
        first = (per_frame[0].get("PixelMeasuresSequence") or [None])[0] if len(per_frame) else None
        item = Dataset()
        item.PixelSpacing = [float(v) for v in geometry.pixel_spacing]
        thickness = first.get("SliceThickness") if first is not None else dataset.get("SliceThickness")
        if thickness not in (None, ""):
            item.SliceThickness = thickness
        shared.PixelMeasuresSequence = DicomSequence([item])
        for frame_item in per_frame:
            if "PixelMeasuresSequence" in frame_item:
                del frame_item.PixelMeasuresSequence
    return dataset


def check_frame_of_reference(dataset: Any, reference: Image, path: Path, what: str) -> None:
    """GeometryError when ``dataset`` (a ``what`` read from ``path``) and ``reference`` use different frames."""
    frame_of_reference = str(reference.metadata.get("FrameOfReferenceUID", "") or "")
    if frame_of_reference and frame_of_reference != str(dataset.FrameOfReferenceUID):
        raise GeometryError(
            f"The {what} {path.name} is in frame of reference {dataset.FrameOfReferenceUID}, the reference image "
            f"in {frame_of_reference}: they do not share patient coordinates. Read it onto the series it was "
            "computed from."
        )


def copy_anatomy(dataset: Any, source: Any) -> None:
    """Copy the body part and laterality of the source series (General Series; Laterality is Type 2C).

    Without either, Laterality is written empty ("unknown"): dciodvfy requires it when it cannot tell that the
    body part is unpaired.
    """
    for keyword in ("BodyPartExamined", "Laterality"):
        value = source.get(keyword)
        if value:
            setattr(dataset, keyword, value)
    if "BodyPartExamined" not in dataset and "Laterality" not in dataset:
        dataset.Laterality = None
