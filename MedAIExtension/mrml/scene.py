"""A headless MRML scene with the module logics MedAI needs, built like Slicer (and trame-slicer) build theirs.

Inside Slicer, pass the application scene to the functions of :mod:`MedAIExtension.mrml` — the application has
already registered every logic. Outside Slicer (tests, the CLI, a server), :func:`create_scene` makes a scene from
the ``slicer-core`` wheel with:

* the application logic (``vtkSlicerApplicationLogic``) and its colour logic, which add the default colour
  tables that volume display nodes refer to;
* the Segmentations logic (``vtkSlicerSegmentationsModuleLogic``), which registers the segmentation converter
  rules — without it a segmentation cannot create or convert its binary labelmap representation;
* the Markups logic (``vtkSlicerMarkupsLogic``), which registers the markups JSON storage nodes — without them a
  markups node (nodule fiducials) has no storage node, so saving the scene drops its control points.

The Terminologies logic is deliberately not registered: it needs the terminology JSON files of a Slicer install
(not shipped in the wheel) and logs errors without them. Terminology strings are written directly by
:mod:`MedAIExtension.mrml.segmentations`. The Subject Hierarchy logic adds nothing without Slicer's Qt plugins.

The logics hold references to the scene, so a scene made here lives until :func:`close_scene` detaches them —
call it when a long-running process (server, batch job) is done with a scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SceneLogics", "close_scene", "create_scene", "scene_logics"]

#: Attribute of the scene's Python wrapper that keeps its logics alive (VTK keeps custom attributes).
_LOGICS_ATTRIBUTE = "medai_logics"


@dataclass(frozen=True)
class SceneLogics:
    """The module logics registered on a scene made by :func:`create_scene`."""

    application: Any
    segmentations: Any
    markups: Any = None


def create_scene() -> Any:
    """Create a headless MRML scene with the application (and colour), Segmentations and Markups logics registered.

    The logics are kept alive with the scene (see :func:`scene_logics`), so they are not garbage collected while
    the scene is in use.

    Returns:
        A new ``vtkMRMLScene``.

    Raises:
        ImportError: when the ``slicer-core`` wheel (``pip install slicer-core``) is not installed.
    """
    import slicer

    scene = slicer.vtkMRMLScene()

    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    application.GetColorLogic().SetMRMLScene(scene)

    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    segmentations.SetMRMLApplicationLogic(application)
    application.SetModuleLogic("Segmentations", segmentations)

    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)
    markups.SetMRMLApplicationLogic(application)
    application.SetModuleLogic("Markups", markups)

    setattr(scene, _LOGICS_ATTRIBUTE, SceneLogics(application, segmentations, markups))
    return scene


def close_scene(scene: Any) -> None:
    """Remove every node from a scene made by :func:`create_scene` and detach its logics, so both can be freed.

    The scene must not be used afterwards. For other scenes (e.g. Slicer's) this only clears the scene.
    """
    logics = scene_logics(scene)
    scene.Clear(True)
    if logics is None:
        return
    from vtkmodules.vtkCommonCore import vtkObject

    # Detaching the Segmentations logic looks up the (now removed) subject hierarchy and warns; that is expected.
    warnings_shown = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        logics.segmentations.SetMRMLScene(None)
    finally:
        vtkObject.SetGlobalWarningDisplay(warnings_shown)
    if logics.markups is not None:
        logics.markups.SetMRMLScene(None)
    logics.application.GetColorLogic().SetMRMLScene(None)
    logics.application.SetMRMLScene(None)
    delattr(scene, _LOGICS_ATTRIBUTE)


def scene_logics(scene: Any) -> SceneLogics | None:
    """The logics registered by :func:`create_scene` on ``scene``, or ``None`` for another scene (e.g. Slicer's)."""
    return getattr(scene, _LOGICS_ATTRIBUTE, None)
