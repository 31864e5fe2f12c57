"""Putting a tracking result into a Slicer scene: segmentations, fiducials, table, volume chart, transform.

Works from the files :func:`~MedAIExtension.tracking.outputs.write_tracking_outputs` wrote (tracking.json, the
per-study label maps, the transform), so the Slicer module can run the tracking in a worker process and load
the result on the main thread. The scene is passed in; nothing here touches Slicer's application globals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.mrml import (
    labelmap_to_segmentation_node,
    linear_transform_node,
    nodule_fiducials_node,
    rows_to_table_node,
    sitk_transform_node,
    volume_over_time_chart,
)

__all__ = ["TABLE_COLUMNS", "TrackingNodes", "load_tracking_into_scene", "read_tracking_document"]

_CATEGORY = CodedTerm("49755003", "SCT", "Morphologically Altered Structure")
_TYPE = CodedTerm("27925004", "SCT", "Nodule")

#: Table column title -> (row key in tracking.json, type) of the longitudinal table node.
TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "Nodule": ("tracking_id", "string"),
    "Status": ("status", "string"),
    "Type": ("kind", "string"),
    "Finding": ("finding", "string"),
    "Location": ("location", "string"),
    "Volume baseline [mm3]": ("baseline_volume_mm3", "double"),
    "Volume follow-up [mm3]": ("followup_volume_mm3", "double"),
    "Volume change [%]": ("volume_change_percent", "double"),
    "VDT [days]": ("vdt_days", "double"),
    "Mean diameter baseline [mm]": ("baseline_mean_diameter_mm", "double"),
    "Mean diameter follow-up [mm]": ("followup_mean_diameter_mm", "double"),
    "Long axis follow-up [mm]": ("followup_long_axis_mm", "double"),
    "Short axis follow-up [mm]": ("followup_short_axis_mm", "double"),
    "Lung-RADS": ("lung_rads", "string"),
    "Reason": ("lung_rads_reason", "string"),
    "Growth": ("growth", "string"),
    "Lung-RADS baseline": ("baseline_lung_rads", "string"),
    "Management": ("management", "string"),
    "NELSON": ("nelson", "string"),
    "Borderline": ("borderline", "string"),
    "Tracking UID": ("tracking_uid", "string"),
}


@dataclass
class TrackingNodes:
    """The MRML nodes made for one tracking result."""

    baseline_segmentation: Any
    followup_segmentation: Any
    baseline_fiducials: Any
    followup_fiducials: Any
    table: Any
    chart: Any
    chart_table: Any
    transform: Any
    rows: list[dict[str, Any]] = field(default_factory=list)

    def position(self, tracking_id: str, timepoint: str = "baseline") -> np.ndarray | None:
        """RAS centre of a nodule in ``"baseline"`` or ``"followup"`` (None when absent there)."""
        for row in self.rows:
            if row["tracking_id"] == tracking_id and row.get(f"{timepoint}_center_ras"):
                return np.asarray(row[f"{timepoint}_center_ras"], dtype=float)
        return None

    def nodes(self) -> list[Any]:
        """Every node, for removing them together."""
        items = (
            self.baseline_segmentation,
            self.followup_segmentation,
            self.baseline_fiducials,
            self.followup_fiducials,
            self.table,
            self.chart,
            self.chart_table,
            self.transform,
        )
        return [node for node in items if node is not None]


def read_tracking_document(output_dir: str | Path) -> dict[str, Any]:
    """tracking.json of a tracking output folder."""
    path = Path(output_dir) / "tracking.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path} ({exc}); give a folder written by 'medai track'.") from None
    if not isinstance(document, dict) or "nodules" not in document or "summary" not in document:
        raise InputError(f"{path} is not a MedAI tracking result; give a folder written by 'medai track'.")
    return document


def _label(row: dict[str, Any]) -> SegmentLabel:
    number = int(str(row["tracking_id"]).lstrip("N"))
    return SegmentLabel(number, row["tracking_id"], tuple(row["color"]), _CATEGORY, _TYPE)


def load_tracking_into_scene(
    scene: Any,
    output_dir: str | Path,
    baseline_volume_node: Any | None = None,
    followup_volume_node: Any | None = None,
) -> TrackingNodes:
    """Create the nodes of a tracking result in ``scene``; on any error the nodes made so far are removed.

    Segments have the same name (tracking id) and colour in both studies. The transform node maps follow-up
    RAS to baseline RAS (place the follow-up volume under it to see both aligned); it is not applied to anything.
    """
    folder = Path(output_dir)
    document = read_tracking_document(folder)
    rows = [dict(row, kind=row.get("followup_kind") or row.get("baseline_kind")) for row in document["nodules"]]
    summary = document["summary"]
    made: list[Any] = []
    try:
        segmentations, fiducials = {}, {}
        for timepoint, volume in (("baseline", baseline_volume_node), ("followup", followup_volume_node)):
            present = [row for row in rows if row.get(f"{timepoint}_volume_mm3") is not None]
            labelmap = read_volume_file(folder / f"{timepoint}_nodules.nii.gz")
            title = "Baseline" if timepoint == "baseline" else "Follow-up"
            segmentations[timepoint] = labelmap_to_segmentation_node(
                scene, labelmap, [_label(row) for row in present], f"{title} nodules", volume
            )
            made.append(segmentations[timepoint])
            points = [(row["tracking_id"], row[f"{timepoint}_center_ras"]) for row in present]
            fiducials[timepoint] = nodule_fiducials_node(scene, points, f"{title} nodule centres")
            made.append(fiducials[timepoint])
        table = rows_to_table_node(scene, rows, TABLE_COLUMNS, "Nodule tracking")
        made.append(table)
        interval = float(summary["interval_days"])
        series = {}
        for row in rows:
            points = [
                (days, row[key])
                for days, key in ((0.0, "baseline_volume_mm3"), (interval, "followup_volume_mm3"))
                if row.get(key) is not None
            ]
            if points:
                series[row["tracking_id"]] = points
        chart = chart_table = None
        if series:
            colors = {row["tracking_id"]: tuple(row["color"]) for row in rows}
            chart, chart_table = volume_over_time_chart(scene, series, "Nodule volumes", colors=colors)
            made += [chart, chart_table]
        tfm = folder / "followup_to_baseline.tfm"
        if summary["registration"].get("deformable") and tfm.is_file():
            import SimpleITK as sitk

            transform = sitk_transform_node(scene, sitk.ReadTransform(str(tfm)), "Follow-up to baseline")
        else:
            matrix = np.asarray(summary["registration"]["followup_to_baseline_ras"], dtype=float)
            transform = linear_transform_node(scene, matrix, "Follow-up to baseline")
        made.append(transform)
    except BaseException as exc:
        for node in made:
            if node is not None and scene.IsNodePresent(node):
                scene.RemoveNode(node)
        if isinstance(exc, (KeyError, TypeError, ValueError, OSError)):
            raise InputError(
                f"The tracking result in {folder} is incomplete or damaged ({type(exc).__name__}: {exc}); "
                "run 'medai track' again into an empty folder."
            ) from None
        raise
    return TrackingNodes(
        segmentations["baseline"],
        segmentations["followup"],
        fiducials["baseline"],
        fiducials["followup"],
        table,
        chart,
        chart_table,
        transform,
        rows,
    )
