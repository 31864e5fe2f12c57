"""Registration results as Slicer transform nodes: follow-up scan -> baseline scan.

Slicer's convention
-------------------
A node placed under a transform node (``SetAndObserveTransformNodeID``) keeps its own coordinates; Slicer shows it
at ``TransformToParent(own coordinates)``. For tracking, the follow-up volume (and its segmentation and nodule
points) is placed under the registration transform so it is shown in baseline space, hence

* the **to-parent** transform maps *follow-up RAS -> baseline RAS* (what :func:`linear_transform_node` takes);
* the **from-parent** transform maps *baseline RAS -> follow-up RAS*. This is ITK's "resampling" direction: a
  SimpleITK registration with ``fixed = baseline`` and ``moving = follow-up`` returns a transform that maps fixed
  (baseline) LPS points to moving (follow-up) LPS points, and Slicer stores a transform read from an ITK file as
  the from-parent transform (with LPS <-> RAS converted).

:func:`ras_matrix_from_sitk` turns such a linear SimpleITK transform into the follow-up-to-baseline RAS matrix;
:func:`sitk_transform_node` loads any SimpleITK transform (B-spline, displacement field, composite included) into a
node through Slicer's own ITK transform reader, so the convention is Slicer's by construction.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import LPS_TO_RAS
from MedAIExtension.mrml._vtk import added_to_scene, matrix_from_numpy, numpy_from_matrix

__all__ = ["linear_transform_node", "ras_matrix_from_sitk", "sitk_transform_node", "transform_matrix"]

#: A linear part whose condition number exceeds this is treated as not invertible.
_MAX_CONDITION = 1e12


def _check_matrix(matrix_ras: np.ndarray) -> np.ndarray:
    try:
        matrix = np.array(matrix_ras, dtype=float)
    except (TypeError, ValueError):
        raise InputError(
            "The transform matrix is not numeric; pass a 4x4 affine matrix (follow-up RAS to baseline RAS)."
        ) from None
    if matrix.shape != (4, 4):
        raise InputError(f"The transform matrix has shape {matrix.shape}; pass a 4x4 affine matrix.")
    if not np.all(np.isfinite(matrix)):
        raise InputError("The transform matrix holds NaN or infinite values; check the registration result.")
    if not np.array_equal(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(
            f"The last row of the transform matrix is {matrix[3].tolist()}, not [0, 0, 0, 1]; pass an affine matrix."
        )
    if np.linalg.cond(matrix[:3, :3]) > _MAX_CONDITION:
        raise InputError(
            "The transform matrix is not invertible (its 3x3 part is singular); the registration failed — "
            "check the inputs or register again."
        )
    return matrix


def _check_node(scene: Any, node: Any | None, class_name: str, what: str) -> None:
    if node is None:
        return
    if not node.IsA(class_name):
        raise InputError(f"Cannot store {what} in a {node.GetClassName()}; pass a {class_name} or None.")
    if node.GetScene() is not None and node.GetScene() is not scene:
        raise InputError(f"The transform node {node.GetName()!r} belongs to another scene; pass a node of this scene.")


def _in_scene(scene: Any, target: Any) -> Any:
    if target.GetScene() is None:
        with added_to_scene(scene, target) as added:
            pass
        return added
    return target


def linear_transform_node(scene: Any, matrix_ras: np.ndarray, name: str, node: Any | None = None) -> Any:
    """Create (or update) a linear transform node that maps follow-up RAS to baseline RAS.

    ``matrix_ras`` becomes the node's *to-parent* matrix: a follow-up volume placed under the node
    (``volume.SetAndObserveTransformNodeID(node.GetID())``) is shown in baseline space, the follow-up point ``p``
    at ``matrix_ras @ [p, 1]``. Slicer's from-parent matrix is its inverse (baseline -> follow-up).

    Args:
        scene: the ``vtkMRMLScene``.
        matrix_ras: 4x4 affine matrix, follow-up RAS -> baseline RAS (mm), last row ``[0, 0, 0, 1]``.
        name: node name shown in Slicer.
        node: an existing ``vtkMRMLLinearTransformNode`` to update in place (same node ID; nodes under it move
            with it); a new node is created when ``None``.

    Returns:
        The ``vtkMRMLLinearTransformNode``, in ``scene``.

    Raises:
        InputError: the matrix is not a finite, invertible 4x4 affine matrix, or ``node`` is not a linear transform
            node of this scene. Nothing is changed then.
    """
    import slicer

    _check_node(scene, node, "vtkMRMLLinearTransformNode", "a linear transform")
    matrix = _check_matrix(matrix_ras)
    target = node if node is not None else slicer.vtkMRMLLinearTransformNode()
    was_modifying = target.StartModify()
    try:
        target.SetName(name)
        target.SetMatrixTransformToParent(matrix_from_numpy(matrix))
    finally:
        target.EndModify(was_modifying)
    return _in_scene(scene, target)


def transform_matrix(node: Any) -> np.ndarray:
    """The to-parent 4x4 matrix of a linear transform node (follow-up RAS -> baseline RAS for our nodes).

    Raises:
        InputError: ``node`` is not a transform node or its transform is not linear.
    """
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    if node is None or not node.IsA("vtkMRMLTransformNode"):
        kind = "None" if node is None else node.GetClassName()
        raise InputError(f"Expected a transform node, got {kind}; select a linear transform.")
    if not node.IsLinear():
        raise InputError(
            f"The transform {node.GetName()!r} is not linear, so it has no matrix; select a linear transform."
        )
    matrix = vtkMatrix4x4()
    node.GetMatrixTransformToParent(matrix)
    return numpy_from_matrix(matrix)


def ras_matrix_from_sitk(transform: Any) -> np.ndarray:
    """The follow-up-RAS -> baseline-RAS matrix of a linear SimpleITK registration transform.

    Args:
        transform: a linear ``SimpleITK.Transform`` in 3-D (Euler, Similarity, Affine, Versor, Translation,
            Scale, or a composite of these) from a registration with ``fixed = baseline`` and
            ``moving = follow-up``: it maps baseline LPS points to follow-up LPS points.

    Returns:
        The 4x4 matrix to pass to :func:`linear_transform_node`: ``inv(LPS_TO_RAS @ T_lps @ LPS_TO_RAS)``.

    Raises:
        InputError: the transform is not 3-D, not linear, or not invertible.
    """
    if transform.GetDimension() != 3:
        raise InputError(f"The transform is {transform.GetDimension()}-D; pass a 3-D registration transform.")
    if not transform.IsLinear():
        raise InputError(
            f"The {transform.GetName()} is not linear, so it has no matrix; use sitk_transform_node for it."
        )
    # A linear transform is fixed by the images of the origin and of the three unit vectors.
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)), dtype=float)
    fixed_to_moving = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        fixed_to_moving[:3, axis] = np.array(transform.TransformPoint(tuple(unit)), dtype=float) - origin
    fixed_to_moving[:3, 3] = origin
    baseline_to_followup_ras = LPS_TO_RAS @ _check_matrix(fixed_to_moving) @ LPS_TO_RAS
    return np.linalg.inv(baseline_to_followup_ras)


def _node_class_for(transform: Any) -> str:
    name = transform.GetName()
    if transform.IsLinear():
        return "vtkMRMLLinearTransformNode"
    if name == "BSplineTransform":
        return "vtkMRMLBSplineTransformNode"
    if name == "DisplacementFieldTransform":
        return "vtkMRMLGridTransformNode"
    return "vtkMRMLTransformNode"


def sitk_transform_node(scene: Any, transform: Any, name: str, node: Any | None = None) -> Any:
    """Load a SimpleITK registration transform (any kind) into a transform node, through Slicer's ITK reader.

    The transform is written to a temporary ITK ``.h5`` file and read by ``vtkMRMLTransformStorageNode`` — the
    code Slicer runs when it loads a transform file — so LPS/RAS and direction are converted by Slicer itself:
    ``transform`` (baseline LPS -> follow-up LPS, ITK's resampling direction) becomes the node's from-parent
    transform, and a follow-up volume placed under the node is shown in baseline space. B-spline transforms give a
    ``vtkMRMLBSplineTransformNode``, displacement fields a ``vtkMRMLGridTransformNode``, linear transforms a
    ``vtkMRMLLinearTransformNode``, others (composites with a non-linear part) a ``vtkMRMLTransformNode``. The
    to-parent (follow-up -> baseline) direction of a non-linear transform is Slicer's iterative inverse.

    Args:
        scene: the ``vtkMRMLScene``.
        transform: a 3-D ``SimpleITK.Transform`` from a registration with ``fixed = baseline``,
            ``moving = follow-up``.
        name: node name shown in Slicer.
        node: an existing transform node to update in place; a linear transform node only takes linear transforms.

    Returns:
        The transform node, in ``scene``. It has no storage node: the temporary file is deleted.

    Raises:
        InputError: the transform is not 3-D or cannot be read by Slicer, or ``node`` does not fit.
    """
    import SimpleITK as sitk
    import slicer

    if not isinstance(transform, sitk.Transform):
        raise InputError(
            f"Expected a SimpleITK transform, got {type(transform).__name__}; pass the registration result."
        )
    if transform.GetDimension() != 3:
        raise InputError(f"The transform is {transform.GetDimension()}-D; pass a 3-D registration transform.")
    _check_node(scene, node, "vtkMRMLTransformNode", "a transform")
    if node is not None and node.IsA("vtkMRMLLinearTransformNode") and not transform.IsLinear():
        raise InputError(
            f"The {transform.GetName()} is not linear and cannot be stored in the linear transform node "
            f"{node.GetName()!r}; pass node=None to create a node of the right kind."
        )
    if transform.IsLinear():
        _check_matrix(np.linalg.inv(ras_matrix_from_sitk(transform)))

    target = node if node is not None else getattr(slicer, _node_class_for(transform))()
    storage = slicer.vtkMRMLTransformStorageNode()
    with tempfile.TemporaryDirectory(prefix="medai-transform-") as folder:
        path = Path(folder) / "transform.h5"
        sitk.WriteTransform(transform, str(path))
        storage.SetFileName(str(path))
        was_modifying = target.StartModify()
        try:
            target.SetName(name)
            read = storage.ReadData(target)
        finally:
            target.EndModify(was_modifying)
    if not read:
        raise InputError(f"Slicer could not read the {transform.GetName()}; pass a standard ITK transform type.")
    return _in_scene(scene, target)
