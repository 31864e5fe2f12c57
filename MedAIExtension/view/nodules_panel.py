"""A tracking result: the nodules over the follow-up study, their table and the exam's Lung-RADS; a row click
centres the slice views on that nodule."""

from __future__ import annotations

from typing import Any

from MedAIExtension.io.loader import load_image
from MedAIExtension.mrml.volumes import image_to_volume_node
from MedAIExtension.tracking.scene import load_tracking_into_scene, read_tracking_document
from MedAIExtension.view.panel_host import PanelHost

__all__ = ["NodulesPanel"]

_COLUMNS = ("Nodule", "Status", "Lung-RADS", "Volume change", "VDT")


class NodulesPanel:
    """Loads ``app.view.tracking`` (and the baseline study, when found) into the scene. The baseline's nodules are
    hidden: they lie in baseline space, and the slice views show the follow-up."""

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
        self.rows: list[dict[str, Any]] = nodes.rows
        exam = read_tracking_document(view.tracking)["summary"].get("exam_lung_rads", {})
        latest = exam.get("followup") or exam.get("baseline") or {}
        self.exam_lung_rads = str(latest.get("category", ""))

    def jump_to(self, index: int) -> None:
        """Centre the slice views on nodule ``index`` of the table (its follow-up centre, else its baseline one)."""
        row = self.rows[int(index)]
        centre = row.get("followup_center_ras") or row.get("baseline_center_ras")
        if centre is None:
            return
        for view in self.app.slicer_app.view_manager.get_slice_views():
            view.set_slice_value(float(centre[2]))
        self.app.server.state.current_nodule = row["tracking_id"]

    def build(self, v3: Any) -> None:
        """The drawer's nodule table (class ``medai-nodules``; row ``i`` has class ``medai-nodule-<i>``)."""
        from trame.widgets import html  # lazy: trame is the optional view dependency (requirements-view.txt)

        self.app.server.state.current_nodule = ""
        v3.VListSubheader(f"Nodules — exam Lung-RADS {self.exam_lung_rads or '?'}")
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
                        html.Td(str(row["tracking_id"]))
                        html.Td(str(row.get("status", "")))
                        html.Td(str(row.get("lung_rads") or ""))
                        html.Td(f"{change:+.0f} %" if isinstance(change, (int, float)) else "")
                        html.Td(f"{vdt:.0f} d" if isinstance(vdt, (int, float)) else "")
