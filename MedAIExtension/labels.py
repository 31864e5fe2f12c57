"""Segment label descriptions shared by the catalogue, the MRML bridge and the DICOM writers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CodedTerm", "SegmentLabel", "bincount_slabs", "label_boxes", "label_counts", "label_statistics"]


@dataclass(frozen=True)
class CodedTerm:
    """A coded concept, e.g. ``CodedTerm("39607008", "SCT", "Lung")``."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        if not (self.value and self.scheme and self.meaning):
            raise ValueError(f"a coded term needs value, scheme and meaning; got {self!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodedTerm:
        """Build from ``{"value": ..., "scheme": ..., "meaning": ...}``."""
        return cls(str(data["value"]), str(data["scheme"]), str(data["meaning"]))

    def to_dict(self) -> dict[str, str]:
        """The JSON form used in the catalogue."""
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}


_ANATOMY = CodedTerm("123037004", "SCT", "Anatomical Structure")


@dataclass(frozen=True)
class SegmentLabel:
    """One output label of a model: its voxel value, name, colour and terminology.

    Attributes:
        value: voxel value in the label map (1..255; 0 is background).
        name: human-readable segment name.
        color: RGB in 0..1.
        category: segmented property category (SNOMED CT), e.g. Anatomical Structure.
        type: segmented property type (SNOMED CT), e.g. Lung.
    """

    value: int
    name: str
    color: tuple[float, float, float]
    category: CodedTerm = _ANATOMY
    type: CodedTerm | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 1 <= self.value <= 255:
            raise ValueError(f"label value must be an int in 1..255 (0 is background), got {self.value!r}")
        if not self.name:
            raise ValueError("a label needs a name")
        color = tuple(float(c) for c in self.color)
        if len(color) != 3 or any(not 0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"label colour must be three numbers in 0..1, got {self.color!r}")
        object.__setattr__(self, "color", color)

    @property
    def type_or_default(self) -> CodedTerm:
        """The property type, or a generic 'Tissue' code when none was given."""
        return self.type or CodedTerm("85756007", "SCT", "Tissue")

    @property
    def color_rgb255(self) -> tuple[int, int, int]:
        """Colour as 0..255 integers."""
        red, green, blue = self.color
        return int(round(red * 255)), int(round(green * 255)), int(round(blue * 255))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentLabel:
        """Build from the catalogue's JSON form."""
        return cls(
            value=int(data["value"]),
            name=str(data["name"]),
            color=tuple(data["color"]),
            category=CodedTerm.from_dict(data["category"]) if "category" in data else _ANATOMY,
            type=CodedTerm.from_dict(data["type"]) if "type" in data else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The catalogue's JSON form."""
        out: dict[str, Any] = {
            "value": self.value,
            "name": self.name,
            "color": list(self.color),
            "category": self.category.to_dict(),
        }
        if self.type is not None:
            out["type"] = self.type.to_dict()
        return out


def bincount_slabs(array: Any, minlength: int = 0) -> Any:
    """``np.bincount(array.ravel(), minlength=minlength)`` for a non-negative integer array of any shape.

    Counted over slabs of about 4 M values: ``np.bincount`` first copies its input to 64-bit integers, and slab by
    slab that copy stays small instead of being 2-8 times the array.
    """
    import numpy as np

    array = np.asarray(array)
    counts = np.zeros(max(int(minlength), 1), dtype=np.int64)
    if array.size == 0:
        return counts[: max(int(minlength), 0)]
    slabs = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
    step = max(1, (1 << 22) // max(slabs.shape[1], 1))
    for start in range(0, slabs.shape[0], step):
        part = np.bincount(slabs[start : start + step].ravel())
        if part.size > counts.size:
            counts = np.concatenate([counts, np.zeros(part.size - counts.size, dtype=np.int64)])
        counts[: part.size] += part
    return counts


def label_counts(array: Any) -> dict[int, int]:
    """Voxel count of every value present in an integer (or boolean) label array, background 0 included.

    Small non-negative values (up to 65535, every label map) are counted with ``np.bincount`` over slabs of the
    array, which is several times faster than ``np.unique`` on a whole CT and keeps the temporary copy small.
    """
    import numpy as np

    array = np.asarray(array)
    if array.dtype == bool:
        array = array.view(np.uint8)
    if array.size and np.issubdtype(array.dtype, np.integer) and 0 <= array.min() and array.max() <= 65535:
        counts = bincount_slabs(array, int(array.max()) + 1)
        present = np.flatnonzero(counts)
        return {int(v): int(counts[v]) for v in present}
    values, counts = np.unique(array, return_counts=True)
    return {int(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}


def label_boxes(array: Any, values: Sequence[int]) -> dict[int, tuple[slice, ...] | None]:
    """The tight bounding box (one slice per axis) of each of ``values`` in an integer label array; None if absent.

    For a few values, each box comes from the value's mask projected on the first axis and then, inside that
    range, on the others: several times faster on a whole CT than ``scipy.ndimage.find_objects``, which is used
    for many values (one pass finds them all).
    """
    import numpy as np

    array = np.asarray(array)
    if array.dtype == bool:
        array = array.view(np.uint8)
    wanted = sorted({int(v) for v in values if int(v) > 0})
    if not wanted or array.size == 0:
        return dict.fromkeys(wanted)
    if len(wanted) > 4 or array.ndim < 2:
        from scipy import ndimage

        found = ndimage.find_objects(array, max_label=max(wanted))
        return {v: found[v - 1] for v in wanted}
    boxes: dict[int, tuple[slice, ...] | None] = {}
    other_axes = tuple(range(1, array.ndim))
    for value in wanted:
        mask = array == value
        first = np.flatnonzero(mask.any(axis=other_axes))
        if first.size == 0:
            boxes[value] = None
            continue
        inside = mask[first[0] : first[-1] + 1]
        box = [slice(int(first[0]), int(first[-1]) + 1)]
        for axis in other_axes:
            hits = np.flatnonzero(inside.any(axis=tuple(a for a in range(array.ndim) if a != axis)))
            box.append(slice(int(hits[0]), int(hits[-1]) + 1))
        boxes[value] = tuple(box)
    return boxes


def label_statistics(labelmap: Any, labels: Sequence[SegmentLabel]) -> list[dict[str, Any]]:
    """Voxel count and volume (mL) of each label in a label map :class:`~MedAIExtension.io.image.Image`.

    Returns one dict per label, in ``labels`` order (labels without voxels count 0): ``label``, ``name``,
    ``voxel_count`` and ``volume_ml`` (``voxel_count * voxel volume in mm³ / 1000``).
    """
    found = label_counts(labelmap.array)
    count_of = {label.value: found.get(label.value, 0) for label in labels}
    voxel_ml = labelmap.voxel_volume_mm3 / 1000.0
    return [
        {
            "label": label.value,
            "name": label.name,
            "voxel_count": count_of[label.value],
            "volume_ml": count_of[label.value] * voxel_ml,
        }
        for label in labels
    ]
