"""Correcting a segmentation result in the browser: trame-slicer's segment editor on the segmentation node that
:class:`~MedAIExtension.view.segments_panel.SegmentsPanel` loaded, and Save into the result's ``corrections/``.

The drawer gets the segment to edit, the tool (none, paint, erase, threshold-paint), the brush diameter in mm, the
intensity range of threshold-paint, Undo and Save. Painting and erasing happen with the left mouse button in the
slice view (trame-slicer's paint effect: a disc of the brush diameter on the shown slice, along the stroke).
Threshold-paint is paint restricted to voxels of the study whose intensity lies in the chosen range (Slicer's
editable intensity range). Save writes :mod:`~MedAIExtension.view.corrections`.

Trame state: ``editor_segment`` (index into the segments), ``editor_tool``, ``editor_brush_mm``,
``editor_threshold`` (``[low, high]``), ``editor_edits`` (edits Undo can take back), ``editor_can_undo`` and
``editor_message`` (what the last save did).
"""

from __future__ import annotations

from typing import Any

from MedAIExtension.errors import MedAIError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.view.corrections import Correction, default_annotator, write_correction
from MedAIExtension.view.panel_host import PanelHost

__all__ = ["TOOLS", "EditorPanel"]

#: The editing tools, as state ``editor_tool`` names them, with their button titles.
TOOLS = {"none": "None", "paint": "Paint", "erase": "Erase", "threshold-paint": "Threshold paint"}

_DEFAULT_BRUSH_MM = 10.0
_LUNG_RANGE_HU = (-1000.0, -400.0)  # threshold-paint's starting range on a CT: aerated lung


class EditorPanel:
    """The segment editor of a review session.

    Args:
        app: the review app.
        node: the segmentation node to edit (the SegmentsPanel's).
    """

    def __init__(self, app: PanelHost, node: Any) -> None:
        from undo_stack import UndoStack  # lazy: trame-slicer's dependency (requirements-view.txt)

        self.app = app
        self.node = node
        self.editor = app.slicer_app.segmentation_editor
        self.undo_stack = UndoStack(undo_limit=50)
        self.editor.set_undo_stack(self.undo_stack)  # before the node: its edits then go onto this stack
        self.editor.set_active_segmentation(node, app.volume_node)
        segmentation = node.GetSegmentation()
        self.segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        self.names = [segmentation.GetSegment(segment_id).GetName() for segment_id in self.segment_ids]
        low, high = (float(v) for v in app.volume_node.GetImageData().GetScalarRange())
        self.intensity_range = (low, high)
        self._original: Image | None = None
        self._study: Image | None = None
        self.last: Correction | None = None

    # ---- editing -------------------------------------------------------------------------------------------------

    def _effect_types(self) -> dict[str, Any]:
        from trame_slicer.segmentation import (  # lazy: as in __init__
            SegmentationEffectErase,
            SegmentationEffectNoTool,
            SegmentationEffectPaint,
        )

        return {
            "none": SegmentationEffectNoTool,
            "paint": SegmentationEffectPaint,
            "erase": SegmentationEffectErase,
            "threshold-paint": SegmentationEffectPaint,
        }

    def set_brush_diameter(self, diameter_mm: float) -> None:
        """The paint and erase brush: a disc of ``diameter_mm`` millimetres."""
        from trame_slicer.segmentation import (  # lazy: as in __init__
            BrushDiameterMode,
            SegmentationEffectErase,
            SegmentationEffectPaint,
        )

        for kind in (SegmentationEffectPaint, SegmentationEffectErase):
            effect = self.editor.get_effect(kind)
            effect.set_brush_diameter(float(diameter_mm), BrushDiameterMode.Absolute)
            effect.set_use_sphere_brush(False)

    def set_tool(self, tool: str) -> None:
        """Activate ``tool`` (a key of :data:`TOOLS`); threshold-paint also turns the intensity range mask on."""
        if tool not in TOOLS:
            raise MedAIError(f"Unknown editing tool {tool!r}; choose one of {', '.join(TOOLS)}.")
        editor_node = self.editor.editor_node
        editor_node.SetSourceVolumeIntensityMask(tool == "threshold-paint")
        if tool == "threshold-paint":
            low, high = self.app.server.state.editor_threshold
            editor_node.SetSourceVolumeIntensityMaskRange(float(low), float(high))
        self.editor.set_active_effect_type(self._effect_types()[tool])

    def set_segment(self, index: int) -> None:
        """Edit the segment at ``index`` of the segmentation."""
        self.editor.set_active_segment_id(self.segment_ids[int(index)])

    def undo(self) -> None:
        """Take back the last edit."""
        if self.undo_stack.can_undo():
            self.undo_stack.undo()

    def save(self) -> Correction:
        """Write the segmentation as it is now into ``<result>/corrections/<UTC time>/``.

        Raises:
            MedAIError: the correction cannot be written (nothing is left behind).
        """
        view = self.app.view
        assert view.segmentation is not None
        if self._original is None:
            self._original = read_volume_file(view.segmentation)
        if self._study is None:
            self._study = load_image(view.image)
        self.last = write_correction(
            self.node,
            view.segmentation.parent,
            self._original,
            self._study,
            view.labels,
            view.user or default_annotator(),
            study_path=view.image,
        )
        return self.last

    # ---- the drawer ----------------------------------------------------------------------------------------------

    def build(self, v3: Any) -> None:
        """The drawer's editing controls (bound to the server state)."""
        state = self.app.server.state
        low, high = self.intensity_range
        state.editor_segment = 0
        state.editor_tool = "none"
        state.editor_brush_mm = _DEFAULT_BRUSH_MM
        state.editor_threshold = [max(low, _LUNG_RANGE_HU[0]), min(high, _LUNG_RANGE_HU[1])]
        state.editor_can_undo = False
        state.editor_edits = 0
        state.editor_message = ""
        state.change("editor_segment")(lambda editor_segment, **_: self.set_segment(editor_segment))
        state.change("editor_tool", "editor_threshold")(lambda editor_tool, **_: self.set_tool(editor_tool))
        state.change("editor_brush_mm")(lambda editor_brush_mm, **_: self.set_brush_diameter(editor_brush_mm))
        self.undo_stack.index_changed.connect(self._on_undo_stack)
        self.set_brush_diameter(_DEFAULT_BRUSH_MM)
        self.set_segment(0)

        v3.VListSubheader("Correct the segmentation")
        v3.VSelect(
            v_model=("editor_segment",),
            items=("editor_segments", [{"title": name, "value": i} for i, name in enumerate(self.names)]),
            label="Segment to edit",
            density="compact",
            hide_details=True,
            classes="medai-edit-segment mx-2 mb-2",
        )
        with v3.VBtnToggle(v_model=("editor_tool",), mandatory=True, density="compact", classes="mx-2 flex-wrap"):
            for tool, title in TOOLS.items():
                v3.VBtn(title, value=tool, size="small", classes=f"medai-tool-{tool}")
        v3.VSlider(
            v_model=("editor_brush_mm",),
            label="Brush (mm)",
            min=1.0,
            max=50.0,
            step=1.0,
            thumb_label=True,
            hide_details=True,
            classes="medai-brush mx-2",
        )
        v3.VRangeSlider(
            v_if="editor_tool === 'threshold-paint'",
            v_model=("editor_threshold",),
            label="Range",
            min=low,
            max=high,
            step=1.0,
            thumb_label=True,
            hide_details=True,
            classes="medai-threshold mx-2",
        )
        with v3.VRow(classes="mx-2 my-1", dense=True):
            v3.VBtn(
                "Undo",
                click=self._on_undo,
                disabled=("!editor_can_undo",),
                size="small",
                prepend_icon="mdi-undo",
                classes="medai-undo mr-2",
            )
            v3.VBtn("Save", click=self._on_save, size="small", color="primary", classes="medai-save")
        v3.VListItemSubtitle("Edits: {{ editor_edits }}", classes="medai-edits mx-2")
        v3.VListItemSubtitle("{{ editor_message }}", v_if="editor_message", classes="medai-save-message mx-2")

    def _on_undo_stack(self, *_: Any) -> None:
        with self.app.server.state as state:
            state.editor_can_undo = self.undo_stack.can_undo()
            state.editor_edits = self.undo_stack.index()

    def _on_undo(self) -> None:
        self.undo()
        self._on_undo_stack()

    def _on_save(self) -> None:
        state = self.app.server.state
        try:
            correction = self.save()
        except MedAIError as error:
            state.editor_message = f"Not saved: {error}"
            return
        state.editor_message = f"Saved {correction.folder}"
