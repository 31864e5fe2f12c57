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
from MedAIExtension.tracking.scene import load_tracking_into_scene, read_tracking_document
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
        tracking: a ``medai track`` result folder (``image`` is then the follow-up study).
        baseline: the tracking's baseline study.
    """

    image: Path
    segmentation: Path | None = None
    title: str = "MedAI view"
    labels: tuple[SegmentLabel, ...] = field(default=())
    tracking: Path | None = None
    baseline: Path | None = None


def resolve_view_input(path: str | os.PathLike[str], image: str | os.PathLike[str] | None = None) -> ViewInput:
    """What ``medai view PATH [--image IMAGE]`` shows: a study alone, or a result folder over its study.

    Raises:
        InputError: no such path, a result folder whose study cannot be found (give ``--image``), or a folder
            that is neither a study nor a result.
    """
    target = Path(path)
    if not target.exists():
        raise InputError(f"{target} does not exist. Give a study (DICOM folder, NIfTI/NRRD) or a MedAI result folder.")
    if target.is_dir() and (target / "tracking.json").is_file():
        return _tracking_input(target, image)
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


def _tracking_input(folder: Path, image: str | os.PathLike[str] | None) -> ViewInput:
    inputs = read_tracking_document(folder).get("inputs") or {}
    followup = Path(image) if image is not None else Path(str(inputs.get("followup", "")))
    baseline = Path(str(inputs.get("baseline", "")))
    if not str(followup) or not followup.exists():
        raise InputError(
            f"The follow-up study tracked into {folder} cannot be found ({followup or 'not recorded'}). "
            "Give it with --image."
        )
    return ViewInput(
        followup,
        title=f"MedAI view: {folder.name} (follow-up)",
        tracking=folder,
        baseline=baseline if str(baseline) and baseline.exists() else None,
    )


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
        self.nodules: list[dict[str, Any]] = []
        self.exam_lung_rads = ""
        if view.tracking is not None:
            self._load_tracking(view)
        self.slicer_app.display_manager.show_volume_in_slice_background(self.volume_node)
        self.slicer_app.display_manager.reset_views()
        self._build_ui()

    def _load_tracking(self, view: ViewInput) -> None:
        """The tracking result over the follow-up study (baseline nodules hidden: they lie in baseline space)."""
        assert view.tracking is not None
        scene = self.slicer_app.scene
        baseline = image_to_volume_node(scene, load_image(view.baseline), "Baseline") if view.baseline else None
        nodes = load_tracking_into_scene(scene, view.tracking, baseline, self.volume_node)
        for node in (nodes.baseline_segmentation, nodes.baseline_fiducials):
            display = node.GetDisplayNode() if node is not None else None
            if display is not None:
                display.SetVisibility(False)
        self.nodules = nodes.rows
        exam = read_tracking_document(view.tracking)["summary"].get("exam_lung_rads", {})
        followup = exam.get("followup") or exam.get("baseline") or {}
        self.exam_lung_rads = str(followup.get("category", ""))

    def jump_to_nodule(self, index: int) -> None:
        """Centre the slice views on nodule ``index`` of the table (its follow-up centre, else its baseline one)."""
        row = self.nodules[int(index)]
        centre = row.get("followup_center_ras") or row.get("baseline_center_ras")
        if centre is None:
            return
        for view in self.slicer_app.view_manager.get_slice_views():
            view.set_slice_value(float(centre[2]))
        self.server.state.current_nodule = row["tracking_id"]

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
                if self.nodules:
                    self._nodule_table(v3)
            with self.ui.content:
                self.layout_manager.initialize_layout_grid(self.ui)

    def _nodule_table(self, v3: Any) -> None:
        from trame.widgets import html  # lazy: as in __init__

        self.server.state.current_nodule = ""
        v3.VListSubheader(f"Nodules — exam Lung-RADS {self.exam_lung_rads or '?'}")
        with v3.VTable(density="compact", classes="medai-nodules"):
            with html.Thead(), html.Tr():
                for title in ("Nodule", "Status", "Lung-RADS", "Volume change", "VDT"):
                    html.Th(title)
            with html.Tbody():
                for index, row in enumerate(self.nodules):
                    change = row.get("volume_change_percent")
                    vdt = row.get("vdt_days")
                    with html.Tr(
                        click=(self.jump_to_nodule, f"[{index}]"),
                        classes=f"medai-nodule-row medai-nodule-{index}",
                        style="cursor: pointer",
                    ):
                        html.Td(str(row["tracking_id"]))
                        html.Td(str(row.get("status", "")))
                        html.Td(str(row.get("lung_rads") or ""))
                        html.Td(f"{change:+.0f} %" if isinstance(change, (int, float)) else "")
                        html.Td(f"{vdt:.0f} d" if isinstance(vdt, (int, float)) else "")

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
