"""The ``medai view`` page: a study's CT in Slicer's slice views with MedAI's results, served by trame-slicer.

One process, one MRML scene (slicer-core), one reviewing session. The study is shown in the axial slice view
(trame-slicer's slider pages through the slices); what else the page offers comes from panels, each loading one
kind of result into the scene and adding its controls to the side drawer:

* :class:`~MedAIExtension.view.segments_panel.SegmentsPanel` — a segmentation result;
* :class:`~MedAIExtension.view.editor_panel.EditorPanel` — correcting a segmentation (paint, erase, undo, save);
* :class:`~MedAIExtension.view.decisions_panel.DecisionsPanel` — accept / reject / comment, the decisions SR;
* :class:`~MedAIExtension.view.nodules_panel.NodulesPanel` — a nodule tracking result;
* :class:`~MedAIExtension.view.heatmap_panel.HeatmapPanel` — an explanation (heat map) or uncertainty result.

A panel is a class built with the app (``Panel(app)``, app: a :class:`~MedAIExtension.view.panel_host.PanelHost`)
once the study is in the scene, with a ``build(v3)`` method that adds its widgets (``v3``: ``trame.widgets.vuetify3``)
to the drawer. Optionally ``layout()`` returns ``(layout_id, trame_slicer Layout)`` for views of its own (the
first panel offering one wins; default: one axial view) and ``after_layout()`` runs once the views exist.

Offscreen rendering without a GPU goes through EGL (Mesa llvmpipe): ``VTK_DEFAULT_OPENGL_WINDOW`` is set to
``vtkEGLRenderWindow`` before VTK is imported (unless the user set it), so VTK does not try X first.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from MedAIExtension.io.loader import load_image
from MedAIExtension.mrml.volumes import image_to_volume_node
from MedAIExtension.view.decisions_panel import DecisionsPanel
from MedAIExtension.view.editor_panel import EditorPanel
from MedAIExtension.view.heatmap_panel import HeatmapPanel
from MedAIExtension.view.inputs import ViewInput, resolve_view_input
from MedAIExtension.view.nodules_panel import NodulesPanel
from MedAIExtension.view.segments_panel import SegmentsPanel
from MedAIExtension.view.template_text import safe_text
from MedAIExtension.view.token_guard import token_middleware

__all__ = ["ReviewApp", "ViewInput", "resolve_view_input"]

_EGL = ("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


class ReviewApp:
    """The trame-slicer application of one review session.

    Args:
        view: what to show (:func:`~MedAIExtension.view.inputs.resolve_view_input`).
        server: a trame server (a new one by default).

    Raises:
        InputError: the study or a result cannot be read.
    """

    def __init__(self, view: ViewInput, server: Any = None) -> None:
        os.environ.setdefault(*_EGL)
        from trame.app import TrameApp  # lazy: trame-slicer is the optional view dependency (requirements-view.txt)
        from trame_slicer.core import LayoutManager, SlicerApp  # lazy: as above
        from trame_slicer.rca_view import register_rca_factories  # lazy: as above
        from vtkmodules.vtkCommonCore import vtkLogger, vtkObject  # lazy: VTK comes with slicer-core

        vtkObject.GlobalWarningDisplayOff()  # VTK 9.6 deprecation notices from trame-slicer's views, per view
        vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)
        self._trame = TrameApp(server=server)
        self.server = self._trame.server
        self.view = view
        image = load_image(view.image)
        self.slicer_app = SlicerApp()
        self.scene = self.slicer_app.scene
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.volume_node = image_to_volume_node(self.scene, image, view.image.name)
        self.panels: list[Any] = self._make_panels()
        layout = next((p.layout() for p in self.panels if hasattr(p, "layout")), None)  # a panel's own views
        if layout is not None:
            self.layout_manager.register_layout(*layout)
        self.layout_manager.set_layout(layout[0] if layout is not None else "Axial Only")
        self._build_ui()  # creates the layout's views
        self.slicer_app.display_manager.show_volume_in_slice_background(self.volume_node)
        for panel in self.panels:
            if hasattr(panel, "after_layout"):
                panel.after_layout()
        self.slicer_app.display_manager.reset_views()

    def _make_panels(self) -> list[Any]:
        """The panels for what ``self.view`` holds, in drawer order."""
        panels: list[Any] = []
        if self.view.segmentation is not None:
            segments = SegmentsPanel(self)
            panels.append(segments)
            panels.append(EditorPanel(self, segments.node))
            folder, user = self.view.segmentation.parent, self.view.user or "unknown"
            panels.append(DecisionsPanel(self, folder, segments.names, user, after_export=self.view.after_export))
        if self.view.tracking is not None:
            nodules = NodulesPanel(self)
            panels.append(nodules)
            ids = [str(row["tracking_id"]) for row in nodules.rows]
            user = self.view.user or "unknown"
            panels.append(DecisionsPanel(self, self.view.tracking, ids, user, "followup_seg.dcm"))
        if self.view.explanation is not None:
            panels.append(HeatmapPanel(self))
            # The reader's verdict on the explanation as a whole; its SR references the Parametric Map when the
            # study was DICOM (explain writes one then).
            maps = sorted(self.view.explanation.glob("dicom/*_pm.dcm"))
            map_name = str(maps[0].relative_to(self.view.explanation)) if maps else "dicom/none_pm.dcm"
            panels.append(DecisionsPanel(self, self.view.explanation, [], self.view.user or "unknown", map_name))
        return panels

    def panel(self, kind: type) -> Any:
        """The panel of class ``kind`` (None when this session has none)."""
        return next((p for p in self.panels if isinstance(p, kind)), None)

    def _build_ui(self) -> None:
        from trame.widgets import vuetify3 as v3  # lazy: as in __init__
        from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout  # lazy: as in __init__

        with SinglePageWithDrawerLayout(self.server) as self.ui:
            self.ui.title.set_text(safe_text(self.view.title))
            with self.ui.drawer:
                if not self.panels:
                    v3.VListSubheader("The study alone (no MedAI result)")
                for panel in self.panels:
                    panel.build(v3)
            with self.ui.content:
                self.layout_manager.initialize_layout_grid(self.ui)

    def serve(self, port: int, token: str) -> None:
        """Serve on 127.0.0.1:``port`` until stopped; every request needs ``token`` (:mod:`.token_guard`)."""
        guard = token_middleware(token)
        self.server.controller.on_server_bind.add(lambda web_server: web_server.app.middlewares.append(guard))
        sys.argv = sys.argv[:1]  # trame parses the command line when it starts: medai's arguments are not its own
        self.server.start(port=port, host="127.0.0.1", open_browser=False, timeout=0, show_connection_info=False)
