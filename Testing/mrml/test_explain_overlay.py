"""Explanation maps in a real headless MRML scene: the heat overlay (mrml/overlays.py) and a whole result folder
loaded by MedAIExtension.explain.scene, on every acquisition geometry, with and without slice views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer

from MedAIExtension.errors import InputError
from MedAIExtension.explain.scene import UNCERTAINTY_COLUMNS, load_explanation_into_scene, sanity_summary
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.mrml import image_to_volume_node, volume_node_to_image
from MedAIExtension.mrml.overlays import (
    HEAT_COLOR_NODE_ID,
    HEAT_COLOR_SINGLETON_TAG,
    heat_color_node,
    set_overlay_opacity,
    show_map_overlay,
)
from Testing.mrml.conftest import SHAPE


def _slice_views(scene: Any, count: int = 3) -> list[Any]:
    """The slice composite nodes a Slicer layout makes (Red, Yellow, Green)."""
    views = []
    for name in ("Red", "Yellow", "Green")[:count]:
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        views.append(scene.AddNode(composite))
    return views


def _heat(ct: Image, rng: np.random.Generator) -> Image:
    """A float map on the CT grid with a hot spot at one known voxel."""
    array = rng.uniform(0.0, 0.3, size=ct.shape).astype(np.float32)
    array[2, 3, 4] = 1.0
    return ct.with_array(array)


# ---- the overlay -------------------------------------------------------------------------------------------------
def test_map_lies_on_the_input_grid_under_a_heat_table_with_window_and_threshold(scene, ct, rng) -> None:
    background = image_to_volume_node(scene, ct, "CT")
    views = _slice_views(scene)
    heat = _heat(ct, rng)
    node = show_map_overlay(scene, heat, "Grad-CAM", background_node=background, window=(0.0, 0.8), threshold=0.25)
    back = volume_node_to_image(node)
    assert back.array.dtype == np.float32 and np.array_equal(back.array, heat.array)
    np.testing.assert_allclose(back.ijk_to_ras, ct.ijk_to_ras, atol=1e-9)
    display = node.GetDisplayNode()
    assert display.GetColorNodeID() == HEAT_COLOR_NODE_ID  # Slicer's PET-Heat: the colour logic made it
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 0.8))
    assert display.GetApplyThreshold() and not display.GetAutoThreshold()
    assert display.GetLowerThreshold() == pytest.approx(0.25)
    assert display.GetUpperThreshold() > heat.array.max()  # nothing above the window is hidden
    for view in views:
        assert view.GetBackgroundVolumeID() == background.GetID()
        assert view.GetForegroundVolumeID() == node.GetID()
        assert view.GetForegroundOpacity() == pytest.approx(0.5)


def test_default_window_is_the_map_range_and_threshold_a_fifth_into_it(scene, ct, rng) -> None:
    heat = ct.with_array(np.linspace(-1.0, 3.0, num=int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE))
    display = show_map_overlay(scene, heat, "IG").GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((-1.0, 3.0))
    assert display.GetLowerThreshold() == pytest.approx(-1.0 + 0.2 * 4.0)


def test_a_scene_without_views_gets_the_node_and_no_layer_changes(scene, ct, rng) -> None:
    node = show_map_overlay(scene, _heat(ct, rng), "map", opacity=0.9)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode") == 0
    assert node.GetScene() is scene and set_overlay_opacity(scene, 0.3) == 0


def test_a_bare_scene_gets_one_medai_heat_table_reused_by_every_map(rng) -> None:
    scene = slicer.vtkMRMLScene()  # no colour logic: no colour nodes at all
    try:
        ct = Image(rng.normal(size=SHAPE).astype(np.float32), np.diag([0.7, 0.8, 2.5, 1.0]))
        first = show_map_overlay(scene, _heat(ct, rng), "first")
        second = show_map_overlay(scene, _heat(ct, rng), "second")
        tables = [
            scene.GetNthNodeByClass(i, "vtkMRMLColorNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorNode"))
        ]
        assert len(tables) == 1 and tables[0].GetSingletonTag() == HEAT_COLOR_SINGLETON_TAG
        assert first.GetDisplayNode().GetColorNodeID() == second.GetDisplayNode().GetColorNodeID() == tables[0].GetID()
        assert heat_color_node(scene) is tables[0]
        lookup = tables[0].GetLookupTable()
        dark, hot = lookup.GetTableValue(0), lookup.GetTableValue(lookup.GetNumberOfTableValues() - 1)
        assert sum(dark[:3]) < 0.05 and min(hot[:3]) > 0.95  # black (cold) to white (hottest)
        middle = lookup.GetTableValue(lookup.GetNumberOfTableValues() // 2)
        assert middle[0] > middle[1] > middle[2]  # red/orange in between
    finally:
        scene.Clear(True)


def test_opacity_follows_the_slider_and_bad_values_are_refused(scene, ct, rng) -> None:
    views = _slice_views(scene, 2)
    show_map_overlay(scene, _heat(ct, rng), "map")
    assert set_overlay_opacity(scene, 0.8) == 2
    assert [view.GetForegroundOpacity() for view in views] == pytest.approx([0.8, 0.8])
    with pytest.raises(InputError, match=r"0\.\.1"):
        set_overlay_opacity(scene, 1.5)
    assert [view.GetForegroundOpacity() for view in views] == pytest.approx([0.8, 0.8])


def test_bad_requests_leave_the_scene_unchanged(scene, ct, rng) -> None:
    views = _slice_views(scene, 1)
    before = scene.GetNumberOfNodes()
    heat = _heat(ct, rng)
    with pytest.raises(InputError, match="colour table"):
        show_map_overlay(scene, heat, "map", colormap="no such table")
    with pytest.raises(InputError, match="low < high"):
        show_map_overlay(scene, heat, "map", window=(1.0, 1.0))
    with pytest.raises(InputError, match="opacity"):
        show_map_overlay(scene, heat, "map", opacity=-0.1)
    other = slicer.vtkMRMLScene()
    foreign = other.AddNode(slicer.vtkMRMLScalarVolumeNode())
    with pytest.raises(InputError, match="background"):
        show_map_overlay(scene, heat, "map", background_node=foreign)
    assert scene.GetNumberOfNodes() == before and not views[0].GetForegroundVolumeID()


def test_a_map_file_and_an_existing_node_are_accepted(scene, ct, rng, tmp_path: Path) -> None:
    heat = _heat(ct, rng)
    path = write_volume_file(heat, tmp_path / "map.nrrd")
    node = show_map_overlay(scene, path, "from file", colormap="Iron")
    np.testing.assert_allclose(volume_node_to_image(node).array, heat.array, atol=1e-6)
    assert node.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeIron"
    again = show_map_overlay(scene, heat.with_array(heat.array * 2), "second run", node=node)
    assert again is node and node.GetName() == "second run"
    assert volume_node_to_image(node).array.max() == pytest.approx(2.0)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1


# ---- a result folder -----------------------------------------------------------------------------------------
SEGMENTS = [
    {"value": 1, "name": "Liver", "voxels": 0, "volume_ml": 0.0, "mean_entropy": 0.12, "p95_entropy": 0.4},
    {"value": 2, "name": "Spleen", "voxels": 0, "volume_ml": 0.0, "mean_entropy": 0.31, "p95_entropy": 0.62},
]


def _write_result(folder: Path, heat: Image, labelmap: Image | None = None, **changes: Any) -> Path:
    """An explanation output folder as explain_to_folder writes it: explanation.json + the files it lists."""
    folder.mkdir(parents=True, exist_ok=True)
    write_volume_file(heat, folder / "ct_gradcam.nrrd")
    document: dict[str, Any] = {
        "method": "gradcam",
        "method_title": "Grad-CAM",
        "model": {"name": "test-model", "version": "1", "backend": "torchscript", "provider": "cpu"},
        "target": {"value": 1, "name": "Nodule", "channel": 0},
        "roi": None,
        "input": "ct.nrrd",
        "files": {"map_nrrd": "ct_gradcam.nrrd"},
        "display": {"window": [0.0, 1.0], "threshold": 0.3, "colormap": "heat", "opacity": 0.6, "unit": "a.u."},
        "sanity": {
            "randomisation": {"passed": True, "summary": "The map changed when the model was randomised (r=0.12)."},
            "faithfulness": {"summary": "Deleting the hottest voxels first lowers the score fastest."},
        },
        "uncertainty": None,
        "notes": ["Synthetic test result."],
        "seconds": 0.5,
    }
    if labelmap is not None:
        write_volume_file(labelmap, folder / "ct_segmentation.nrrd")
        counts = {value: int(np.count_nonzero(labelmap.array == value)) for value in (1, 2)}
        segments = [dict(segment, voxels=counts[segment["value"]]) for segment in SEGMENTS]
        document.update(
            method="uncertainty",
            method_title="Predictive entropy",
            uncertainty={"segments": segments, "unit": "nats"},
            sanity={},
        )
        document["files"]["labelmap"] = "ct_segmentation.nrrd"
    document.update(changes)
    (folder / "explanation.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


def test_a_gradcam_result_becomes_an_overlay_with_its_sanity_checks(scene, ct, rng, tmp_path: Path) -> None:
    background = image_to_volume_node(scene, ct, "CT")
    views = _slice_views(scene)
    heat = _heat(ct, rng)
    nodes = load_explanation_into_scene(scene, _write_result(tmp_path / "out", heat), background)
    assert nodes.table is None and nodes.segmentation is None
    assert nodes.map.GetName() == "CT Grad-CAM (Nodule)"
    np.testing.assert_allclose(volume_node_to_image(nodes.map).ijk_to_ras, ct.ijk_to_ras, atol=1e-6)
    assert np.array_equal(volume_node_to_image(nodes.map).array, heat.array)
    assert nodes.map.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.3)
    assert all(view.GetForegroundOpacity() == pytest.approx(0.6) for view in views)
    assert all(view.GetBackgroundVolumeID() == background.GetID() for view in views)
    assert "randomisation test PASSED" in nodes.sanity_summary and "hottest voxels" in nodes.sanity_summary
    assert nodes.document["notes"] == ["Synthetic test result."] and nodes.folder == tmp_path / "out"


def test_an_uncertainty_result_adds_its_segmentation_and_table(scene, ct, labelmap, rng, tmp_path: Path) -> None:
    background = image_to_volume_node(scene, ct, "CT")
    labels = labelmap.with_array(np.where(labelmap.array == 5, 0, labelmap.array).astype(np.uint8))
    nodes = load_explanation_into_scene(scene, _write_result(tmp_path / "u", _heat(ct, rng), labels), background)
    segmentation = nodes.segmentation.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == [
        "Liver",
        "Spleen",
    ]
    table = nodes.table
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == list(UNCERTAINTY_COLUMNS)
    assert table.GetNumberOfRows() == 2
    assert int(table.GetCellText(1, 2)) == int(np.count_nonzero(labels.array == 2)) > 0
    assert float(table.GetCellText(1, 4)) == pytest.approx(0.31)
    assert table.GetColumnUnitLabel("Mean uncertainty") == "nats"
    assert nodes.sanity_summary == "No sanity checks were run for this map."
    assert len(nodes.nodes()) == 3


@pytest.mark.parametrize(
    "damage",
    ["no json", "not json", "not a result", "map missing", "label without segment", "bad segment row"],
)
def test_a_damaged_result_is_refused_and_leaves_the_scene_unchanged(
    damage: str, scene, ct, labelmap, rng, tmp_path: Path
) -> None:
    background = image_to_volume_node(scene, ct, "CT")
    views = _slice_views(scene, 1)
    folder = _write_result(tmp_path / "r", _heat(ct, rng), labelmap)  # labelmap holds 5: no segment describes it
    if damage != "label without segment":
        clean = labelmap.with_array(np.where(labelmap.array == 5, 0, labelmap.array).astype(np.uint8))
        _write_result(folder, _heat(ct, rng), clean)
    document = json.loads((folder / "explanation.json").read_text(encoding="utf-8"))
    if damage == "no json":
        (folder / "explanation.json").unlink()
    elif damage == "not json":
        (folder / "explanation.json").write_text("{ half a document", encoding="utf-8")
    elif damage == "not a result":
        (folder / "explanation.json").write_text(json.dumps({"nodules": []}), encoding="utf-8")
    elif damage == "map missing":
        (folder / "ct_gradcam.nrrd").unlink()
    elif damage == "bad segment row":
        del document["uncertainty"]["segments"][1]["voxels"]
        (folder / "explanation.json").write_text(json.dumps(document), encoding="utf-8")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError) as error:
        load_explanation_into_scene(scene, folder, background)
    assert "medai explain" in str(error.value) or "add a SegmentLabel" in str(error.value)
    assert scene.GetNumberOfNodes() == before and not views[0].GetForegroundVolumeID()


def test_sanity_summary_says_failed_in_words() -> None:
    text = sanity_summary({"sanity": {"randomisation": {"passed": False, "summary": "The map barely changed."}}})
    assert text == "Model randomisation test FAILED: The map barely changed."
