"""Scalar volume nodes <-> :class:`~MedAIExtension.io.image.Image`.

A volume node keeps its voxels in a ``vtkImageData`` (origin 0, spacing 1, extent from 0) and its geometry as
origin, spacing and IJK-to-RAS directions; ``SetIJKToRASMatrix`` splits the image's affine into those three, and
``GetIJKToRASMatrix`` joins them again, so the affine round-trips to floating-point precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.mrml._vtk import (
    added_to_scene,
    array_from_image_data,
    fill_image_data,
    matrix_from_numpy,
    numpy_from_matrix,
)

__all__ = ["image_to_volume_node", "volume_node_to_image"]

#: Node attribute recording a voxel type VTK cannot store (``bool``, ``float16``), restored on the way back.
VOXEL_TYPE_ATTRIBUTE = "MedAI.VoxelType"
#: Node attribute recording the image modality (``CT``, ``MR``).
MODALITY_ATTRIBUTE = "MedAI.Modality"

_STORED_AS: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(bool): np.dtype(np.uint8),
    np.dtype(np.float16): np.dtype(np.float32),
}


def _vtk_compatible(array: np.ndarray) -> tuple[np.ndarray, str]:
    """The array in a type VTK stores, and the original type name when it had to change ("" otherwise)."""
    if np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"Voxel type {array.dtype} is complex; Slicer volumes hold real scalars. Use the magnitude.")
    stored = _STORED_AS.get(array.dtype)
    if stored is None:
        return array, ""
    return array.astype(stored), array.dtype.name


def image_to_volume_node(scene: Any, image: Image, name: str, node: Any | None = None) -> Any:
    """Copy an image into a scalar volume node of ``scene``.

    Args:
        scene: the ``vtkMRMLScene`` (Slicer's application scene inside Slicer, :func:`create_scene` outside).
        image: voxels ``[k, j, i]`` and their IJK-to-RAS affine.
        name: node name shown in Slicer.
        node: an existing ``vtkMRMLScalarVolumeNode`` (or subclass, e.g. a label map volume) to update in place;
            a new node is created when ``None``. A node not yet in a scene is added to ``scene``.

    Returns:
        The volume node, in ``scene``, with a display node. Voxels are copied (changing ``image.array`` later does
        not change the node). ``bool`` and ``float16`` voxels are stored as ``uint8``/``float32`` and the original
        type is recorded in the node attribute ``MedAI.VoxelType`` so :func:`volume_node_to_image` restores it.

    Raises:
        InputError: the node is not a scalar volume node or belongs to another scene, or the voxels are complex.
    """
    import slicer
    from vtkmodules.vtkCommonDataModel import vtkImageData

    if node is not None:
        if not node.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"Cannot store an image in a {node.GetClassName()}; pass a scalar volume node or None.")
        if node.GetScene() is not None and node.GetScene() is not scene:
            raise InputError(f"The volume node {node.GetName()!r} belongs to another scene; pass a node of this scene.")
    array, original_type = _vtk_compatible(image.array)

    target = node if node is not None else slicer.vtkMRMLScalarVolumeNode()
    image_data = vtkImageData()
    fill_image_data(image_data, array)

    was_modifying = target.StartModify()
    try:
        target.SetName(name)
        target.SetIJKToRASMatrix(matrix_from_numpy(image.ijk_to_ras))
        target.SetAndObserveImageData(image_data)
        target.SetAttribute(VOXEL_TYPE_ATTRIBUTE, original_type or None)
        target.SetAttribute(MODALITY_ATTRIBUTE, image.modality or None)
    finally:
        target.EndModify(was_modifying)

    if target.GetScene() is None:
        with added_to_scene(scene, target) as added:
            added.CreateDefaultDisplayNodes()
        return added
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    return target


def volume_node_to_image(node: Any) -> Image:
    """Copy a scalar volume node into an :class:`Image` (voxels ``[k, j, i]``, affine ``ijk_to_ras``).

    The exact inverse of :func:`image_to_volume_node`: same voxel type, same voxels, same affine. An image data
    extent that does not start at 0 is folded into the affine, so index ``[0, 0, 0]`` of the array is always the
    first stored voxel. Parent transforms are not applied (the affine is the node's own IJK-to-RAS).

    Args:
        node: a ``vtkMRMLScalarVolumeNode`` (or subclass) with image data.

    Returns:
        A new image; the node's ``MedAI.Modality`` attribute, if any, becomes ``Image.modality``.

    Raises:
        InputError: the node is not a scalar volume, has no voxels, or holds several components per voxel.
    """
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        kind = "None" if node is None else node.GetClassName()
        raise InputError(f"Expected a scalar volume node, got {kind}; select a scalar volume.")
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise InputError(f"The volume {node.GetName()!r} has no voxels; load or compute the volume first.")
    try:
        array = array_from_image_data(image_data)
    except ValueError as exc:
        raise InputError(
            f"The volume {node.GetName()!r} cannot be used: {exc}. Use a scalar (grey-level) volume."
        ) from None
    original_type = node.GetAttribute(VOXEL_TYPE_ATTRIBUTE)
    if original_type:
        array = array.astype(np.dtype(original_type))

    ijk_to_ras = numpy_from_matrix(_ijk_to_ras_matrix(node))
    extent_start = np.array(image_data.GetExtent()[0::2], dtype=float)
    if np.any(extent_start != 0):
        ijk_to_ras[:3, 3] += ijk_to_ras[:3, :3] @ extent_start
    return Image(array=array, ijk_to_ras=ijk_to_ras, modality=node.GetAttribute(MODALITY_ATTRIBUTE) or "")


def _ijk_to_ras_matrix(node: Any) -> Any:
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix
