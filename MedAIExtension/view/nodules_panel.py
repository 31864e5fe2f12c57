"""A tracking result: baseline and follow-up side by side with linked navigation, each with its nodules; the nodule
table with the exam's Lung-RADS; a row click centres both views on that nodule.

Layout "Baseline | Follow-up": two axial slice views, the baseline in view group 1 (left), the follow-up in view
group 0 (right). Scrolling the follow-up moves the baseline to the same anatomy through the registration
(``followup_to_baseline_ras`` of tracking.json), so the two stay linked; each study's nodules are drawn only in its
own view.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from MedAIExtension.io.loader import load_image
from MedAIExtension.mrml.volumes import image_to_volume_node
from MedAIExtension.review.plots import svg_lines
from MedAIExtension.tracking.scene import load_tracking_into_scene, read_tracking_document
from MedAIExtension.view.panel_host import PanelHost
from MedAIExtension.view.template_text import safe_text

__all__ = ["NodulesPanel"]

_COLUMNS = ("Nodule", "Status", "Lung-RADS", "Volume change", "VDT")
#: View groups of the side-by-side layout.
FOLLOWUP_GROUP, BASELINE_GROUP = 0, 1
COMPARE_LAYOUT = "Baseline | Follow-up"


class NodulesPanel:
    """Loads ``app.view.tracking`` and both studies into the scene (without the baseline study: the follow-up
    alone, its nodules only)."""

    def __init__(self, app: PanelHost) -> None:
        self.app = app
        view = app.view
        assert view.tracking is not None
        scene = app.scene
        baseline = image_to_volume_node(scene, load_image(view.baseline), "Baseline") if view.baseline else None
        nodes = load_tracking_into_scene(scene, view.tracking, baseline, app.volume_node)
        for node in (nodes.baseline_segmentation, nodes.baseline_fiducials):
            display = node.GetDisplayNode() if node is not None else None
            if display is not None:
                display.SetVisibility(False)
        self.nodes = nodes
        self.baseline_node = baseline
        self.rows: list[dict[str, Any]] = nodes.rows
        summary = read_tracking_document(view.tracking)["summary"]
        exam = summary.get("exam_lung_rads", {})
        latest = exam.get("followup") or exam.get("baseline") or {}
        self.exam_lung_rads = str(latest.get("category", ""))
        self.interval_days = summary.get("interval_days")
        matrix = summary.get("registration", {}).get("followup_to_baseline_ras")
        self.followup_to_baseline = np.asarray(matrix, dtype=float) if matrix is not None else np.eye(4)
        self._syncing = False

    def layout(self) -> tuple[str, Any] | None:
        """Baseline and follow-up axial views side by side (only when the baseline study was found)."""
        if self.baseline_node is None:
            return None
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition  # lazy: optional dependency
        from trame_slicer.views.abstract_view import ViewProps  # lazy: as above
        from trame_slicer.views.view_layout_definition import ViewType  # lazy: as above

        def axial(tag: str, label: str, colour: str, group: int) -> Any:
            properties = ViewProps(orientation="Axial", label=label, color=colour, group=group)
            return ViewLayoutDefinition(tag, ViewType.SLICE_VIEW, properties)

        views = [axial("Baseline", "B", "#4A90E2", BASELINE_GROUP), axial("Red", "F", "#F34A33", FOLLOWUP_GROUP)]
        return COMPARE_LAYOUT, Layout(LayoutDirection.Horizontal, views)

    def after_layout(self) -> None:
        """Each study in its own view group with its own nodules; the baseline view follows the follow-up's."""
        if self.baseline_node is None:
            return
        display = self.app.slicer_app.display_manager
        display.show_volume_in_slice_background(self.app.volume_node, view_group=FOLLOWUP_GROUP)
        display.show_volume_in_slice_background(self.baseline_node, view_group=BASELINE_GROUP)
        for node, group in (
            (self.nodes.followup_segmentation, FOLLOWUP_GROUP),
            (self.nodes.followup_fiducials, FOLLOWUP_GROUP),
            (self.nodes.baseline_segmentation, BASELINE_GROUP),
            (self.nodes.baseline_fiducials, BASELINE_GROUP),
        ):
            if node is not None:
                if node.GetDisplayNode() is not None:
                    node.GetDisplayNode().SetVisibility(True)
                display.set_node_visible_in_group(node, group)
        for view in self._views(FOLLOWUP_GROUP):
            view.modified.connect(self._follow)

    def _views(self, group: int) -> list[Any]:
        return list(self.app.slicer_app.view_manager.get_slice_views(group))

    def _follow(self, *_: Any) -> None:
        """Move the baseline views to the follow-up slice's anatomy (through the registration)."""
        followup = self._views(FOLLOWUP_GROUP)
        if self._syncing or not followup or self.baseline_node is None:
            return
        bounds = [0.0] * 6
        self.app.volume_node.GetRASBounds(bounds)
        point = np.array([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, followup[0].get_slice_value(), 1])
        superior = float((self.followup_to_baseline @ point)[2])
        self._syncing = True
        try:
            for view in self._views(BASELINE_GROUP):
                view.set_slice_value(superior)
        finally:
            self._syncing = False

    def jump_to(self, index: int) -> None:
        """Centre the views on nodule ``index`` of the table: the follow-up view on its follow-up centre (else its
        baseline one), the baseline view on its baseline centre."""
        row = self.rows[int(index)]
        centre = row.get("followup_center_ras") or row.get("baseline_center_ras")
        if centre is None:
            return
        for view in self._views(FOLLOWUP_GROUP):
            view.set_slice_value(float(centre[2]))
        before = row.get("baseline_center_ras")
        if before is not None:  # each study on the nodule's own centre (the registration is only approximate)
            self._syncing = True
            try:
                for view in self._views(BASELINE_GROUP):
                    view.set_slice_value(float(before[2]))
            finally:
                self._syncing = False
        self.app.server.state.current_nodule = row["tracking_id"]

    def volume_chart(self) -> str:
        """The nodules' volumes over the interval (mm³ against days), an SVG line per nodule in its colour."""
        interval = float(self.interval_days or 0.0)
        series = []
        for row in self.rows:
            points = [
                (days, float(row[key]))
                for days, key in ((0.0, "baseline_volume_mm3"), (interval, "followup_volume_mm3"))
                if isinstance(row.get(key), (int, float))
            ]
            if points:
                colour = "#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in row.get("color", (0.5, 0.5, 0.5))))
                series.append((str(row["tracking_id"]), colour, points))
        if not series:
            return ""
        return svg_lines(series, "Nodule volumes", "days since baseline", "volume (mm³)")

    def build(self, v3: Any) -> None:
        """The drawer's nodule table (class ``medai-nodules``; row ``i`` has class ``medai-nodule-<i>``)."""
        from trame.widgets import html  # lazy: trame is the optional view dependency (requirements-view.txt)

        self.app.server.state.current_nodule = ""
        v3.VListSubheader(f"Nodules — exam Lung-RADS {safe_text(self.exam_lung_rads or '?')}")
        with v3.VTable(density="compact", classes="medai-nodules"):
            with html.Thead(), html.Tr():
                for title in _COLUMNS:
                    html.Th(title)
            with html.Tbody():
                for index, row in enumerate(self.rows):
                    change, vdt = row.get("volume_change_percent"), row.get("vdt_days")
                    with html.Tr(
                        click=(self.jump_to, f"[{index}]"),
                        classes=f"medai-nodule-row medai-nodule-{index}",
                        style="cursor: pointer",
                    ):
                        html.Td(safe_text(row["tracking_id"]))
                        html.Td(safe_text(row.get("status", "")))
                        html.Td(safe_text(row.get("lung_rads") or ""))
                        html.Td(f"{change:+.0f} %" if isinstance(change, (int, float)) else "")
                        html.Td(f"{vdt:.0f} d" if isinstance(vdt, (int, float)) else "")
        chart = self.volume_chart()
        if chart:
            self.app.server.state.volume_chart = chart
            html.Div(v_html=("volume_chart",), classes="medai-volume-chart mx-2")
