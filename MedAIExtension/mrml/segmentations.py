"""Label maps <-> segmentation nodes, with segment names, colours, terminology and label values.

Every label of the list becomes one segment, *also when the label map holds no voxel of it*, so the user sees
every structure the model can produce (an empty segment tells "not found", a missing one would look like a bug).
All segments share one binary labelmap layer on exactly the label map's grid; each segment records its voxel
value both as its Slicer label value and as the segment tag ``MedAI.LabelValue``, which
:func:`segmentation_node_to_labelmap` uses to write the same values back.

The terminology of each label is stored in the segment tag ``TerminologyEntry`` in the string format of Slicer's
``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry``::

    context~categoryScheme^categoryValue^categoryMeaning~typeScheme^typeValue^typeMeaning~typeModifier
           ~regionContext~regionScheme^regionValue^regionMeaning~regionModifier
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm, SegmentLabel, label_counts
from MedAIExtension.mrml._vtk import added_to_scene, array_from_image_data, oriented_image

__all__ = [
    "LABEL_VALUE_TAG",
    "REGION_CONTEXT",
    "TERMINOLOGY_CONTEXT",
    "labelmap_to_segmentation_node",
    "segment_label_values",
    "segmentation_node_to_labelmap",
    "terminology_entry",
]

#: Segment tag holding the label map value of a segment.
LABEL_VALUE_TAG = "MedAI.LabelValue"
#: Terminology context written in ``TerminologyEntry`` (Slicer's default segmentation terminology).
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
#: Anatomic region context written in ``TerminologyEntry`` (no region is coded).
REGION_CONTEXT = "Anatomic codes - DICOM master list"

_BINARY_LABELMAP = "Binary labelmap"
# Characters that would break the "~"/"^" terminology string, the "|" tag list or the NRRD header line.
_FORBIDDEN_IN_CODE = re.compile(r"[~^|\x00-\x1f\x7f]")
_FORBIDDEN_IN_NAME = re.compile(r"[\x00-\x1f\x7f]")


def _coded(term: CodedTerm | None) -> str:
    return "^^" if term is None else f"{term.scheme}^{term.value}^{term.meaning}"


def terminology_entry(label: SegmentLabel) -> str:
    """The Slicer ``TerminologyEntry`` string of a label (category and type; no modifier, no anatomic region).

    Example::

        Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure
        ~SCT^39607008^Lung~^^~Anatomic codes - DICOM master list~^^~^^
    """
    parts = [TERMINOLOGY_CONTEXT, _coded(label.category), _coded(label.type_or_default), "^^", REGION_CONTEXT]
    return "~".join([*parts, "^^", "^^"])


def _check_labels(labels: Sequence[SegmentLabel]) -> tuple[SegmentLabel, ...]:
    labels = tuple(labels)
    seen: dict[int, str] = {}
    for label in labels:
        if not isinstance(label, SegmentLabel):
            raise InputError(f"Expected SegmentLabel objects, got {type(label).__name__}; build the labels first.")
        if label.value in seen:
            raise InputError(
                f"Label value {label.value} is used by both {seen[label.value]!r} and {label.name!r}; "
                "give every label its own value."
            )
        seen[label.value] = label.name
        if _FORBIDDEN_IN_NAME.search(label.name):
            raise InputError(f"The label name {label.name!r} contains a control character; remove it.")
        for term in (label.category, label.type):
            if term is None:
                continue
            for text in (term.value, term.scheme, term.meaning):
                if _FORBIDDEN_IN_CODE.search(text):
                    raise InputError(
                        f"The code {text!r} of label {label.name!r} contains '~', '^', '|' or a control character, "
                        "which Slicer's terminology string cannot hold; fix the code."
                    )
    return labels


def _label_array(labelmap: Image, labels: tuple[SegmentLabel, ...]) -> np.ndarray:
    """The label map voxels as unsigned integers, after checking every non-zero value has a label."""
    array = labelmap.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"The label map has voxel type {array.dtype}; label maps hold integer label values. "
            "Round and cast it to an integer type first."
        )
    present = label_counts(array)
    unknown = sorted(set(present) - {0} - {label.value for label in labels})
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(
            f"The label map holds value(s) {shown} that no label describes; add a SegmentLabel for each "
            "or set those voxels to 0."
        )
    largest = max([0, *(label.value for label in labels)])
    return array.astype(np.uint8 if largest <= np.iinfo(np.uint8).max else np.uint16)


def labelmap_to_segmentation_node(
    scene: Any,
    labelmap: Image,
    labels: Sequence[SegmentLabel],
    name: str,
    reference_volume_node: Any | None = None,
) -> Any:
    """Create a segmentation node with one segment per label from a label map.

    The node is built and filled outside the scene and only then added, so any error before that leaves the
    scene untouched; an error while adding the display node removes the node again.

    Args:
        scene: the ``vtkMRMLScene`` (Slicer's application scene inside Slicer, :func:`create_scene` outside).
        labelmap: integer label map (0 = background) on the grid the segments should have.
        labels: one :class:`~MedAIExtension.labels.SegmentLabel` per label value; every non-zero voxel value of
            ``labelmap`` must have one. Labels with no voxel still get an (empty) segment.
        name: node name shown in Slicer.
        reference_volume_node: the volume the label map was computed from; when given it becomes the
            segmentation's reference geometry (``SetReferenceImageGeometryParameterFromVolumeNode``), otherwise the
            label map's own grid is the reference geometry.

    Returns:
        The ``vtkMRMLSegmentationNode``, in ``scene``, with a display node. Segment IDs are ``Segment_<value>``;
        the source representation is the binary labelmap.

    Raises:
        InputError: invalid labels (duplicate values, characters Slicer cannot store), label map values without a
            label, a non-integer label map, or a reference volume from another scene.
    """
    import slicer

    labels = _check_labels(labels)
    array = _label_array(labelmap, labels)
    if reference_volume_node is not None:
        if not reference_volume_node.IsA("vtkMRMLVolumeNode"):
            raise InputError(
                f"The reference must be a volume node, got {reference_volume_node.GetClassName()}; "
                "pass the image's volume node or None."
            )
        if reference_volume_node.GetScene() is not scene:
            raise InputError(
                f"The reference volume {reference_volume_node.GetName()!r} is not in this scene; "
                "add it to the scene first (image_to_volume_node)."
            )

    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(name)
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(_BINARY_LABELMAP)
    shared = oriented_image(array, labelmap.ijk_to_ras, labelmap.shape)
    segmentation.SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(shared),
    )
    for label in labels:
        segment = slicer.vtkSegment()
        segment.SetName(label.name)
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*label.color)
        segment.SetColorAutoGenerated(False)
        segment.SetLabelValue(label.value)
        segment.SetTag(LABEL_VALUE_TAG, str(label.value))
        segment.SetTerminology(terminology_entry(label))
        segment.AddRepresentation(_BINARY_LABELMAP, shared)
        if not segmentation.AddSegment(segment, f"Segment_{label.value}"):
            raise InputError(f"Slicer refused the segment {label.name!r} (value {label.value}).")

    with added_to_scene(scene, node) as added:
        added.CreateDefaultDisplayNodes()
        if reference_volume_node is not None:
            added.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    return added


def segment_label_values(segmentation_node: Any) -> dict[str, int]:
    """Map each segment ID to the label value it gets in a label map, in segment order.

    A segment's value is its ``MedAI.LabelValue`` tag; segments without a (valid) tag, e.g. drawn by the user,
    get the smallest positive values not used by any tag, in segment order — so a segmentation with no tags at
    all maps to 1..N.
    """
    from vtkmodules.vtkCommonCore import reference

    segmentation = segmentation_node.GetSegmentation()
    tagged: dict[str, int | None] = {}
    for segment_id in segmentation.GetSegmentIDs():
        text = reference("")
        value = None
        if segmentation.GetSegment(segment_id).GetTag(LABEL_VALUE_TAG, text):
            try:
                value = int(str(text))
            except ValueError:
                value = None
        tagged[segment_id] = value if value is not None and value > 0 else None
    used = {v for v in tagged.values() if v is not None}
    values: dict[str, int] = {}
    next_free = 1
    for segment_id, value in tagged.items():
        if value is None:
            while next_free in used:
                next_free += 1
            value = next_free
            used.add(value)
        values[segment_id] = value
    return values


def segmentation_node_to_labelmap(segmentation_node: Any, reference: Image) -> Image:
    """Export all segments of a segmentation node into a label map on the grid of ``reference``.

    Each segment is written with the value from :func:`segment_label_values`; segments on another grid are
    resampled (nearest neighbour) onto the reference grid by Slicer. Where segments overlap, the later segment
    wins. The node must have (or be able to create) a binary labelmap representation.

    Args:
        segmentation_node: a ``vtkMRMLSegmentationNode``.
        reference: the image whose grid (shape and affine) the label map gets; its metadata is kept.

    Returns:
        ``reference.with_array(labels)`` with ``uint8`` labels (``uint16`` when a value exceeds 255); all zeros
        when the segmentation has no segment.

    Raises:
        InputError: the node is not a segmentation or its segments cannot be converted to a binary labelmap.
    """
    import slicer
    from vtkmodules.vtkCommonCore import vtkIntArray, vtkStringArray

    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        kind = "None" if segmentation_node is None else segmentation_node.GetClassName()
        raise InputError(f"Expected a segmentation node, got {kind}; select a segmentation.")
    values = segment_label_values(segmentation_node)
    dtype = np.uint8 if max(values.values(), default=0) <= np.iinfo(np.uint8).max else np.uint16
    if not values:
        return reference.with_array(np.zeros(reference.shape, dtype=dtype))

    segmentation = segmentation_node.GetSegmentation()
    if not segmentation.ContainsRepresentation(_BINARY_LABELMAP) and not segmentation.CreateRepresentation(
        _BINARY_LABELMAP
    ):
        raise InputError(
            f"The segmentation {segmentation_node.GetName()!r} has no binary labelmap and cannot make one; "
            "set a reference geometry in Slicer's Segmentations module and convert it to a binary labelmap."
        )
    segment_ids = vtkStringArray()
    label_values = vtkIntArray()
    for segment_id, value in values.items():
        segment_ids.InsertNextValue(segment_id)
        label_values.InsertNextValue(value)
    geometry = oriented_image(None, reference.ijk_to_ras, reference.shape)
    merged = slicer.vtkOrientedImageData()
    if not segmentation_node.GenerateMergedLabelmapForAllSegments(
        merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, geometry, segment_ids, label_values
    ):
        raise InputError(f"Slicer could not export the segmentation {segmentation_node.GetName()!r} to a label map.")
    array = array_from_image_data(merged)
    if array.shape != reference.shape or tuple(merged.GetExtent()[0::2]) != (0, 0, 0):
        raise GeometryError(
            f"The exported label map has extent {merged.GetExtent()}, not the reference grid {reference.size_ijk}; "
            "the reference image geometry is inconsistent."
        )
    return reference.with_array(array.astype(dtype))
