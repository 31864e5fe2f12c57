"""DICOM Segmentation (SEG) objects: write a label map as a highdicom SEG, read a SEG back onto an image grid.

The writer stores one segment per catalogue label that occurs in the label map. Segment numbers are
consecutive (1, 2, ...) in the order of the label list — highdicom requires BINARY segment numbers to start
at 1 and increase by 1, so they cannot simply be the label values. Each segment records its label value in
the Segment Description attribute (``"MedAI label value <n>"``), which the readers use to restore the
original voxel values; SEGs from other software fall back to ``value = segment number``.

Labels of the catalogue that are absent from the label map are *not* written: an empty segment would have no
frame at all, which several readers (dcmqi, viewers) handle badly. A label map with no labelled voxel at all
raises :class:`EmptySegmentationError` and writes nothing — an empty result is reported elsewhere (e.g. in a
Structured Report), not as a SEG without content.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension import __version__
from MedAIExtension.atomic import save_dataset
from MedAIExtension.dicom.source import (
    check_frame_of_reference,
    load_source_datasets,
    reference_frames,
    reference_sop_uids,
)
from MedAIExtension.dicom.tools import find_dcmqi_tool
from MedAIExtension.dicom.values import coded_concept, long_string
from MedAIExtension.errors import GeometryError, InputError, OutputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.resample import resample_array
from MedAIExtension.labels import SegmentLabel, label_counts

__all__ = [
    "EmptySegmentationError",
    "read_dicom_seg",
    "read_dicom_seg_with_dcmqi",
    "segment_value_map",
    "write_dicom_seg",
]

_SEGMENT_DESCRIPTION_PREFIX = "MedAI label value "
_SEGMENT_DESCRIPTION_PATTERN = re.compile(r"^MedAI label value (\d{1,3})$")


class EmptySegmentationError(InputError):
    """The label map holds no voxel of any catalogue label, so there is no segment to store."""


# ---- writing ------------------------------------------------------------------------------------------------


def _check_labels(labels: Sequence[SegmentLabel]) -> None:
    if not labels:
        raise InputError("No segment labels were given; pass the model's label list to describe the segments.")
    values = [label.value for label in labels]
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise InputError(f"Label value(s) {duplicates} appear more than once in the label list; each needs one entry.")


def _label_array(labelmap: Image, labels: Sequence[SegmentLabel]) -> tuple[np.ndarray, set[int]]:
    """The label map as uint8 and the label values it holds; every non-zero value must be a catalogue label."""
    array = np.asarray(labelmap.array)
    if array.dtype == bool:
        array = array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise InputError("The label map holds fractional values; a label map must hold whole label numbers.")
    known = {label.value for label in labels}
    if array.min() < 0 or array.max() > 255:
        outside = np.unique(array[(array < 0) | (array > 255)])
        raise InputError(
            f"The label map holds value(s) {[int(v) for v in outside[:10]]} outside 0..255; a label map holds "
            "label values 1..255 and 0 for background."
        )
    array = array.astype(np.uint8, copy=False)
    present = set(label_counts(array)) - {0}
    unknown = sorted(present - known)
    if unknown:
        raise InputError(
            f"The label map holds value(s) {unknown[:10]} that are not in the label list "
            f"{sorted(known)}. Pass the full label list of the model, or clear those voxels."
        )
    return array, present


def write_dicom_seg(
    labelmap: Image,
    source: Image,
    labels: Sequence[SegmentLabel],
    path: str | os.PathLike[str],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str = "MedAI segmentation",
    series_number: int = 300,
    segmentation_type: str = "BINARY",
    manufacturer: str = "MedAI",
    content_label: str = "MEDAI",
    omit_empty_frames: bool = True,
) -> Path:
    """Write a label map as a DICOM Segmentation that references its source series.

    One segment is written per label of ``labels`` that occurs in the label map, numbered 1, 2, ... in list
    order; labels absent from the map are left out (see the module docstring). Each segment carries the
    label's name, its segmented property category/type codes, the recommended display colour (CIELab from the
    label's RGB), algorithm type AUTOMATIC and the algorithm identification (``algorithm_name`` /
    ``algorithm_version``, family "Artificial Intelligence"). The file is written atomically: on any error no
    file is left at ``path``.

    Args:
        labelmap: label map (integer voxel values = label values, 0 = background) on the grid of ``source``.
        source: the image the label map was computed from, read with
            :func:`~MedAIExtension.io.dicom_series.read_dicom_series` (its ``source_files`` are referenced).
        labels: the model's labels (value, name, colour, codes).
        path: output file (``.dcm``).
        algorithm_name: name of the model that produced the label map.
        algorithm_version: version of that model.
        series_description: SeriesDescription of the SEG series.
        series_number: SeriesNumber of the SEG series.
        segmentation_type: ``"BINARY"`` (default, validated by dciodvfy) or ``"LABELMAP"`` (newer SOP class,
            unknown to older validators and viewers).
        manufacturer: Manufacturer of the equipment (software) that made the SEG.
        content_label: ContentLabel (upper case, code string).
        omit_empty_frames: leave out frames without any segmented pixel (smaller, faster files).

    Returns:
        The written path.

    Raises:
        GeometryError: the label map is not on the source grid, or the source files do not match the source.
        EmptySegmentationError: the label map contains no labelled voxel.
        InputError: unknown label values, duplicate labels, or a source without its DICOM files.
        OutputError: the file cannot be written.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not labelmap.same_grid(source):
        raise GeometryError(
            f"The label map (shape {labelmap.shape}) is not on the grid of the source series (shape "
            f"{source.shape}) or their affines differ. A DICOM SEG stores one frame per source slice: resample "
            "the label map onto the source image grid (nearest neighbour) before writing the SEG."
        )
    seg_type = str(getattr(segmentation_type, "value", segmentation_type)).upper()
    if seg_type not in ("BINARY", "LABELMAP"):
        raise InputError(f"segmentation_type must be 'BINARY' or 'LABELMAP', got {segmentation_type!r}.")
    if not algorithm_name or not algorithm_version:
        raise InputError("algorithm_name and algorithm_version are required to identify the model in the SEG.")
    target = Path(path)
    if not target.parent.is_dir():
        raise OutputError(f"The folder {target.parent} does not exist; create it or choose another output path.")
    _check_labels(labels)
    array, present_values = _label_array(labelmap, labels)
    written = [label for label in labels if label.value in present_values]
    if not written:
        raise EmptySegmentationError(
            "The label map contains no segmented voxel, so there is no segment to store in a DICOM SEG. "
            "Report the empty result instead (e.g. in a Structured Report) or skip the SEG export."
        )
    source_datasets = load_source_datasets(source, "DICOM SEG", multiframe=True)

    # Map label values to consecutive segment numbers 1..n (a lookup table keeps this one pass over the voxels).
    lookup = np.zeros(256, dtype=np.uint8)
    for number, label in enumerate(written, start=1):
        lookup[label.value] = number
    pixel_array = lookup[array]
    if source.source_frames:
        # One multi-frame source: highdicom takes the frames in the source's frame order (frame n = index n - 1)
        # and writes each SEG frame's Referenced Frame Number from that order.
        in_frame_order = np.zeros((int(source_datasets[0].NumberOfFrames), *pixel_array.shape[1:]), np.uint8)
        in_frame_order[np.asarray(source.source_frames) - 1] = pixel_array
        pixel_array = in_frame_order

    algorithm = hd.AlgorithmIdentificationSequence(
        name=long_string(algorithm_name),
        family=codes.cid7162.ArtificialIntelligence,
        version=long_string(algorithm_version),
    )
    descriptions = []
    for number, label in enumerate(written, start=1):
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=long_string(label.name),
            segmented_property_category=coded_concept(label.category),
            segmented_property_type=coded_concept(label.type_or_default),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*label.color_rgb255),
        )
        description.SegmentDescription = f"{_SEGMENT_DESCRIPTION_PREFIX}{label.value}"
        descriptions.append(description)

    seg = hd.seg.Segmentation(
        source_images=source_datasets,
        pixel_array=pixel_array,
        segmentation_type=seg_type,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=long_string(manufacturer),
        manufacturer_model_name=long_string(algorithm_name),
        software_versions=long_string(f"MedAI {__version__}"),
        device_serial_number="0",
        content_label=re.sub(r"[^A-Z0-9_ ]", "_", content_label.upper())[:16] or "MEDAI",
        content_description=long_string(f"{algorithm_name} {algorithm_version}"),
        series_description=long_string(series_description),
        omit_empty_frames=omit_empty_frames,
    )
    if "ContentCreatorName" not in seg:
        # Type 2 in the Content Identification Macro: present, empty for an automatic result (dcmqi warns if absent).
        seg.ContentCreatorName = None
    return save_dataset(seg, target, "DICOM SEG")


# ---- reading ------------------------------------------------------------------------------------------------
def segment_value_map(seg: Any) -> dict[int, int]:
    """Segment number -> label value for a highdicom ``Segmentation``.

    Uses the ``"MedAI label value <n>"`` Segment Description written by :func:`write_dicom_seg`; segments of
    other software keep their segment number as value.
    """
    mapping: dict[int, int] = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        match = _SEGMENT_DESCRIPTION_PATTERN.match(str(item.get("SegmentDescription", "")))
        mapping[number] = int(match.group(1)) if match else number
    return mapping


def _relabel(array: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    size = max(max(mapping, default=0), int(array.max(initial=0))) + 1
    lookup = np.arange(size, dtype=np.int64)
    for number, value in mapping.items():
        lookup[number] = value
    out_type = np.uint8 if max(mapping.values(), default=0) <= 255 else np.uint16
    return lookup[array.astype(np.int64, copy=False)].astype(out_type)


def _resample_onto(sitk_label: Any, reference: Image) -> np.ndarray:
    """Nearest-neighbour resampling of a SimpleITK label image onto the reference grid (physical space)."""
    if not reference.is_orthogonal():
        raise GeometryError(
            "The reference image axes are not perpendicular (sheared, e.g. gantry tilt); a SEG cannot be placed "
            "on it in physical space. Read the SEG onto its source series (read_dicom_series) instead."
        )
    return resample_array(sitk_label, reference.ijk_to_ras, reference.shape, linear=False, fill=0)


def _volume_to_sitk(volume: Any) -> Any:
    """A highdicom ``Volume`` (array [slice, row, column], affine to LPS) as a SimpleITK image."""
    import SimpleITK as sitk

    affine = np.asarray(volume.affine, dtype=float)
    # Volume axes are (slice, row, column); SimpleITK's x, y, z are (column, row, slice).
    linear = affine[:3, :3][:, [2, 1, 0]]
    spacing = np.linalg.norm(linear, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in (linear / spacing).flatten()))
    return image


def _open_seg(path: Path, lazy: bool = False) -> Any:
    """Read ``path`` with highdicom, turning its many failure types into one :class:`InputError`."""
    import highdicom as hd
    from pydicom.errors import InvalidDicomError

    try:
        return hd.seg.segread(path, lazy_frame_retrieval=lazy)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, InvalidDicomError) as exc:
        raise InputError(f"Cannot read {path} as a DICOM Segmentation ({exc}). Check that it is a SEG file.") from None


def read_dicom_seg(path: str | os.PathLike[str], reference: Image) -> Image:
    """Read a DICOM SEG with highdicom into a label map on the grid of ``reference``.

    When ``reference`` was read from the SEG's source series, frames are matched by source SOP instance
    (exact, any orientation), or by source frame number for a source read from one multi-frame object;
    otherwise the SEG volume is resampled onto the reference grid in physical space (nearest neighbour).
    Segment numbers are mapped back to label values (see :func:`segment_value_map`).

    Args:
        path: the SEG file.
        reference: the image whose grid the label map is wanted on (usually the source series).

    Returns:
        A uint8 label map (uint16 if a value exceeds 255) on the reference grid.

    Raises:
        InputError: the file is not a readable DICOM SEG, or its segments overlap.
        GeometryError: the SEG is not in the reference's frame of reference, or its frames form no regular
            volume and the reference is not its source series.
    """
    path = Path(path)
    seg = _open_seg(path)
    mapping = segment_value_map(seg)
    reference_uids = reference_sop_uids(reference)
    multiframe = reference_frames(reference)
    referenced = {uids[2] for uids in seg.get_source_image_uids()}
    try:
        if multiframe is not None and referenced == {multiframe[0]}:
            numbers = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=multiframe[0],
                source_frame_numbers=multiframe[1],
                combine_segments=True,
                relabel=False,
                assert_missing_frames_are_empty=True,
                dtype=np.uint16,
            )
            return reference.with_array(_relabel(np.asarray(numbers), mapping), source_files=(), modality="")
        if reference_uids is not None and referenced and referenced <= set(reference_uids):
            numbers = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=reference_uids,
                combine_segments=True,
                relabel=False,
                assert_missing_frames_are_empty=True,
                dtype=np.uint16,
            )
            return reference.with_array(_relabel(np.asarray(numbers), mapping), source_files=(), modality="")
        check_frame_of_reference(seg, reference, path, "SEG")
        volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint16)
    except RuntimeError as exc:  # highdicom: overlapping segments cannot be combined into one label map
        raise InputError(
            f"The segments of {path.name} cannot be combined into one label map ({exc}). Overlapping segments "
            "need one mask per segment; read them with highdicom's get_volume(combine_segments=False)."
        ) from None
    except ValueError as exc:  # highdicom: frames that do not form a regular volume
        raise GeometryError(
            f"The frames of {path.name} do not form a regular volume ({exc}); read it onto the DICOM series it "
            "was made from (read_dicom_series) so that frames are matched by source image."
        ) from None
    numbers = _resample_onto(_volume_to_sitk(volume), reference)
    return reference.with_array(_relabel(numbers, mapping), source_files=(), modality="")


def read_dicom_seg_with_dcmqi(
    path: str | os.PathLike[str], reference: Image, workdir: str | os.PathLike[str] | None = None
) -> Image:
    """Read a DICOM SEG with dcmqi's ``segimage2itkimage`` into a label map on the grid of ``reference``.

    Runs ``segimage2itkimage --mergeSegments -t nrrd`` (one label image whose voxels are segment numbers;
    dcmqi writes several files if segments overlap, which are merged here in file order), resamples the result
    onto the reference grid in physical space (nearest neighbour) and maps segment numbers to label values.
    This is an independent reader used to check the writer against the tool Slicer's QuantitativeReporting
    uses.

    Args:
        path: the SEG file.
        reference: the image whose grid the label map is wanted on.
        workdir: folder for dcmqi's output (a temporary folder, removed afterwards, when ``None``).

    Raises:
        MissingToolError: dcmqi is not installed.
        InputError: the file is not a readable DICOM SEG.
        GeometryError: the SEG is not in the reference's frame of reference.
        OutputError: dcmqi fails on the file.
    """
    import SimpleITK as sitk

    path = Path(path)
    tool = find_dcmqi_tool("segimage2itkimage")
    seg = _open_seg(path, lazy=True)
    check_frame_of_reference(seg, reference, path, "SEG")
    mapping = segment_value_map(seg)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="dcmqi-") as tmp:
        command = [
            str(tool),
            "--inputDICOM",
            str(path),
            "--outputDirectory",
            tmp,
            "--prefix",
            "seg",
            "--outputType",
            "nrrd",
            "--mergeSegments",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        outputs = sorted(Path(tmp).glob("seg*.nrrd"))
        if result.returncode != 0 or not outputs:
            detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise OutputError(
                f"dcmqi segimage2itkimage failed on {path.name} (exit {result.returncode}): {' | '.join(detail)}"
            )
        merged = np.zeros(reference.shape, dtype=np.uint16)
        for output in outputs:
            numbers = _resample_onto(sitk.Cast(sitk.ReadImage(str(output)), sitk.sitkUInt16), reference)
            merged = np.where(numbers > 0, numbers, merged)
    return reference.with_array(_relabel(merged, mapping), source_files=(), modality="")
