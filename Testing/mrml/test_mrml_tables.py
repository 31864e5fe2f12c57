"""Segment statistics from the label map and their table node."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from vtkmodules.vtkCommonCore import VTK_DOUBLE, VTK_INT, VTK_STRING

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.mrml import labelmap_to_segmentation_node, segment_statistics, statistics_to_table_node


def test_statistics_values(scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...]) -> None:
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    rows = segment_statistics(node, labelmap, labels)
    voxel_mm3 = abs(np.linalg.det(labelmap.ijk_to_ras[:3, :3]))
    assert [row["label"] for row in rows] == [1, 2, 5, 7]
    assert [row["name"] for row in rows] == [label.name for label in labels]
    for row in rows:
        expected = int(np.count_nonzero(labelmap.array == row["label"]))
        assert row["voxel_count"] == expected
        assert row["volume_ml"] == pytest.approx(expected * voxel_mm3 / 1000.0, rel=1e-12)
    assert rows[-1]["voxel_count"] == 0
    assert rows[-1]["volume_ml"] == 0.0
    assert sum(row["voxel_count"] for row in rows) == np.count_nonzero(labelmap.array)


def test_statistics_known_volume() -> None:
    """A 2 x 3 x 4 block of 0.5 x 0.5 x 2 mm voxels: 24 voxels of 0.5 mm³ = 0.012 mL."""
    array = np.zeros((5, 5, 5), dtype=np.uint8)
    array[1:3, 1:4, 0:4] = 3
    labelmap = Image(array=array, ijk_to_ras=np.diag([-0.5, -0.5, 2.0, 1.0]))
    (row,) = segment_statistics(None, labelmap, [SegmentLabel(3, "Block", (1.0, 0.0, 0.0))])
    assert row == {"label": 3, "name": "Block", "voxel_count": 24, "volume_ml": pytest.approx(0.012)}


def test_statistics_use_current_segment_names(scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...]) -> None:
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    node.GetSegmentation().GetSegment("Segment_2").SetName("Spleen (edited)")
    rows = segment_statistics(node, labelmap, labels)
    assert rows[1]["name"] == "Spleen (edited)"


def test_table_node_columns(scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...]) -> None:
    rows = segment_statistics(None, labelmap, labels)
    before = scene.GetNumberOfNodes()
    node = statistics_to_table_node(scene, rows, "Statistics")
    assert node.GetScene() is scene
    assert node.GetName() == "Statistics"
    assert scene.GetNumberOfNodes() == before + 1
    table = node.GetTable()
    assert [table.GetColumnName(n) for n in range(table.GetNumberOfColumns())] == [
        "Segment",
        "Label",
        "Voxel count",
        "Volume [mL]",
    ]
    assert [node.GetColumnType(name) for name in ("Segment", "Label", "Voxel count", "Volume [mL]")] == [
        VTK_STRING,
        VTK_INT,
        VTK_INT,
        VTK_DOUBLE,
    ]
    assert [
        table.GetColumnByName(name).GetClassName() for name in ("Segment", "Label", "Voxel count", "Volume [mL]")
    ] == [
        "vtkStringArray",
        "vtkIntArray",
        "vtkIntArray",
        "vtkDoubleArray",
    ]
    assert node.GetNumberOfRows() == len(rows)
    for number, row in enumerate(rows):
        assert node.GetCellText(number, 0) == row["name"]
        assert table.GetValueByName(number, "Label").ToInt() == row["label"]
        assert table.GetValueByName(number, "Voxel count").ToInt() == row["voxel_count"]
        assert table.GetValueByName(number, "Volume [mL]").ToDouble() == pytest.approx(row["volume_ml"])
    assert node.GetColumnUnitLabel("Volume [mL]") == "mL"


def test_bad_rows_raise_before_touching_scene(scene: Any) -> None:
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="voxel_count"):
        statistics_to_table_node(scene, [{"label": 1, "name": "Liver", "volume_ml": 1.0}], "Statistics")
    assert scene.GetNumberOfNodes() == before
