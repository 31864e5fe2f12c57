"""Nodule positions as a markups point list (``vtkMRMLMarkupsFiducialNode``): one labelled control point per nodule.

Each control point is labelled with the nodule's tracking id (``N1``, ``N2`` …), so Slicer shows the id beside the
point in every view and lists it in the Markups module; clicking it there jumps the slice views to the nodule. The
points are locked: they are measurement results, not something to drag by accident.

Positions are RAS millimetres in the node's own coordinate frame: the world RAS of the scene while the node has no
parent transform. Put the node of a follow-up scan under the follow-up-to-baseline transform
(:func:`~MedAIExtension.mrml.transforms.linear_transform_node`) to see follow-up positions in baseline space; the
stored positions stay follow-up RAS.

Saving: the points are kept in the markups JSON file of the node's storage node, which only exists when the Markups
logic is registered on the scene (Slicer does it; :func:`~MedAIExtension.mrml.scene.create_scene` does it too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.mrml._vtk import added_to_scene

__all__ = ["fiducial_points", "nodule_fiducials_node"]

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _check_points(points: Sequence[tuple[str, Sequence[float]]]) -> list[tuple[str, tuple[float, float, float]]]:
    """The points as (label, (r, a, s)) with float coordinates, after checking every label and position."""
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
        raise InputError(
            f"Nodule points must be a sequence of (tracking id, (R, A, S)) pairs, got {type(points).__name__}; "
            "pass a list such as [('N1', (12.0, -30.5, 88.0))]."
        )
    checked: list[tuple[str, tuple[float, float, float]]] = []
    seen: set[str] = set()
    for number, item in enumerate(points):
        try:
            label, position = item
        except (TypeError, ValueError):
            raise InputError(
                f"Nodule point {number} is {item!r}, not a (tracking id, (R, A, S)) pair; pass one pair per nodule."
            ) from None
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"Nodule point {number} has the label {label!r}; give every nodule a tracking id (N1…).")
        if _CONTROL_CHARACTERS.search(label):
            raise InputError(f"The tracking id {label!r} contains a control character; remove it.")
        if label in seen:
            raise InputError(f"The tracking id {label!r} is used by two points; give every nodule its own id.")
        seen.add(label)
        try:
            coordinates = np.asarray(position, dtype=float)
        except (TypeError, ValueError):
            raise InputError(
                f"The position of {label} is {position!r}, not three numbers; pass (R, A, S) in mm."
            ) from None
        if coordinates.shape != (3,):
            raise InputError(
                f"The position of {label} has shape {coordinates.shape}, expected 3 coordinates (R, A, S) in mm."
            )
        if not np.all(np.isfinite(coordinates)):
            raise InputError(
                f"The position of {label} is {coordinates.tolist()}, which is not finite; "
                "leave out nodules without a measured centre."
            )
        checked.append((label, (float(coordinates[0]), float(coordinates[1]), float(coordinates[2]))))
    return checked


def _check_color(color: Sequence[float] | None) -> tuple[float, float, float] | None:
    if color is None:
        return None
    try:
        values = tuple(float(c) for c in color)
    except (TypeError, ValueError):
        raise InputError(f"The colour {color!r} is not three numbers; pass (red, green, blue) in 0..1.") from None
    if len(values) != 3 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in values):
        raise InputError(f"The colour {color!r} is not three values in 0..1; pass (red, green, blue) in 0..1.")
    return values


def nodule_fiducials_node(
    scene: Any,
    points: Sequence[tuple[str, Sequence[float]]],
    name: str,
    color: tuple[float, float, float] | None = None,
    node: Any | None = None,
) -> Any:
    """Create (or update) a markups point list with one locked, labelled control point per nodule.

    Every input is checked before the scene or ``node`` is touched, so an error leaves both unchanged.

    Args:
        scene: the ``vtkMRMLScene`` (Slicer's application scene inside Slicer, :func:`create_scene` outside).
        points: ``(tracking id, (R, A, S))`` per nodule, in the order the points should have; positions in mm in
            the node's own frame (world RAS unless the node is placed under a transform). Tracking ids must be
            unique and non-empty. An empty sequence gives a list with no points (no nodule found).
        name: node name shown in Slicer.
        color: ``(red, green, blue)`` in 0..1 for the points and their labels; Slicer's default when ``None``.
            Both the display node's colour and its "selected" colour are set (Slicer draws control points, which
            are selected by default, in the selected colour).
        node: an existing ``vtkMRMLMarkupsFiducialNode`` whose control points are replaced (in place, same node
            ID); a new node is created when ``None``. A node not yet in a scene is added to ``scene``.

    Returns:
        The ``vtkMRMLMarkupsFiducialNode``, in ``scene``, with a display node; the node and every control point
        are locked.

    Raises:
        InputError: a point is not a (non-empty unique id, three finite coordinates) pair, the colour is not three
            values in 0..1, or ``node`` is not a point list or belongs to another scene.
    """
    import slicer

    if node is not None:
        if not node.IsA("vtkMRMLMarkupsFiducialNode"):
            raise InputError(
                f"Cannot store nodule points in a {node.GetClassName()}; pass a markups point list node or None."
            )
        if node.GetScene() is not None and node.GetScene() is not scene:
            raise InputError(f"The point list {node.GetName()!r} belongs to another scene; pass a node of this scene.")
    checked = _check_points(points)
    rgb = _check_color(color)

    target = node if node is not None else slicer.vtkMRMLMarkupsFiducialNode()
    was_modifying = target.StartModify()
    try:
        target.SetName(name)
        target.SetLocked(False)
        target.RemoveAllControlPoints()
        for label, position in checked:
            index = target.AddControlPoint(position, label)
            target.SetNthControlPointLocked(index, True)
        target.SetLocked(True)
    finally:
        target.EndModify(was_modifying)

    if target.GetScene() is None:
        with added_to_scene(scene, target) as added:
            added.CreateDefaultDisplayNodes()
            _apply_color(added, rgb)
        return added
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    _apply_color(target, rgb)
    return target


def _apply_color(node: Any, rgb: tuple[float, float, float] | None) -> None:
    display = node.GetDisplayNode()
    if rgb is None or display is None:
        return
    display.SetColor(rgb)
    display.SetSelectedColor(rgb)


def fiducial_points(node: Any) -> list[tuple[str, np.ndarray]]:
    """The control points of a markups node as ``(label, position)``, in point order.

    Args:
        node: a markups node (e.g. made by :func:`nodule_fiducials_node`).

    Returns:
        One ``(label, array of (R, A, S))`` per control point, positions in mm in the node's own frame (parent
        transforms are not applied, so this reads back exactly what :func:`nodule_fiducials_node` stored).

    Raises:
        InputError: ``node`` is not a markups node.
    """
    if node is None or not node.IsA("vtkMRMLMarkupsNode"):
        kind = "None" if node is None else node.GetClassName()
        raise InputError(f"Expected a markups node, got {kind}; select a point list.")
    result: list[tuple[str, np.ndarray]] = []
    position = [0.0, 0.0, 0.0]
    for index in range(node.GetNumberOfControlPoints()):
        node.GetNthControlPointPosition(index, position)
        result.append((node.GetNthControlPointLabel(index), np.array(position, dtype=float)))
    return result
