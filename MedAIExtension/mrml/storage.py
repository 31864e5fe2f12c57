"""Writing segmentation nodes to ``.seg.nrrd`` files (Slicer's own segmentation file format)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import atomic_path
from MedAIExtension.errors import InputError, OutputError

__all__ = ["write_seg_nrrd"]

_BINARY_LABELMAP = "Binary labelmap"


def write_seg_nrrd(segmentation_node: Any, path: str | os.PathLike[str]) -> Path:
    """Write a segmentation node to a ``.seg.nrrd`` file, atomically.

    The file is written with ``vtkMRMLSegmentationStorageNode`` (not added to the scene, so the node's own
    storage settings are untouched) under a temporary name beside ``path`` and then renamed, so an error never
    leaves a partial file. The whole labelmap grid is written (no cropping to the segments' extent), so the
    file lies on the same grid as the reference image. Segment names, colours, label values and tags
    (terminology, ``MedAI.LabelValue``) are stored in the header, readable by Slicer and ``slicerio``.

    Args:
        segmentation_node: a ``vtkMRMLSegmentationNode`` whose source representation is a binary labelmap.
        path: the target file; its name must end with ``.seg.nrrd``.

    Returns:
        The written path.

    Raises:
        InputError: not a segmentation node, or its source representation is not a binary labelmap.
        OutputError: a wrong file name, a missing folder, or a failed write.
    """
    import slicer

    target = Path(path)
    if not target.name.lower().endswith(".seg.nrrd"):
        raise OutputError(f"{target} is not a .seg.nrrd file name; name the output <name>.seg.nrrd.")
    if not target.parent.is_dir():
        raise OutputError(f"The folder {target.parent} does not exist; create it or choose another output folder.")
    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        kind = "None" if segmentation_node is None else segmentation_node.GetClassName()
        raise InputError(f"Expected a segmentation node, got {kind}; select a segmentation.")
    source = segmentation_node.GetSegmentation().GetSourceRepresentationName()
    if source != _BINARY_LABELMAP:
        raise InputError(
            f"The segmentation {segmentation_node.GetName()!r} is stored as {source!r}; a .seg.nrrd file holds a "
            "binary labelmap. Set its source representation to binary labelmap in the Segmentations module."
        )

    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetCropToMinimumExtent(False)
    storage.SetUseCompression(True)
    try:
        with atomic_path(target) as tmp:
            storage.SetFileName(str(tmp))
            if not storage.WriteData(segmentation_node):
                raise OutputError(
                    f"Slicer could not write the segmentation to {target}; check the free disk space and permissions."
                )
    except OSError as exc:
        raise OutputError(f"Cannot write {target} ({exc.strerror or exc}); choose a folder you can write to.") from None
    return target
