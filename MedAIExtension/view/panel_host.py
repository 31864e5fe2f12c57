"""What a panel of the ``medai view`` page may use of the application it is part of (the review app provides it)."""

from __future__ import annotations

from typing import Any, Protocol

from MedAIExtension.view.inputs import ViewInput

__all__ = ["PanelHost"]


class PanelHost(Protocol):
    """The review app as its panels see it.

    Attributes:
        view: what the session shows.
        server: the trame server (``server.state``, ``server.controller``).
        slicer_app: trame-slicer's ``SlicerApp`` (``view_manager``, ``display_manager``).
        scene: the session's ``vtkMRMLScene``.
        volume_node: the study's scalar volume node.
    """

    view: ViewInput
    server: Any
    slicer_app: Any
    scene: Any
    volume_node: Any
