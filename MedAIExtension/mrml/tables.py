"""Per-segment statistics of a label map and their MRML table node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel, label_statistics
from MedAIExtension.mrml._vtk import added_to_scene
from MedAIExtension.mrml.segmentations import segment_label_values

__all__ = ["STATISTICS_COLUMNS", "rows_to_table_node", "segment_statistics", "statistics_to_table_node"]

#: Table column name -> (row key, value type) written by :func:`statistics_to_table_node`.
STATISTICS_COLUMNS: dict[str, tuple[str, str]] = {
    "Segment": ("name", "string"),
    "Label": ("label", "int"),
    "Voxel count": ("voxel_count", "int"),
    "Volume [mL]": ("volume_ml", "double"),
}


def segment_statistics(
    segmentation_node: Any | None, labelmap: Image, labels: Sequence[SegmentLabel]
) -> list[dict[str, Any]]:
    """Voxel count and volume of every label in a label map.

    Args:
        segmentation_node: the segmentation node made from ``labelmap``, or ``None``. When given, each row takes
            the *current* name of the segment with that label value (the user may have renamed it in Slicer).
        labelmap: integer label map; its affine gives the voxel volume.
        labels: the labels to report, in this order (also those with no voxel: count 0).

    Returns:
        One dict per label: ``label`` (int), ``name`` (str), ``voxel_count`` (int) and ``volume_ml``
        (float, ``voxel_count * voxel volume in mm³ / 1000``).
    """
    names: dict[int, str] = {}
    if segmentation_node is not None:
        segmentation = segmentation_node.GetSegmentation()
        for segment_id, value in segment_label_values(segmentation_node).items():
            names.setdefault(value, segmentation.GetSegment(segment_id).GetName())
    rows = label_statistics(labelmap, labels)
    for row in rows:
        row["name"] = names.get(row["label"], row["name"])
    return rows


def rows_to_table_node(
    scene: Any,
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, tuple[str, str]],
    name: str,
    units: Mapping[str, str] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> Any:
    """Create a table node from ``rows``: ``columns`` maps a column title to (row key, ``string|int|double``).

    A missing or None value becomes an empty string or NaN (``double``); ``int`` columns need a value in every
    row. The node is built completely before it is added, so an error leaves the scene unchanged.

    Raises:
        InputError: a value does not fit its column's type.
    """
    import slicer
    from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkIntArray, vtkStringArray
    from vtkmodules.vtkCommonDataModel import vtkTable

    makers: dict[str, type[vtkStringArray] | type[vtkIntArray] | type[vtkDoubleArray]] = {
        "string": vtkStringArray,
        "int": vtkIntArray,
        "double": vtkDoubleArray,
    }
    table = vtkTable()
    for column, (key, kind) in columns.items():
        array = makers[kind]()
        array.SetName(column)
        for number, row in enumerate(rows):
            value = row.get(key)
            try:
                if isinstance(array, vtkStringArray):
                    array.InsertNextValue("" if value is None else str(value))
                elif isinstance(array, vtkIntArray):
                    if value is None:
                        raise ValueError("int columns need a value in every row")
                    array.InsertNextValue(int(value))
                else:
                    array.InsertNextValue(float("nan") if value is None else float(value))
            except (TypeError, ValueError):
                raise InputError(
                    f"Row {number} has no valid {key!r} ({kind}) for the table column {column!r}."
                ) from None
        table.AddColumn(array)
    node = slicer.vtkMRMLTableNode()
    node.SetName(name)
    node.SetAndObserveTable(table)
    for column, unit in (units or {}).items():
        node.SetColumnUnitLabel(column, unit)
    for column, text in (descriptions or {}).items():
        node.SetColumnDescription(column, text)
    with added_to_scene(scene, node) as added:
        pass
    return added


def statistics_to_table_node(scene: Any, rows: Sequence[Mapping[str, Any]], name: str) -> Any:
    """Create a table node with one row per segment: Segment, Label, Voxel count, Volume [mL].

    Args:
        scene: the ``vtkMRMLScene``.
        rows: rows as returned by :func:`segment_statistics`.
        name: node name shown in Slicer.

    Returns:
        The ``vtkMRMLTableNode``, in ``scene``, with typed columns (string, int, int, double).

    Raises:
        InputError: a row misses a key or holds a value of the wrong type.
    """
    for number, row in enumerate(rows):
        for key, _ in STATISTICS_COLUMNS.values():
            if row.get(key) is None:
                raise InputError(f"Statistics row {number} has no {key!r}; pass rows from segment_statistics.")
    return rows_to_table_node(
        scene,
        rows,
        STATISTICS_COLUMNS,
        name,
        units={"Volume [mL]": "mL"},
        descriptions={
            "Segment": "Segment name",
            "Label": "Voxel value of the segment in the label map",
            "Voxel count": "Number of voxels of the segment",
            "Volume [mL]": "Segment volume: voxel count times voxel volume",
        },
    )
