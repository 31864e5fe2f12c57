"""A tracking result folder loaded into a real MRML scene: segments, fiducials, table, chart, transform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from MedAIExtension.cli import main
from MedAIExtension.errors import InputError
from MedAIExtension.mrml import chart_series, close_scene, create_scene, fiducial_points, transform_matrix
from MedAIExtension.phantom.followup import write_phantom_pair
from MedAIExtension.tracking import load_tracking_into_scene
from Testing.phantoms import SMALL_CHEST_TWO_NODULES

SPEC = SMALL_CHEST_TWO_NODULES


@pytest.fixture(scope="module")
def result_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scene")
    write_phantom_pair(root / "pair", baseline=SPEC, volume_factors=(1.5, 1.0))
    argv = ["track", "--baseline", str(root / "pair/baseline/ct"), "--followup", str(root / "pair/followup/ct")]
    assert main([*argv, "--output", str(root / "out"), "--quiet", "--no-model"]) == 0
    return root / "out"


@pytest.fixture
def scene() -> Any:
    scene = create_scene()
    yield scene
    close_scene(scene)


def _segments(node: Any) -> dict[str, tuple[float, ...]]:
    segmentation = node.GetSegmentation()
    out = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        out[segment.GetName()] = tuple(round(c, 3) for c in segment.GetColor())
    return out


def test_the_scene_gets_every_node_of_the_result(result_folder: Path, scene: Any) -> None:
    document = json.loads((result_folder / "tracking.json").read_text())
    rows = document["nodules"]
    assert [row["status"] for row in rows] == ["persistent", "persistent"]
    nodes = load_tracking_into_scene(scene, result_folder)
    ids = [row["tracking_id"] for row in rows]
    # one segment per nodule, same name and colour in both studies
    assert _segments(nodes.baseline_segmentation) == _segments(nodes.followup_segmentation)
    assert sorted(_segments(nodes.baseline_segmentation)) == sorted(ids)
    for timepoint, fiducials in (("baseline", nodes.baseline_fiducials), ("followup", nodes.followup_fiducials)):
        points = dict(fiducial_points(fiducials))
        assert sorted(points) == sorted(ids)
        for row in rows:
            np.testing.assert_allclose(points[row["tracking_id"]], row[f"{timepoint}_center_ras"], atol=1e-6)
            np.testing.assert_allclose(nodes.position(row["tracking_id"], timepoint), row[f"{timepoint}_center_ras"])
    assert nodes.table.GetNumberOfRows() == len(rows)
    assert [nodes.table.GetCellText(r, 0) for r in range(len(rows))] == ids
    series = chart_series(nodes.chart)
    interval = document["summary"]["interval_days"]
    for row in rows:
        assert series[row["tracking_id"]] == [
            (0.0, pytest.approx(row["baseline_volume_mm3"])),
            (interval, pytest.approx(row["followup_volume_mm3"])),
        ]
    matrix = np.asarray(document["summary"]["registration"]["followup_to_baseline_ras"])
    np.testing.assert_allclose(transform_matrix(nodes.transform), matrix, atol=1e-9)
    # the growing nodule is seen growing in the chart: 1.5x volume
    grown = rows[0]["followup_volume_mm3"] / rows[0]["baseline_volume_mm3"]
    assert grown == pytest.approx(1.5, rel=0.05)


def test_a_folder_without_a_result_leaves_the_scene_unchanged(tmp_path: Path, scene: Any) -> None:
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="medai track"):
        load_tracking_into_scene(scene, tmp_path)
    (tmp_path / "tracking.json").write_text(json.dumps({"summary": {}, "nodules": [{"tracking_id": "N1"}]}))
    with pytest.raises(InputError, match=r"does not exist|incomplete or damaged"):
        load_tracking_into_scene(scene, tmp_path)
    assert scene.GetNumberOfNodes() == before
