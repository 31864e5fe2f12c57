"""Reading one multi-frame (enhanced) CT or MR DICOM object into an :class:`Image`.

Enhanced CT/MR and Legacy Converted Enhanced CT/MR store a whole volume in one file. The geometry of each frame
lives in functional groups: a per-frame item (PerFrameFunctionalGroupsSequence) overrides the shared item
(SharedFunctionalGroupsSequence), which overrides the top-level attribute some writers add as well. The frames
are sorted along the slice normal and checked like the slices of a classic series (one orientation, one stack,
one time point, no duplicate positions, even spacing, stacked along the normal); each slice ``k`` of the image
remembers its frame number in :attr:`Image.source_frames`, so derived objects (DICOM SEG) can reference it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.dicom_checks import MAX_MATRIX, lossy_compression, record_lossy
from MedAIExtension.io.dicom_metadata import series_metadata
from MedAIExtension.io.image import Image
from MedAIExtension.io.pixel_decoding import decode_frames
from MedAIExtension.io.slice_stack import DUPLICATE_MM, SPACING_TOLERANCE, stack_affine, stack_order

__all__ = [
    "MULTIFRAME_VOLUME_SOP_CLASSES",
    "FrameGeometry",
    "frame_geometry",
    "is_multiframe_file",
    "is_multiframe_volume",
    "read_multiframe",
    "read_multiframe_files",
]

#: SOP classes of multi-frame cross-sectional images whose frames form a volume (Enhanced and Legacy Converted
#: Enhanced CT, MR and PET).
MULTIFRAME_VOLUME_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET",
}

_ORIENTATION_TOLERANCE = 1e-4

# (functional group sequence, attribute) pairs read per frame
_POSITION = ("PlanePositionSequence", "ImagePositionPatient")
_ORIENTATION = ("PlaneOrientationSequence", "ImageOrientationPatient")
_SPACING = ("PixelMeasuresSequence", "PixelSpacing")
_SLOPE = ("PixelValueTransformationSequence", "RescaleSlope")
_INTERCEPT = ("PixelValueTransformationSequence", "RescaleIntercept")


def is_multiframe_volume(dataset: Any) -> bool:
    """Whether ``dataset`` (headers are enough) is an Enhanced / Legacy Converted Enhanced CT, MR or PET image."""
    return str(dataset.get("SOPClassUID", "")) in MULTIFRAME_VOLUME_SOP_CLASSES


def is_multiframe_file(dataset: Any) -> bool:
    """Whether ``dataset`` is a multi-frame image: an enhanced volume SOP class, or more than one frame."""
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except Exception:  # noqa: BLE001 - any broken NumberOfFrames (text, inf, bad bytes): read_multiframe names it
        frames = 2
    return is_multiframe_volume(dataset) or frames > 1


def _number_of_frames(dataset: Any) -> int:
    try:
        return int(dataset.get("NumberOfFrames", 1) or 1)
    except Exception:  # noqa: BLE001 - pydicom raises many types on a damaged value (text, inf, wrong length)
        raise InputError(
            f"NumberOfFrames {dataset.get('NumberOfFrames')!r} is not a whole number; the file's header is broken. "
            "Re-export the image from the scanner or PACS."
        ) from None


class _FrameGroups:
    """Per-frame lookup of functional-group attributes: per-frame item, then shared item, then top level."""

    def __init__(self, dataset: Any, frames: int) -> None:
        self.dataset = dataset
        shared = dataset.get("SharedFunctionalGroupsSequence") or []
        self.shared = shared[0] if len(shared) else None
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and len(per_frame) != frames:
            raise GeometryError(
                f"The file declares {frames} frames but its PerFrameFunctionalGroupsSequence has {len(per_frame)} "
                "item(s), so the frames cannot be placed in space. Re-export the image from the scanner or PACS."
            )
        self.per_frame = per_frame

    @staticmethod
    def _from_item(item: Any, sequence: str, keyword: str) -> Any:
        if item is None:
            return None
        macro = item.get(sequence)
        if not macro:
            return None
        value = macro[0].get(keyword)
        return None if value is None or value == "" else value

    def get(self, frame: int, sequence: str, keyword: str) -> Any:
        """The value of ``keyword`` for ``frame`` (0-based), or None when the file has it nowhere."""
        if self.per_frame is not None:
            value = self._from_item(self.per_frame[frame], sequence, keyword)
            if value is not None:
                return value
        value = self._from_item(self.shared, sequence, keyword)
        if value is not None:
            return value
        value = self.dataset.get(keyword)
        return None if value is None or value == "" else value

    def frame_content(self, frame: int, keyword: str) -> Any:
        """A Frame Content attribute (stack, temporal position, dimension index values) of ``frame``."""
        return self.get(frame, "FrameContentSequence", keyword)


class FrameGeometry:
    """Position (LPS mm), orientation and pixel spacing of every frame of a multi-frame image.

    Attributes:
        positions: (N, 3) ImagePositionPatient of frame ``n + 1``.
        orientation: the 6 direction cosines shared by every frame.
        pixel_spacing: (row spacing, column spacing) in mm, shared by every frame.
    """

    def __init__(self, positions: np.ndarray, orientation: np.ndarray, pixel_spacing: np.ndarray) -> None:
        self.positions = positions
        self.orientation = orientation
        self.pixel_spacing = pixel_spacing

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (row direction × column direction)."""
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        return normal / np.linalg.norm(normal)


def _floats(value: Any, count: int, what: str) -> np.ndarray:
    try:
        items = value if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str) else [value]
        numbers = np.array([float(v) for v in items])
    except (TypeError, ValueError):
        numbers = np.array([])
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise GeometryError(
            f"{what} is {value!r}, not {count} numbers: the frames cannot be placed in space. "
            "Re-export the image from the scanner or PACS with its geometry."
        )
    return numbers


def frame_geometry(dataset: Any) -> FrameGeometry:
    """Read and check the geometry of every frame of a multi-frame image (headers are enough).

    Raises:
        GeometryError: a frame has no position, orientation or pixel spacing (named), or the frames differ in
            orientation or pixel spacing.
    """
    frames = _number_of_frames(dataset)
    if frames > 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        raise GeometryError(
            f"This multi-frame image has {frames} frames but no per-frame functional groups "
            "(PerFrameFunctionalGroupsSequence), so its frames have no position of their own and cannot be placed "
            "in space. Export it as an Enhanced CT/MR with its plane positions, or as a single-frame series."
        )
    groups = _FrameGroups(dataset, frames)
    positions: list[np.ndarray] = []
    orientations: list[np.ndarray] = []
    spacings: list[np.ndarray] = []
    for frame in range(frames):
        for (sequence, keyword), store, count in (
            (_POSITION, positions, 3),
            (_ORIENTATION, orientations, 6),
            (_SPACING, spacings, 2),
        ):
            value = groups.get(frame, sequence, keyword)
            if value is None:
                raise GeometryError(
                    f"Frame {frame + 1} of this multi-frame image has no {keyword} (neither in the per-frame nor "
                    f"in the shared functional groups' {sequence}, nor at the top level), so its frames cannot "
                    "be placed in space. Export the image with its geometry (plane position, plane orientation "
                    "and pixel measures functional groups)."
                )
            store.append(_floats(value, count, f"{keyword} of frame {frame + 1}"))
    orientation = orientations[0]
    for frame, other in enumerate(orientations):
        if not np.allclose(other, orientation, atol=_ORIENTATION_TOLERANCE):
            raise GeometryError(
                f"The frames of this multi-frame image have different orientations (frame 1 {orientation.round(4)}, "
                f"frame {frame + 1} {other.round(4)}): it is not one volume (e.g. a localizer with several planes). "
                "Export one orientation as its own series."
            )
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(float(row @ col)) > 1e-3:
        raise GeometryError(
            f"ImageOrientationPatient {orientation.round(4).tolist()} is not two perpendicular unit vectors; the "
            "file's geometry is broken. Re-export the image from the scanner or PACS."
        )
    spacing = spacings[0]
    if np.any(spacing <= 0):
        raise GeometryError(f"PixelSpacing {spacing.tolist()} is not positive; fix the pixel measures in the file.")
    for frame, other in enumerate(spacings):
        if not np.allclose(other, spacing, rtol=SPACING_TOLERANCE, atol=1e-6):
            raise GeometryError(
                f"The frames of this multi-frame image have different pixel spacings (frame 1 {spacing.tolist()} "
                f"mm, frame {frame + 1} {other.tolist()} mm): it is not one volume. Resample it to one grid first."
            )
    return FrameGeometry(np.array(positions), orientation, spacing)


def _dimension_names(dataset: Any) -> list[str]:
    """Names of the dimension indices (DimensionIndexSequence), in the order of DimensionIndexValues.

    The position dimension itself is named ``""``: frames that share a position cannot differ in it.
    """
    from pydicom.datadict import keyword_for_tag

    names = []
    for item in dataset.get("DimensionIndexSequence") or []:
        pointer = item.get("DimensionIndexPointer")
        keyword = keyword_for_tag(pointer) if pointer is not None else ""
        label = str(item.get("DimensionDescriptionLabel", "") or "")
        names.append("" if keyword == "ImagePositionPatient" else (keyword or label or "unnamed dimension"))
    return names


def _check_one_stack_and_time(groups: _FrameGroups, frames: int) -> None:
    """GeometryError when the frames belong to several stacks or temporal positions (not one volume)."""
    for keyword, what, hint in (
        ("StackID", "stacks", "Export each stack as its own series (or pick one in the viewer) and give that."),
        (
            "TemporalPositionIndex",
            "temporal positions",
            "It is a dynamic (4D) acquisition: export the time point to analyse as its own series and give that.",
        ),
    ):
        values = {str(groups.frame_content(f, keyword)) for f in range(frames)} - {"None"}
        if len(values) > 1:
            shown = ", ".join(sorted(values, key=lambda v: (len(v), v))[:6])
            raise GeometryError(
                f"This multi-frame image holds {len(values)} {what} ({keyword} {shown}); MedAI reads one volume. "
                + hint
            )


def _duplicate_message(dataset: Any, groups: _FrameGroups, frames: Sequence[int]) -> str:
    """What differs between frames that share one position: the dimension indices that tell them apart."""
    names = _dimension_names(dataset)
    values = []
    for frame in frames:
        raw = groups.frame_content(frame, "DimensionIndexValues")
        values.append(tuple(int(v) for v in (raw if isinstance(raw, Sequence) else [raw])) if raw is not None else ())
    differing = sorted(
        {
            names[i] if i < len(names) else f"dimension {i + 1}"
            for i in range(min((len(v) for v in values), default=0))
            if len({v[i] for v in values}) > 1
        }
        - {""}
    )
    shown = ", ".join(str(f + 1) for f in frames[:6])
    what = f"; they differ in {', '.join(differing)}" if differing else ""
    return (
        f"Frames {shown} of this multi-frame image share the same position{what}. It holds several volumes "
        "(e.g. echoes, phases or repeated acquisitions); export the one to analyse as its own series."
    )


def _rescale(groups: _FrameGroups, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Rescale slope and intercept of every frame (1 and 0 where the file has none)."""
    slopes, intercepts = np.ones(frames), np.zeros(frames)
    for frame in range(frames):
        for (sequence, keyword), store in ((_SLOPE, slopes), (_INTERCEPT, intercepts)):
            value = groups.get(frame, sequence, keyword)
            if value is not None:
                store[frame] = _floats(value, 1, f"{keyword} of frame {frame + 1}")[0]
    if np.any(slopes == 0):
        raise InputError("A frame has RescaleSlope 0, which would erase every voxel; fix the file's rescale values.")
    return slopes, intercepts


def _check_pixel_header(dataset: Any, path: Path) -> None:
    """Grey-scale pixels of a size a CT or MR has, described by intact attributes (before any decoding)."""

    def integer(keyword: str) -> int:
        try:
            return int(dataset.get(keyword))
        except (TypeError, ValueError):
            raise InputError(
                f"{path.name} has no valid {keyword} ({dataset.get(keyword)!r}), so its pixel data cannot be "
                "decoded. The file is damaged or not an image: export it again."
            ) from None

    samples = str(dataset.get("SamplesPerPixel", "1")).strip()
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples != "1" or not photometric.startswith("MONOCHROME"):
        raise InputError(
            f"{path.name} is a colour image ({photometric}, {samples} sample(s) per pixel); MedAI segments "
            "grey-scale CT and MR. Give the original grey-scale image, not a screenshot or rendering."
        )
    rows, columns = integer("Rows"), integer("Columns")
    if not (1 <= rows <= MAX_MATRIX and 1 <= columns <= MAX_MATRIX):
        raise InputError(
            f"{path.name} declares frames of {rows}×{columns} pixels (Rows×Columns); CT and MR images have 1 to "
            f"{MAX_MATRIX} pixels a side, so the header is damaged. Export the image again."
        )
    if integer("BitsAllocated") not in (8, 16, 32, 64):
        raise InputError(
            f"{path.name} has BitsAllocated {dataset.get('BitsAllocated')}; grey-scale images use 8, 16 or 32 bits. "
            "The header is damaged: export the image again."
        )


def read_multiframe(dataset: Any, path: str | Path, warn: Callable[[str], None] | None = None) -> Image:
    """Read one multi-frame (Enhanced / Legacy Converted Enhanced) CT or MR object into an :class:`Image`.

    Args:
        dataset: the whole pydicom dataset (pixel data included).
        path: the file it was read from (every slice refers to it, with its frame number in ``source_frames``).
        warn: receives a warning when the pixels were lossy compressed (also kept in ``metadata``).

    Returns:
        The volume with slices sorted along the slice normal and Modality LUT (rescale slope/intercept, per
        frame) applied: int16 when every value is a whole number in range, else float32.

    Raises:
        InputError: a single frame (2D image), a colour image, undecodable pixel data, broken rescale values.
        GeometryError: missing or inconsistent frame geometry, several stacks / time points / volumes in one
            file, missing frames, uneven spacing, tilted stacks.
    """
    path = Path(path)
    frames = _number_of_frames(dataset)
    if frames < 2:
        raise InputError(
            f"{path.name} is a multi-frame object with a single frame: that is a 2D image. MedAI needs a 3D volume "
            "(a series of slices, or a multi-frame image with one frame per slice)."
        )
    _check_pixel_header(dataset, path)
    geometry = frame_geometry(dataset)
    groups = _FrameGroups(dataset, frames)
    _check_one_stack_and_time(groups, frames)
    normal = geometry.normal
    along = geometry.positions @ normal
    sorted_frames = np.argsort(along, kind="stable")
    close = np.flatnonzero(np.diff(along[sorted_frames]) < DUPLICATE_MM)
    if close.size:
        first = close[0]
        same = [int(f) for f in sorted_frames if abs(along[f] - along[sorted_frames[first]]) < DUPLICATE_MM]
        raise GeometryError(_duplicate_message(dataset, groups, same))
    order, step_vector = stack_order(geometry.positions, normal, unit="frame", whole="multi-frame image")

    pixels = decode_frames(dataset, path, frames)
    slopes, intercepts = _rescale(groups, frames)
    integral = bool(np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts)))
    out_dtype: type = np.float32
    if integral and np.issubdtype(pixels.dtype, np.integer):
        lows = pixels.reshape(frames, -1).min(axis=1).astype(float)
        highs = pixels.reshape(frames, -1).max(axis=1).astype(float)
        ends = np.stack([lows * slopes + intercepts, highs * slopes + intercepts])
        if ends.min() >= -32768 and ends.max() <= 32767:
            out_dtype = np.int16
    array = np.empty((frames, *pixels.shape[1:]), dtype=out_dtype)
    for k, frame in enumerate(order):
        if out_dtype == np.int16:
            array[k] = pixels[frame].astype(np.int32) * int(slopes[frame]) + int(intercepts[frame])
        else:
            array[k] = pixels[frame].astype(np.float64) * slopes[frame] + intercepts[frame]

    metadata = series_metadata(dataset)
    lossy = lossy_compression(dataset)
    record_lossy(metadata, [lossy] if lossy else [], warn)
    return Image(
        array=array,
        ijk_to_ras=stack_affine(
            geometry.orientation, geometry.pixel_spacing, step_vector, geometry.positions[order[0]]
        ),
        modality=str(dataset.get("Modality", "")),
        source_files=(path,) * frames,
        metadata=metadata,
        source_frames=tuple(int(f) + 1 for f in order),
    )


def read_multiframe_files(
    datasets: Sequence[Any], files: Sequence[str | Path], warn: Callable[[str], None] | None = None
) -> Image:
    """Read the files of one series when at least one of them is a multi-frame image.

    A series stored as one multi-frame object is read with :func:`read_multiframe`; several multi-frame objects
    in one series (or multi-frame and single-frame files mixed) are refused with a message saying what to give.

    Raises:
        InputError: several files, or any error of :func:`read_multiframe`.
    """
    if len(datasets) != len(files) or not datasets:
        raise InputError("Give one file per dataset: the multi-frame image's file was not named.")
    if len(datasets) > 1:
        multi = [Path(f).name for f, ds in zip(files, datasets, strict=True) if is_multiframe_file(ds)]
        single = len(datasets) - len(multi)
        mixed = f" and {single} single-frame file(s)" if single else ""
        raise InputError(
            f"This series is stored in {len(multi)} multi-frame file(s){mixed} (e.g. {multi[0]}); MedAI reads a "
            "series stored as one multi-frame object, or as single-frame files. Give a folder holding only the "
            "one multi-frame file of the volume to analyse, or convert the series to single-frame files (e.g. "
            "export it from Slicer's DICOM module)."
        )
    return read_multiframe(datasets[0], files[0], warn)
