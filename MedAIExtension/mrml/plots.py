"""Nodule volume over time as a Slicer plot: a table node with the numbers and a chart with one series per nodule.

The table has one x column (time, e.g. days since baseline) holding every time point of every nodule, sorted, and
one double column per nodule named by its tracking id; a cell is NaN where that nodule was not seen at that time
(new, resolved or missed). Each nodule has a ``vtkMRMLPlotSeriesNode`` of scatter type (x from the x column, so
uneven intervals are drawn to scale) with a solid line and circle markers; Slicer's plot view breaks the line at
NaN cells. The chart refers to the table with the node reference role :data:`TABLE_REFERENCE_ROLE`, so calling
:func:`volume_over_time_chart` again with ``node=chart`` updates the same table and series nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.mrml._vtk import added_to_scene

__all__ = ["NODULE_COLORS", "TABLE_REFERENCE_ROLE", "chart_series", "volume_over_time_chart"]

#: Node reference role from the chart node to its table node.
TABLE_REFERENCE_ROLE = "MedAI.VolumeTable"
#: Default nodule colours (RGB 0..1), used in the order of the series mapping; repeats after the last.
NODULE_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.30, 0.24),
    (0.20, 0.55, 0.85),
    (0.30, 0.70, 0.30),
    (0.95, 0.65, 0.15),
    (0.60, 0.40, 0.75),
    (0.10, 0.70, 0.70),
    (0.85, 0.45, 0.65),
    (0.55, 0.55, 0.20),
)


def _check_series(series: Mapping[str, Sequence[tuple[float, float]]], x_title: str) -> dict[str, dict[float, float]]:
    if not isinstance(x_title, str) or not x_title.strip():
        raise InputError(f"The x axis title {x_title!r} is empty; pass a title such as 'Days since baseline'.")
    if not isinstance(series, Mapping) or not series:
        raise InputError(
            "There is no nodule to plot; pass a mapping of tracking id to [(time, volume), ...] with at least one "
            "nodule."
        )
    checked: dict[str, dict[float, float]] = {}
    for nodule_id, samples in series.items():
        if not isinstance(nodule_id, str) or not nodule_id.strip():
            raise InputError(f"The series key {nodule_id!r} is not a tracking id; key every series by its id (N1…).")
        if nodule_id == x_title:
            raise InputError(
                f"The tracking id {nodule_id!r} equals the x column title; rename the nodule or the x axis."
            )
        try:
            samples = [] if isinstance(samples, (str, bytes)) else list(samples)
        except TypeError:
            samples = []
        if not samples:
            raise InputError(f"Nodule {nodule_id} has no (time, volume) sample; leave it out or add its measurements.")
        values: dict[float, float] = {}
        for sample in samples:
            try:
                time, volume = (float(v) for v in sample)
            except (TypeError, ValueError):
                raise InputError(
                    f"Nodule {nodule_id} has the sample {sample!r}, not a (time, volume) pair of numbers."
                ) from None
            if not (math.isfinite(time) and math.isfinite(volume)):
                raise InputError(
                    f"Nodule {nodule_id} has the sample ({time}, {volume}), which is not finite; "
                    "leave out time points without a measurement."
                )
            if time in values:
                raise InputError(f"Nodule {nodule_id} has two volumes at time {time:g}; pass one per time point.")
            values[time] = volume
        checked[nodule_id] = values
    return checked


def _check_colors(
    nodule_ids: Sequence[str], colors: Mapping[str, Sequence[float]] | None
) -> dict[str, tuple[float, float, float]]:
    result: dict[str, tuple[float, float, float]] = {}
    for number, nodule_id in enumerate(nodule_ids):
        color = (colors or {}).get(nodule_id)
        if color is None:
            result[nodule_id] = NODULE_COLORS[number % len(NODULE_COLORS)]
            continue
        try:
            rgb = tuple(float(c) for c in color)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) != 3 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in rgb):
            raise InputError(f"The colour {color!r} of {nodule_id} is not three values in 0..1; pass (r, g, b).")
        result[nodule_id] = rgb
    return result


def _check_chart(scene: Any, node: Any | None) -> Any | None:
    """The table node of an existing chart (``None`` when there is none yet), after checking the chart."""
    if node is None:
        return None
    if not node.IsA("vtkMRMLPlotChartNode"):
        raise InputError(f"Cannot draw the volume chart in a {node.GetClassName()}; pass a plot chart node or None.")
    if node.GetScene() is not scene:
        raise InputError(f"The chart {node.GetName()!r} is not in this scene; pass a chart of this scene or None.")
    table = node.GetNodeReference(TABLE_REFERENCE_ROLE)
    if table is not None and not table.IsA("vtkMRMLTableNode"):
        raise InputError(f"The chart {node.GetName()!r} refers to a {table.GetClassName()} as its table; pass None.")
    return table


def _table(x_title: str, times: list[float], checked: dict[str, dict[float, float]]) -> Any:
    from vtkmodules.vtkCommonCore import vtkDoubleArray
    from vtkmodules.vtkCommonDataModel import vtkTable

    table = vtkTable()
    columns = {x_title: times} | {
        nodule_id: [values.get(time, math.nan) for time in times] for nodule_id, values in checked.items()
    }
    for column_name, column_values in columns.items():
        array = vtkDoubleArray()
        array.SetName(column_name)
        for value in column_values:
            array.InsertNextValue(value)
        table.AddColumn(array)
    return table


def volume_over_time_chart(
    scene: Any,
    series: Mapping[str, Sequence[tuple[float, float]]],
    name: str,
    x_title: str = "Days since baseline",
    y_title: str = "Volume (mm³)",
    colors: Mapping[str, tuple[float, float, float]] | None = None,
    node: Any | None = None,
) -> tuple[Any, Any]:
    """Create (or update) a chart of nodule volume over time, one line-and-markers series per nodule.

    Every input is checked before the scene is touched, so an error leaves the scene (and ``node``) unchanged.

    Args:
        scene: the ``vtkMRMLScene``.
        series: tracking id -> ``[(time, volume), ...]`` (any order, one volume per time point, finite numbers).
            Series and table columns follow the mapping's order.
        name: name of the chart node; the table node is ``"<name> table"``.
        x_title: x axis title, also the name of the table's time column.
        y_title: y axis title.
        colors: tracking id -> ``(r, g, b)`` in 0..1; nodules not in it take :data:`NODULE_COLORS` in order.
        node: a chart made by this function to update in place: its table is refilled, the series of nodules
            still present are updated, new ones added and those of nodules no longer present removed.

    Returns:
        ``(chart node, table node)``, both in ``scene``: a ``vtkMRMLPlotChartNode`` with axis titles and a legend,
        and the ``vtkMRMLTableNode`` it plots.

    Raises:
        InputError: no nodule, a nodule without samples, a non-finite or duplicated time point, a tracking id
            equal to ``x_title``, a bad colour, or a ``node`` that is not a chart of this scene.
    """
    import slicer

    table_node = _check_chart(scene, node)
    checked = _check_series(series, x_title)
    rgb = _check_colors(list(checked), colors)
    times = sorted({time for values in checked.values() for time in values})
    table = _table(x_title, times, checked)

    created: list[Any] = []
    try:
        if table_node is None:
            table_node = _add(scene, slicer.vtkMRMLTableNode(), created)
        table_node.SetName(f"{name} table")
        table_node.SetAndObserveTable(table)
        table_node.SetColumnDescription(x_title, "Time of the scan")
        for nodule_id in checked:
            table_node.SetColumnDescription(nodule_id, f"{y_title} of nodule {nodule_id}; empty where it was not seen")

        chart = node if node is not None else _add(scene, slicer.vtkMRMLPlotChartNode(), created)
        was_modifying = chart.StartModify()
        try:
            chart.SetName(name)
            chart.SetTitle(name)
            chart.SetXAxisTitle(x_title)
            chart.SetYAxisTitle(y_title)
            chart.SetLegendVisibility(True)
            chart.SetNodeReferenceID(TABLE_REFERENCE_ROLE, table_node.GetID())
            _update_series(scene, chart, table_node, x_title, rgb, created)
        finally:
            chart.EndModify(was_modifying)
    except BaseException:
        for added in reversed(created):
            if added.GetScene() is scene:
                scene.RemoveNode(added)
        raise
    return chart, table_node


def _add(scene: Any, new_node: Any, created: list[Any]) -> Any:
    with added_to_scene(scene, new_node) as added:
        created.append(added)
    return added


def _update_series(
    scene: Any,
    chart: Any,
    table_node: Any,
    x_title: str,
    rgb: dict[str, tuple[float, float, float]],
    created: list[Any],
) -> None:
    import slicer

    existing: dict[str, Any] = {}
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series_node = chart.GetNthPlotSeriesNode(index)
        if series_node is not None:
            existing.setdefault(series_node.GetYColumnName(), series_node)
    chart.RemoveAllPlotSeriesNodeIDs()
    for nodule_id, color in rgb.items():
        series_node = existing.pop(nodule_id, None)
        if series_node is None:
            series_node = _add(scene, slicer.vtkMRMLPlotSeriesNode(), created)
        series_node.SetName(nodule_id)
        series_node.SetAndObserveTableNodeID(table_node.GetID())
        series_node.SetXColumnName(x_title)
        series_node.SetYColumnName(nodule_id)
        series_node.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series_node.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        series_node.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series_node.SetColor(color)
        chart.AddAndObservePlotSeriesNodeID(series_node.GetID())
    for stale in existing.values():
        if stale.GetScene() is scene:
            scene.RemoveNode(stale)


def chart_series(chart_node: Any) -> dict[str, list[tuple[float, float]]]:
    """Read a chart back as tracking id -> ``[(time, volume), ...]`` from the table columns its series plot.

    Rows where the series' x or y cell is NaN (nodule not seen) are left out, so for a chart made by
    :func:`volume_over_time_chart` this returns its ``series`` argument sorted by time.

    Raises:
        InputError: not a chart node, or a series has no table or its columns are missing.
    """
    if chart_node is None or not chart_node.IsA("vtkMRMLPlotChartNode"):
        kind = "None" if chart_node is None else chart_node.GetClassName()
        raise InputError(f"Expected a plot chart node, got {kind}; select a chart.")
    result: dict[str, list[tuple[float, float]]] = {}
    for index in range(chart_node.GetNumberOfPlotSeriesNodes()):
        series_node = chart_node.GetNthPlotSeriesNode(index)
        table_node = series_node.GetTableNode() if series_node is not None else None
        if table_node is None or table_node.GetTable() is None:
            raise InputError(f"Series {index} of the chart {chart_node.GetName()!r} has no table; recreate the chart.")
        table = table_node.GetTable()
        columns = []
        for column_name in (series_node.GetXColumnName(), series_node.GetYColumnName()):
            column = table.GetColumnByName(column_name)
            if column is None:
                raise InputError(
                    f"The table {table_node.GetName()!r} has no column {column_name!r} for the series "
                    f"{series_node.GetName()!r}; recreate the chart."
                )
            columns.append(np.array([column.GetVariantValue(row).ToDouble() for row in range(table.GetNumberOfRows())]))
        x, y = columns
        keep = np.isfinite(x) & np.isfinite(y)
        result[series_node.GetName()] = [(float(a), float(b)) for a, b in zip(x[keep], y[keep], strict=True)]
    return result
