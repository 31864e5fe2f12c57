"""The segments of a segmentation result: shown over the study, a visibility switch each and an opacity slider."""

from __future__ import annotations

from typing import Any

from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.mrml.segmentations import labelmap_to_segmentation_node
from MedAIExtension.view.panel_host import PanelHost
from MedAIExtension.view.template_text import safe_text

__all__ = ["SegmentsPanel"]


class SegmentsPanel:
    """Loads ``app.view.segmentation`` into the scene (named and coloured as the model's labels) and offers, in the
    drawer, a switch per segment (state ``segment_visible_<i>``) and the overlay's opacity (``overlay_opacity``)."""

    def __init__(self, app: PanelHost) -> None:
        self.app = app
        view = app.view
        assert view.segmentation is not None
        labelmap = read_volume_file(view.segmentation)
        self.node = labelmap_to_segmentation_node(
            app.scene, labelmap, list(view.labels), "MedAI segmentation", app.volume_node
        )
        segmentation = self.node.GetSegmentation()
        self.segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        self.names = [segmentation.GetSegment(segment_id).GetName() for segment_id in self.segment_ids]

    def build(self, v3: Any) -> None:
        """The drawer's segment switches and opacity slider (bound to the server state)."""
        state = self.app.server.state
        state.overlay_opacity = 0.5
        for index, _ in enumerate(self.segment_ids):
            state[f"segment_visible_{index}"] = True
            state.change(f"segment_visible_{index}")(self._on_visibility)
        state.change("overlay_opacity")(self._on_opacity)
        self._on_opacity(overlay_opacity=state.overlay_opacity)
        v3.VListSubheader("Segments")
        for index, name in enumerate(self.names):
            v3.VCheckbox(
                v_model=(f"segment_visible_{index}",),
                label=safe_text(name),
                density="compact",
                hide_details=True,
                classes=f"medai-segment medai-segment-{index}",
            )
        v3.VSlider(
            v_model=("overlay_opacity",),
            label="Opacity",
            min=0.0,
            max=1.0,
            step=0.05,
            hide_details=True,
            classes="medai-opacity mx-2",
        )

    def _on_visibility(self, **_: Any) -> None:
        display = self.node.GetDisplayNode()
        if display is None:
            return
        for index, segment_id in enumerate(self.segment_ids):
            display.SetSegmentVisibility(segment_id, bool(self.app.server.state[f"segment_visible_{index}"]))

    def _on_opacity(self, overlay_opacity: float = 0.5, **_: Any) -> None:
        display = self.node.GetDisplayNode()
        if display is not None:
            display.SetOpacity2DFill(float(overlay_opacity))
            display.SetOpacity2DOutline(min(1.0, float(overlay_opacity) + 0.3))
