"""The ``medai view`` page: a study's CT in Slicer's slice views with MedAI's segmentation, served by trame-slicer.

One process, one MRML scene (slicer-core), one reviewing session. The CT is shown in the axial slice view (trame-
slicer's slider pages through the slices) with the segmentation overlaid in the model's names and colours; a side
panel lists the segments with a visibility switch each and an opacity slider for the overlay.

Offscreen rendering without a GPU goes through EGL (Mesa llvmpipe): ``VTK_DEFAULT_OPENGL_WINDOW`` is set to
``vtkEGLRenderWindow`` before VTK is imported (unless the user set it), so VTK does not try X first.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.mrml.segmentations import labelmap_to_segmentation_node
from MedAIExtension.mrml.volumes import image_to_volume_node
from MedAIExtension.segmentation.output_folder import find_segmentation_file, output_labels, segmented_input
from MedAIExtension.view.token_guard import token_middleware

__all__ = ["ReviewApp", "ViewInput", "resolve_view_input"]

_EGL = ("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@dataclass(frozen=True)
class ViewInput:
    """What a review session shows.

    Attributes:
        image: the study (DICOM folder or volume file).
        segmentation: the label map to overlay (``segmentation.nii.gz``) or None.
        title: the page's title.
        labels: the segments' names and colours (with ``segmentation``).
    """

    image: Path
    segmentation: Path | None = None
    title: str = "MedAI view"
    labels: tuple[SegmentLabel, ...] = field(default=())


def resolve_view_input(path: str | os.PathLike[str], image: str | os.PathLike[str] | None = None) -> ViewInput:
    """What ``medai view PATH [--image IMAGE]`` shows: a study alone, or a result folder over its study.

    Raises:
        InputError: no such path, a result folder whose study cannot be found (give ``--image``), or a folder
            that is neither a study nor a result.
    """
    target = Path(path)
    if not target.exists():
        raise InputError(f"{target} does not exist. Give a study (DICOM folder, NIfTI/NRRD) or a MedAI result folder.")
    if target.is_dir() and (target / "summary.json").is_file():
        segmentation = target / "segmentation.nii.gz"
        if not segmentation.is_file():
            found = find_segmentation_file(target)
            raise InputError(
                f"{target} has no segmentation.nii.gz"
                + (f" (only {found.name})" if found else "")
                + ". Run medai segment again with --format nii.gz (the default writes it)."
            )
        study = Path(image) if image is not None else segmented_input(target)
        if study is None or not study.exists():
            raise InputError(
                f"The study segmented into {target} cannot be found (summary.json names "
                f"{study or 'none'}). Give it with --image."
            )
        labels = tuple(output_labels(target, read_volume_file(segmentation)))
        return ViewInput(study, segmentation, f"MedAI view: {target.name}", labels)
    if image is not None:
        raise InputError("--image is for a result folder (it names the study the folder was computed from).")
    return ViewInput(target, None, f"MedAI view: {target.name}")


class ReviewApp:
    """The trame-slicer application of one review session.

    Args:
        view: what to show (:func:`resolve_view_input`).
        server: a trame server (a new one by default).

    Raises:
        InputError: the study or its segmentation cannot be read, or they do not share a patient space.
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
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout("Axial Only")
        scene = self.slicer_app.scene
        self.volume_node = image_to_volume_node(scene, image, view.image.name)
        self.segmentation_node = None
        self.segment_ids: list[str] = []
        if view.segmentation is not None:
            labelmap = read_volume_file(view.segmentation)
            self.segmentation_node = labelmap_to_segmentation_node(
                scene, labelmap, list(view.labels), "MedAI segmentation", self.volume_node
            )
            segmentation = self.segmentation_node.GetSegmentation()
            self.segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        self.slicer_app.display_manager.show_volume_in_slice_background(self.volume_node)
        self.slicer_app.display_manager.reset_views()
        self._build_ui()

    # ---- the page -------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from trame.widgets import vuetify3 as v3  # lazy: as in __init__
        from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout  # lazy: as in __init__

        state = self.server.state
        state.overlay_opacity = 0.5
        names = self._segment_names()
        for index, _ in enumerate(self.segment_ids):
            state[f"segment_visible_{index}"] = True
            state.change(f"segment_visible_{index}")(self._on_visibility)
        state.change("overlay_opacity")(self._on_opacity)
        self._on_opacity(overlay_opacity=state.overlay_opacity)
        with SinglePageWithDrawerLayout(self.server) as self.ui:
            self.ui.title.set_text(self.view.title)
            with self.ui.drawer:
                v3.VListSubheader("Segments" if names else "No segmentation")
                for index, name in enumerate(names):
                    v3.VCheckbox(
                        v_model=(f"segment_visible_{index}",),
                        label=name,
                        density="compact",
                        hide_details=True,
                        classes=f"medai-segment medai-segment-{index}",
                    )
                if names:
                    v3.VSlider(
                        v_model=("overlay_opacity",),
                        label="Opacity",
                        min=0.0,
                        max=1.0,
                        step=0.05,
                        hide_details=True,
                        classes="medai-opacity mx-2",
                    )
            with self.ui.content:
                self.layout_manager.initialize_layout_grid(self.ui)

    def _segment_names(self) -> list[str]:
        if self.segmentation_node is None:
            return []
        segmentation = self.segmentation_node.GetSegmentation()
        return [segmentation.GetSegment(segment_id).GetName() for segment_id in self.segment_ids]

    def _on_visibility(self, **_: Any) -> None:
        display = self.segmentation_node.GetDisplayNode() if self.segmentation_node is not None else None
        if display is None:
            return
        for index, segment_id in enumerate(self.segment_ids):
            display.SetSegmentVisibility(segment_id, bool(self.server.state[f"segment_visible_{index}"]))

    def _on_opacity(self, overlay_opacity: float = 0.5, **_: Any) -> None:
        display = self.segmentation_node.GetDisplayNode() if self.segmentation_node is not None else None
        if display is not None:
            display.SetOpacity2DFill(float(overlay_opacity))
            display.SetOpacity2DOutline(min(1.0, float(overlay_opacity) + 0.3))

    # ---- serving ----------------------------------------------------------------------------------------------
    def serve(self, port: int, token: str) -> None:
        """Serve on 127.0.0.1:``port`` until stopped; every request needs ``token`` (:mod:`.token_guard`)."""
        guard = token_middleware(token)
        self.server.controller.on_server_bind.add(lambda web_server: web_server.app.middlewares.append(guard))
        sys.argv = sys.argv[:1]  # trame parses the command line when it starts: medai's arguments are not its own
        self.server.start(port=port, host="127.0.0.1", open_browser=False, timeout=0, show_connection_info=False)
