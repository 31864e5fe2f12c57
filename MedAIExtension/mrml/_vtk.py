"""numpy <-> VTK conversions shared by the MRML bridge (private)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "added_to_scene",
    "array_from_image_data",
    "fill_image_data",
    "matrix_from_numpy",
    "numpy_from_matrix",
    "oriented_image",
]


def matrix_from_numpy(affine: np.ndarray) -> Any:
    """A ``vtkMatrix4x4`` holding the 4x4 numpy ``affine``."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(affine[row, column]))
    return matrix


def numpy_from_matrix(matrix: Any) -> np.ndarray:
    """The 4x4 numpy array of a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)], dtype=float)


def fill_image_data(image_data: Any, array: np.ndarray) -> None:
    """Make ``image_data`` hold a deep copy of ``array`` (indexed ``[k, j, i]``) with extent starting at 0.

    The image data's own origin and spacing are reset to 0 and 1: MRML keeps the geometry in the node (volumes)
    or in the ``vtkOrientedImageData`` matrix (segments), never in ``vtkImageData``'s origin/spacing.
    """
    from vtkmodules.util import numpy_support

    k, j, i = array.shape
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=1)
    scalars.SetName("ImageScalars")
    image_data.SetOrigin(0.0, 0.0, 0.0)
    image_data.SetSpacing(1.0, 1.0, 1.0)
    image_data.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
    image_data.GetPointData().SetScalars(scalars)


def array_from_image_data(image_data: Any) -> np.ndarray:
    """A copy of the scalars of ``image_data`` as a numpy array indexed ``[k, j, i]``."""
    from vtkmodules.util import numpy_support

    scalars = image_data.GetPointData().GetScalars() if image_data is not None else None
    if scalars is None:
        raise ValueError("image data has no scalars")
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"image data has {scalars.GetNumberOfComponents()} components per voxel, expected 1")
    i, j, k = image_data.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(k, j, i).copy()


def oriented_image(array: np.ndarray | None, ijk_to_ras: np.ndarray, shape: tuple[int, int, int]) -> Any:
    """A ``vtkOrientedImageData`` on the grid ``(shape, ijk_to_ras)``, filled with ``array`` when given."""
    import slicer

    image = slicer.vtkOrientedImageData()
    if array is None:
        k, j, i = shape
        image.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
    else:
        fill_image_data(image, array)
    image.SetImageToWorldMatrix(matrix_from_numpy(ijk_to_ras))
    return image


@contextlib.contextmanager
def added_to_scene(scene: Any, node: Any) -> Iterator[Any]:
    """Add ``node`` to ``scene`` and yield it; on an exception remove it and the display nodes it created."""
    added = scene.AddNode(node)
    if added is None:
        raise RuntimeError(f"the MRML scene refused the node {node.GetClassName()}")
    try:
        yield added
    except BaseException:
        display_nodes = []
        if hasattr(added, "GetNumberOfDisplayNodes"):
            display_nodes = [added.GetNthDisplayNode(n) for n in range(added.GetNumberOfDisplayNodes())]
        for display_node in display_nodes:
            if display_node is not None and display_node.GetScene() is scene:
                scene.RemoveNode(display_node)
        if added.GetScene() is scene:
            scene.RemoveNode(added)
        raise
