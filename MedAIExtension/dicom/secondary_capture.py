"""DICOM Secondary Capture of key slices with an overlay blended in, for PACS viewers without overlay support.

highdicom's ``SCImage`` writes the single-frame Secondary Capture Image IOD, so the key slices become one
series of single-frame files (``sc_0001.dcm``, ``sc_0002.dcm``, ... in frame order) in one folder, rather than
one Multi-frame True Color SC file, which highdicom does not build and some viewers page through badly. The
series joins the source's study (same Study Instance UID and patient); every image references the source slice
it shows when that slice is given, and says in Image Comments and Derivation Description that it is a derived
image for review, not for diagnosis. Conversion Type is WSD (workstation): the pixels are rendered, not
digitised.

highdicom and pydicom are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension import __version__
from MedAIExtension.atomic import atomic_directory
from MedAIExtension.dicom.source import copy_anatomy, load_source_datasets
from MedAIExtension.dicom.values import long_string
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.image import Image

__all__ = ["NOT_FOR_DIAGNOSIS", "SECONDARY_CAPTURE_STORAGE", "slice_patient_orientation", "write_secondary_capture"]

#: SOP Class UID of the (single-frame) Secondary Capture Image Storage IOD.
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
#: The sentence every Secondary Capture carries in Image Comments and Derivation Description.
NOT_FOR_DIAGNOSIS = "Derived image for review, not for diagnosis."

_FILE_PATTERN = re.compile(r"^sc_\d{4}\.dcm$")
_ORIENTATION_PATTERN = re.compile(r"^[LRAPHF]{1,3}$")
_LPS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))  # letter for +axis, -axis


def _direction_letters(vector: np.ndarray) -> str:
    """Patient orientation letters of an LPS direction, main axis first (at most three, e.g. ``"LP"``)."""
    order = np.argsort(-np.abs(vector))
    letters = []
    for axis in order:
        if abs(vector[axis]) > 1e-3:
            letters.append(_LPS_LETTERS[axis][0 if vector[axis] > 0 else 1])
    return "".join(letters)


def slice_patient_orientation(source: Image) -> tuple[str, str]:
    """Patient Orientation of a slice ``k`` of ``source`` shown as stored (rows along ``j``, columns along ``i``).

    Value 1 is the direction of the rows (increasing column index = ``i``), value 2 that of the columns
    (increasing row index = ``j``), e.g. ``("L", "P")`` for a standard axial slice. Pass it to
    :func:`write_secondary_capture` when the frames are slices rendered without flips or rotations.
    """
    lps = source.ijk_to_lps[:3, :3]
    i_direction = lps[:, 0] / np.linalg.norm(lps[:, 0])
    j_direction = lps[:, 1] / np.linalg.norm(lps[:, 1])
    return _direction_letters(i_direction), _direction_letters(j_direction)


def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    checked = []
    if len(frames) == 0:
        raise InputError("No key-slice image was given; render at least one frame before writing the capture.")
    for number, frame in enumerate(frames, start=1):
        array = np.asarray(frame)
        if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
            raise InputError(
                f"Frame {number} has shape {array.shape}; a Secondary Capture frame is an RGB image of shape "
                "(rows, columns, 3). Render the key slice in colour."
            )
        if array.dtype != np.uint8:
            raise InputError(
                f"Frame {number} holds {array.dtype} values; Secondary Capture colour images are 8-bit. Convert "
                "it with np.clip(frame, 0, 255).astype(np.uint8) (scale 0..1 images by 255 first)."
            )
        checked.append(np.ascontiguousarray(array))
    return checked


def _check_orientation(orientation: tuple[str, str] | None) -> tuple[str, str] | None:
    if orientation is None:
        return None
    values = tuple(str(v).upper() for v in orientation)
    if len(values) != 2 or not all(_ORIENTATION_PATTERN.match(v) for v in values):
        raise InputError(
            f"patient_orientation {orientation!r} is not two direction codes made of L, R, A, P, H, F (e.g. "
            "('L', 'P')); use slice_patient_orientation(source) or None when unknown."
        )
    return values


def _check_target(target: Path) -> None:
    """Refuse to replace a folder that holds anything but an earlier capture written here."""
    if not target.parent.is_dir():
        raise OutputError(f"The folder {target.parent} does not exist; create it or choose another output path.")
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"{target} exists and is not a folder; the Secondary Capture series needs a folder.")
        foreign = [p.name for p in target.iterdir() if not (p.is_file() and _FILE_PATTERN.match(p.name))]
        if foreign:
            raise OutputError(
                f"The folder {target} holds other files ({', '.join(sorted(foreign)[:3])}); the Secondary Capture "
                "series replaces its folder as a whole. Choose a new or empty folder."
            )


def _source_item(dataset: Any) -> Any:
    from pydicom import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    return item


def write_secondary_capture(
    frames: Sequence[np.ndarray],
    source: Image,
    path: str | os.PathLike[str],
    *,
    series_description: str,
    series_number: int = 311,
    slice_indices: Sequence[int] | None = None,
    frame_comments: Sequence[str] | None = None,
    patient_orientation: tuple[str, str] | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    manufacturer: str = "MedAI",
    model_name: str | None = None,
) -> Path:
    """Write RGB key-slice images (overlay blended in) as a Secondary Capture series in the source's study.

    One single-frame Secondary Capture file per frame is written into the folder ``path`` (``sc_0001.dcm``, ...
    in frame order, Instance Number = frame number). The folder is written atomically: on any error nothing is
    left at ``path``; an earlier capture there (only ``sc_NNNN.dcm`` files) is replaced as a whole, any other
    content makes the call fail.

    Args:
        frames: key-slice images, each ``(rows, columns, 3)`` uint8 RGB.
        source: the image the frames show, read with
            :func:`~MedAIExtension.io.dicom_series.read_dicom_series` (patient and study are taken from it).
        path: output folder of the series.
        series_description: Series Description (e.g. ``"MedAI Grad-CAM Nodule key slices"``).
        series_number: Series Number.
        slice_indices: for each frame, the source slice ``k`` it shows (referenced in Source Image Sequence);
            ``None`` = not recorded.
        frame_comments: for each frame, a short text for Image Comments (e.g. ``"Slice 12 of 40, Grad-CAM"``);
            the not-for-diagnosis sentence is always appended.
        patient_orientation: Patient Orientation of the frames (e.g. from :func:`slice_patient_orientation`);
            ``None`` = unknown (written empty).
        pixel_spacing_mm: (row, column) spacing of the frames in mm when they are unscaled slices; ``None`` =
            not recorded (rendered images are often resized).
        manufacturer: Manufacturer of the software that rendered the frames.
        model_name: the model whose output is shown (Manufacturer's Model Name); ``None`` = ``"MedAI"``.

    Returns:
        The folder holding the series.

    Raises:
        InputError: frames that are not RGB uint8, lists of the wrong length, a slice index outside the source,
            or a source without its DICOM files.
        GeometryError: the source files do not match the source.
        OutputError: the folder cannot be written or holds other files.
    """
    import highdicom as hd

    target = Path(path)
    images = _check_frames(frames)
    description = str(series_description or "").strip()
    if not description:
        raise InputError("series_description is empty; name the capture so PACS users can find it.")
    for name, values in (("slice_indices", slice_indices), ("frame_comments", frame_comments)):
        if values is not None and len(values) != len(images):
            raise InputError(f"{name} has {len(values)} entries for {len(images)} frames; give one per frame.")
    if slice_indices is not None:
        outside = [int(k) for k in slice_indices if not 0 <= int(k) < source.shape[0]]
        if outside:
            raise InputError(
                f"Slice index(es) {outside[:5]} lie outside the source's {source.shape[0]} slices (0.."
                f"{source.shape[0] - 1}); give the k index of the slice each frame shows."
            )
    orientation = _check_orientation(patient_orientation)
    _check_target(target)
    if not source.source_files:
        raise InputError(
            "The source image was not read from DICOM (it has no source files), so the Secondary Capture cannot "
            "join its study. Read the CT/MR with read_dicom_series."
        )
    source_datasets = load_source_datasets(source, "Secondary Capture")
    reference = source_datasets[0]
    series_uid = hd.UID()
    captures = []
    for number, frame in enumerate(images, start=1):
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference,
            pixel_array=frame,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=int(series_number),
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer=long_string(manufacturer),
            patient_orientation=("L", "P"),  # highdicom needs single letters; the real value is set below
            # highdicom annotates from_ref_dataset's pixel_spacing as tuple[int, int]; it takes mm (floats)
            pixel_spacing=pixel_spacing_mm,  # type: ignore[arg-type]
            transfer_syntax_uid="1.2.840.10008.1.2.1",  # Explicit VR Little Endian
            series_description=long_string(description),
            manufacturer_model_name=long_string(model_name or "MedAI"),
            software_versions=long_string(f"MedAI {__version__}"),
        )
        # Type 2: present, empty when unknown (highdicom wrote the element above)
        capture["PatientOrientation"].value = list(orientation) if orientation else None
        copy_anatomy(capture, reference)
        capture.ConversionType = "WSD"
        capture.BurnedInAnnotation = "NO"
        capture.LossyImageCompression = "00"
        comment = str(frame_comments[number - 1]).strip() if frame_comments is not None else ""
        capture.ImageComments = f"{comment.rstrip('.')}. {NOT_FOR_DIAGNOSIS}" if comment else NOT_FOR_DIAGNOSIS
        capture.DerivationDescription = (
            f"Key slice of series {reference.get('SeriesNumber', '')} "
            f"'{reference.get('SeriesDescription', '')}' with a MedAI overlay blended in. {NOT_FOR_DIAGNOSIS}"
        )
        if slice_indices is not None:
            capture.SourceImageSequence = [_source_item(source_datasets[int(slice_indices[number - 1])])]
        captures.append(capture)
    try:
        with atomic_directory(target) as tmp:
            for number, capture in enumerate(captures, start=1):
                capture.save_as(tmp / f"sc_{number:04d}.dcm", enforce_file_format=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the Secondary Capture series {target} ({exc.strerror or exc}). Choose a writable folder."
        ) from None
    return target
