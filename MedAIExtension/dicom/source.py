"""The source series a derived DICOM object (SEG, SR, Parametric Map, Secondary Capture) refers to.

Shared by every writer and reader in :mod:`MedAIExtension.dicom`: loading the source headers in slice order
(checked against the image geometry), the source SOP Instance UIDs, the frame-of-reference check, and the
anatomy attributes copied into a derived series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.image import Image

__all__ = [
    "POSITION_TOLERANCE_MM",
    "check_frame_of_reference",
    "copy_anatomy",
    "load_source_datasets",
    "reference_sop_uids",
]

#: How far (mm) a slice's ImagePositionPatient may lie from where the image geometry puts it.
POSITION_TOLERANCE_MM = 1e-2


def load_source_datasets(source: Image, what: str = "DICOM object") -> list[Any]:
    """The source series' datasets in slice order ``k`` (headers only), checked against the source affine.

    ``what`` names the object being written (e.g. ``"DICOM SEG"``) in error messages.
    """
    import pydicom

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
    """SOP Instance UIDs of the reference image's slices in ``k`` order; None when they cannot be read."""
    import pydicom

    if len(reference.source_files) != reference.shape[0]:
        return None
    uids = []
    for path in reference.source_files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except (OSError, pydicom.errors.InvalidDicomError):
            return None
        uids.append(str(ds.SOPInstanceUID))
    return uids


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
