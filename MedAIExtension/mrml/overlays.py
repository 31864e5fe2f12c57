"""A scalar map (explanation, uncertainty) shown as a colour overlay over the image it was computed on.

The map becomes a scalar volume node on its own grid (the input image's grid) whose display node has a heat colour
table, a fixed window and a lower threshold: voxels below the threshold are transparent in the slice views, so the
CT shows through where the map says nothing. When the scene has slice views (their ``vtkMRMLSliceCompositeNode``
s; Slicer's layout creates them, a headless scene has none), the CT becomes their background layer and the map
their foreground layer at the given opacity. Nothing here touches Slicer's application.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.mrml.volumes import image_to_volume_node

__all__ = [
    "HEAT_COLOR_NODE_ID",
    "HEAT_COLOR_SINGLETON_TAG",
    "MAP_ATTRIBUTE",
    "heat_color_node",
    "set_overlay_opacity",
    "show_map_overlay",
]

#: The heat colour node Slicer's colour logic adds to every scene (black → red → yellow → white).
HEAT_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
#: Singleton tag of the heat colour table MedAI adds to a scene that lacks Slicer's (so it is made only once).
HEAT_COLOR_SINGLETON_TAG = "MedAI.Heat"
#: Node attribute marking a volume node as a MedAI overlay map (value: the colour map name).
MAP_ATTRIBUTE = "MedAI.OverlayMap"
#: Default lower threshold, as a fraction of the window, when none is given.
DEFAULT_THRESHOLD_FRACTION = 0.2

_SLICE_COMPOSITE = "vtkMRMLSliceCompositeNode"
# Heat ramp of MedAI's own colour table: (position 0..1, r, g, b).
_HEAT_RAMP = ((0.0, 0.0, 0.0, 0.0), (0.35, 0.85, 0.0, 0.0), (0.7, 1.0, 0.85, 0.0), (1.0, 1.0, 1.0, 1.0))
_HEAT_COLORS = 256


def _check_opacity(opacity: float) -> float:
    value = float(opacity)
    if not 0.0 <= value <= 1.0 or not math.isfinite(value):
        raise InputError(f"Overlay opacity {opacity!r} is outside 0..1; use 0 (hidden) to 1 (opaque).")
    return value


def heat_color_node(scene: Any) -> Any:
    """The heat colour node of ``scene``: Slicer's ``PET-Heat``, else MedAI's own heat table (made once).

    Slicer's colour logic adds ``PET-Heat`` to every application scene (and to :func:`create_scene` scenes). A
    bare ``vtkMRMLScene`` has no colour nodes; then a 256-entry colour table named ``MedAI heat`` with the
    singleton tag :data:`HEAT_COLOR_SINGLETON_TAG` is added, which later calls find and reuse.
    """
    import slicer

    node = scene.GetNodeByID(HEAT_COLOR_NODE_ID)
    if node is not None:
        return node
    existing = scene.GetSingletonNode(HEAT_COLOR_SINGLETON_TAG, "vtkMRMLColorTableNode")
    if existing is not None:
        return existing
    table = slicer.vtkMRMLColorTableNode()
    table.SetName("MedAI heat")
    table.SetSingletonTag(HEAT_COLOR_SINGLETON_TAG)
    table.SetTypeToUser()
    table.SetNumberOfColors(_HEAT_COLORS)
    positions = [stop[0] for stop in _HEAT_RAMP]
    for index in range(_HEAT_COLORS):
        where = index / (_HEAT_COLORS - 1)
        rgb = [float(np.interp(where, positions, [stop[c] for stop in _HEAT_RAMP])) for c in (1, 2, 3)]
        table.SetColor(index, f"heat {index}", *rgb, 1.0)
    table.SetAttribute("Category", "MedAI")
    return scene.AddNode(table)


def _color_node(scene: Any, colormap: str) -> Any:
    """The colour node for ``colormap``: ``"heat"``, or the name or ID of any colour node in the scene."""
    if colormap.strip().lower() == "heat":
        return heat_color_node(scene)
    node = scene.GetNodeByID(colormap)
    if node is None:
        nodes = scene.GetNodesByClassByName("vtkMRMLColorNode", colormap)
        node = nodes.GetItemAsObject(0) if nodes.GetNumberOfItems() else None
    if node is None or not node.IsA("vtkMRMLColorNode"):
        raise InputError(f"The scene has no colour table {colormap!r}; use 'heat' or a Slicer colour table's name.")
    return node


def _default_window(array: np.ndarray) -> tuple[float, float]:
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


def _check_window(window: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"The overlay window must be two numbers [low, high], got {window!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InputError(f"The overlay window [{low}, {high}] is empty or not finite; give low < high.")
    return low, high


def _load(map_image: Image | str | os.PathLike[str]) -> Image:
    if isinstance(map_image, Image):
        image = map_image
    else:
        image = read_volume_file(Path(map_image))
    if np.issubdtype(image.array.dtype, np.complexfloating) or image.array.dtype == bool:
        raise InputError(f"A map overlay needs real numbers per voxel, not {image.array.dtype}; pass a float map.")
    return image if image.array.dtype == np.float32 else image.with_array(image.array.astype(np.float32))


def show_map_overlay(
    scene: Any,
    map_image: Image | str | os.PathLike[str],
    name: str,
    *,
    background_node: Any | None = None,
    window: Sequence[float] | None = None,
    threshold: float | None = None,
    colormap: str = "heat",
    opacity: float = 0.5,
    node: Any | None = None,
) -> Any:
    """Show a scalar map as a coloured foreground layer over ``background_node``.

    Args:
        scene: the ``vtkMRMLScene``.
        map_image: the map (stored as float32) on its grid, or a NIfTI/NRRD file holding it.
        name: node name shown in Slicer.
        background_node: the volume the map was computed on; it becomes the background of every slice view.
        window: ``[low, high]`` mapped to the first and last colour (default: the map's range).
        threshold: voxels below it are transparent (default: ``low + 0.2 (high - low)``).
        colormap: ``"heat"`` (Slicer's ``PET-Heat``, or MedAI's heat table in a scene without it) or the name or
            ID of another colour node of the scene.
        opacity: foreground opacity of the slice views, 0..1.
        node: an existing scalar volume node to update in place (e.g. a second run); a new node otherwise.

    Returns:
        The ``vtkMRMLScalarVolumeNode`` of the map, with the attribute ``MedAI.OverlayMap`` set to the colour map.

    Raises:
        InputError: unreadable map, an unknown colour map, an empty window, an opacity outside 0..1, or a
            background node that is not a volume of this scene. The scene is unchanged then.
    """
    opacity = _check_opacity(opacity)
    image = _load(map_image)
    low, high = _check_window(window) if window is not None else _default_window(image.array)
    lower = float(threshold) if threshold is not None else low + DEFAULT_THRESHOLD_FRACTION * (high - low)
    if not math.isfinite(lower):
        raise InputError(f"The overlay threshold {threshold!r} is not a number; give a value inside the window.")
    if background_node is not None and (
        not background_node.IsA("vtkMRMLVolumeNode") or background_node.GetScene() is not scene
    ):
        raise InputError("The background must be a volume node of this scene; select the image the map was made on.")
    color = _color_node(scene, colormap)

    created = node is None
    volume = image_to_volume_node(scene, image, name, node)
    try:
        volume.SetAttribute(MAP_ATTRIBUTE, colormap)
        display = volume.GetDisplayNode()
        was_modifying = display.StartModify()
        display.SetAndObserveColorNodeID(color.GetID())
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(low, high)
        display.SetAutoThreshold(False)
        display.SetThreshold(lower, max(high, float(np.max(image.array))) + 1.0)
        display.SetApplyThreshold(True)
        display.SetInterpolate(True)
        display.EndModify(was_modifying)
    except BaseException:
        if created and volume.GetScene() is scene:
            scene.RemoveNode(volume)
        raise
    for composite in _composite_nodes(scene):
        was_modifying = composite.StartModify()
        if background_node is not None:
            composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(volume.GetID())
        composite.SetForegroundOpacity(opacity)
        composite.EndModify(was_modifying)
    return volume


def _composite_nodes(scene: Any) -> list[Any]:
    count = scene.GetNumberOfNodesByClass(_SLICE_COMPOSITE)
    return [scene.GetNthNodeByClass(index, _SLICE_COMPOSITE) for index in range(count)]


def set_overlay_opacity(scene: Any, opacity: float) -> int:
    """Set the foreground opacity of every slice view of ``scene`` (0 hides the map, 1 hides the CT).

    Returns:
        The number of slice views changed (0 in a scene without views).

    Raises:
        InputError: ``opacity`` outside 0..1.
    """
    opacity = _check_opacity(opacity)
    composites = _composite_nodes(scene)
    for composite in composites:
        composite.SetForegroundOpacity(opacity)
    return len(composites)
