"""MRML outputs of nodule tracking in a real scene: nodule points, the follow-up-to-baseline transform, the chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkCommonTransforms import vtkGeneralTransform

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.mrml import close_scene, create_scene, image_to_volume_node, scene_logics
from MedAIExtension.mrml._vtk import numpy_from_matrix
from MedAIExtension.mrml.markups import fiducial_points, nodule_fiducials_node
from MedAIExtension.mrml.plots import NODULE_COLORS, chart_series, volume_over_time_chart
from MedAIExtension.mrml.transforms import (
    linear_transform_node,
    ras_matrix_from_sitk,
    sitk_transform_node,
    transform_matrix,
)

POINTS = [("N1", (12.5, -30.25, 88.0)), ("N2", (-45.0, 10.0, 120.75)), ("N3", (0.0, 0.0, -5.5))]
SERIES = {
    "N1": [(0.0, 250.0), (90.0, 268.5), (365.0, 310.25)],
    "N2": [(365.0, 95.0), (0.0, 80.0)],  # unsorted on purpose
    "N3": [(90.0, 30.0), (365.0, 42.0)],  # new at the first follow-up
}
_FLIP = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS for points


def _lps(point_ras: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(point_ras) * _FLIP]


def _registration_result() -> sitk.Euler3DTransform:
    """A rigid 'registration result': maps baseline LPS points to follow-up LPS points (fixed = baseline)."""
    return sitk.Euler3DTransform((10.0, -20.0, 35.0), 0.08, -0.12, 0.21, (4.5, -7.25, 12.0))


def _to_world(node: Any, point: np.ndarray) -> np.ndarray:
    """Where Slicer shows the point ``point`` (in ``node``'s own frame): through all its parent transforms."""
    transform = vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(node.GetParentTransformNode(), None, transform)
    return np.array(transform.TransformPoint([float(v) for v in point]))


# --- nodule points ------------------------------------------------------------------------------------------------


def test_create_scene_registers_markups_logic() -> None:
    scene = create_scene()
    logics = scene_logics(scene)
    assert logics.markups is not None
    assert logics.application.GetModuleLogic("Markups") is logics.markups
    close_scene(scene)
    assert scene.GetNumberOfNodes() == 0


def test_fiducials_labels_positions_and_lock(scene: Any) -> None:
    before = scene.GetNumberOfNodes()
    node = nodule_fiducials_node(scene, POINTS, "Baseline nodules", color=(1.0, 0.5, 0.0))
    assert node.IsA("vtkMRMLMarkupsFiducialNode")
    assert node.GetScene() is scene
    assert node.GetName() == "Baseline nodules"
    assert scene.GetNumberOfNodes() == before + 2  # the point list and its display node
    read = fiducial_points(node)
    assert [label for label, _ in read] == ["N1", "N2", "N3"]
    for (_, position), (_, expected) in zip(read, POINTS, strict=True):
        np.testing.assert_array_equal(position, expected)
    assert node.GetLocked()
    assert all(node.GetNthControlPointLocked(i) for i in range(node.GetNumberOfControlPoints()))
    display = node.GetDisplayNode()
    assert display.IsA("vtkMRMLMarkupsFiducialDisplayNode")
    np.testing.assert_allclose(display.GetSelectedColor(), (1.0, 0.5, 0.0))
    np.testing.assert_allclose(display.GetColor(), (1.0, 0.5, 0.0))


def test_fiducials_update_in_place(scene: Any) -> None:
    node = nodule_fiducials_node(scene, POINTS, "Nodules")
    node_id = node.GetID()
    before = scene.GetNumberOfNodes()
    updated = nodule_fiducials_node(scene, [("N2", (1.0, 2.0, 3.0)), ("N7", (-4.0, 5.5, 6.0))], "Nodules v2", node=node)
    assert updated is node
    assert updated.GetID() == node_id
    assert scene.GetNumberOfNodes() == before
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode") == 1
    assert [(label, pos.tolist()) for label, pos in fiducial_points(node)] == [
        ("N2", [1.0, 2.0, 3.0]),
        ("N7", [-4.0, 5.5, 6.0]),
    ]
    assert node.GetName() == "Nodules v2"
    assert node.GetLocked()
    assert nodule_fiducials_node(scene, [], "None found", node=node).GetNumberOfControlPoints() == 0


@pytest.mark.parametrize(
    ("points", "color", "message"),
    [
        ([("N1", (1.0, 2.0))], None, "3 coordinates"),
        ([("N1", (1.0, 2.0, 3.0, 4.0))], None, "3 coordinates"),
        ([("N1", (1.0, math.nan, 3.0))], None, "not finite"),
        ([("N1", (1.0, 2.0, math.inf))], None, "not finite"),
        ([("N1", (1.0, 2.0, 3.0)), ("N1", (4.0, 5.0, 6.0))], None, "two points"),
        ([("", (1.0, 2.0, 3.0))], None, "tracking id"),
        ([("N1", "abc")], None, "three numbers|3 coordinates"),
        ([("N1",)], None, "pair"),
        ("N1", None, "sequence"),
        ([("N1", (1.0, 2.0, 3.0))], (1.0, 2.0, 0.0), "colour"),
    ],
)
def test_fiducials_bad_input_leaves_scene_unchanged(scene: Any, points: Any, color: Any, message: str) -> None:
    existing = nodule_fiducials_node(scene, POINTS, "Nodules")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=message):
        nodule_fiducials_node(scene, points, "Bad", color=color)
    with pytest.raises(InputError, match=message):
        nodule_fiducials_node(scene, points, "Bad", color=color, node=existing)
    assert scene.GetNumberOfNodes() == before
    assert existing.GetName() == "Nodules"
    assert [label for label, _ in fiducial_points(existing)] == ["N1", "N2", "N3"]


def test_fiducials_reject_foreign_nodes(scene: Any) -> None:
    with pytest.raises(InputError, match="point list"):
        nodule_fiducials_node(scene, POINTS, "Nodules", node=slicer.vtkMRMLScalarVolumeNode())
    other = create_scene()
    try:
        foreign = nodule_fiducials_node(other, POINTS, "Other")
        with pytest.raises(InputError, match="another scene"):
            nodule_fiducials_node(scene, POINTS, "Nodules", node=foreign)
    finally:
        close_scene(other)
    with pytest.raises(InputError, match="markups node"):
        fiducial_points(slicer.vtkMRMLScalarVolumeNode())


# --- transforms ---------------------------------------------------------------------------------------------------


def test_followup_volume_under_transform_lands_on_baseline(scene: Any, ct: Image) -> None:
    """A follow-up voxel's RAS position is shown at the baseline position the registration matched it to."""
    registration = _registration_result()
    matrix = ras_matrix_from_sitk(registration)
    transform_node = linear_transform_node(scene, matrix, "Follow-up to baseline")
    assert transform_node.IsA("vtkMRMLLinearTransformNode")
    np.testing.assert_allclose(transform_matrix(transform_node), matrix, atol=1e-12)

    followup = image_to_volume_node(scene, ct, "Follow-up CT")
    followup.SetAndObserveTransformNodeID(transform_node.GetID())
    rng = np.random.default_rng(7)
    errors = []
    for _ in range(20):
        baseline_ras = rng.uniform(-150.0, 150.0, 3)
        followup_ras = np.array(registration.TransformPoint(_lps(baseline_ras))) * _FLIP
        errors.append(np.abs(_to_world(followup, followup_ras) - baseline_ras).max())
    # the volume's voxel-to-world matrix (what Slicer renders) is the transform after the volume's own IJK-to-RAS
    to_world = vtkMatrix4x4()
    followup.GetParentTransformNode().GetMatrixTransformToWorld(to_world)
    np.testing.assert_allclose(numpy_from_matrix(to_world), matrix, atol=1e-12)
    voxel = np.array([3.0, 5.0, 2.0, 1.0])
    shown_at = _to_world(followup, (ct.ijk_to_ras @ voxel)[:3])
    np.testing.assert_allclose(shown_at, (matrix @ ct.ijk_to_ras @ voxel)[:3], atol=1e-9)
    print(f"follow-up -> baseline: max error {max(errors):.2e} mm over 20 points")
    assert max(errors) < 1e-9
    # the volume itself is not resampled or hardened: its own geometry is unchanged
    own = vtkMatrix4x4()
    followup.GetIJKToRASMatrix(own)
    np.testing.assert_allclose(numpy_from_matrix(own), ct.ijk_to_ras, atol=1e-9)


def test_matrix_agrees_with_slicers_itk_reader(scene: Any) -> None:
    """Our LPS->RAS and direction handling equals what Slicer does when it loads the ITK transform file."""
    registration = sitk.AffineTransform(3)
    registration.SetMatrix((1.05, 0.02, -0.03, -0.01, 0.97, 0.04, 0.02, -0.05, 1.01))
    registration.SetTranslation((3.0, -8.0, 2.5))
    registration.SetCenter((-12.0, 40.0, 7.0))
    ours = ras_matrix_from_sitk(registration)
    slicers = transform_matrix(sitk_transform_node(scene, registration, "Read by Slicer"))
    print(f"ras_matrix_from_sitk vs Slicer's reader: max difference {np.abs(ours - slicers).max():.2e}")
    np.testing.assert_allclose(ours, slicers, atol=1e-10)


def test_transform_update_in_place_moves_children(scene: Any) -> None:
    first = np.eye(4)
    first[:3, 3] = (10.0, 0.0, 0.0)
    node = linear_transform_node(scene, first, "Registration")
    points = nodule_fiducials_node(scene, POINTS[:1], "Follow-up nodules")
    points.SetAndObserveTransformNodeID(node.GetID())
    r, a, s = POINTS[0][1]
    np.testing.assert_allclose(_to_world(points, np.array(POINTS[0][1])), (r + 10.0, a, s))
    before = scene.GetNumberOfNodes()
    second = np.diag([1.0, 1.0, 1.0, 1.0])
    second[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # 90° about S
    second[:3, 3] = (0.0, 5.0, -2.0)
    updated = linear_transform_node(scene, second, "Registration (refined)", node=node)
    assert updated is node
    assert scene.GetNumberOfNodes() == before
    np.testing.assert_allclose(_to_world(points, np.array(POINTS[0][1])), (-a, r + 5.0, s - 2.0))
    # the stored point positions stay in the follow-up frame
    np.testing.assert_array_equal(fiducial_points(points)[0][1], POINTS[0][1])


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.diag([1.0, 1.0, 0.0, 1.0]), "not invertible"),
        (np.array([[1.0, 2.0, 3.0, 0.0], [2.0, 4.0, 6.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1.0]]), "invertible"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.eye(3), "4x4"),
        (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, 1]]), "last row"),
        ("not a matrix", "not numeric|4x4"),
    ],
)
def test_transform_bad_matrix_leaves_scene_unchanged(scene: Any, matrix: Any, message: str) -> None:
    original = np.eye(4)
    original[:3, 3] = (1.0, 2.0, 3.0)
    node = linear_transform_node(scene, original, "Registration")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=message):
        linear_transform_node(scene, matrix, "Bad")
    with pytest.raises(InputError, match=message):
        linear_transform_node(scene, matrix, "Bad", node=node)
    assert scene.GetNumberOfNodes() == before
    np.testing.assert_array_equal(transform_matrix(node), original)
    assert node.GetName() == "Registration"


def _bspline() -> sitk.BSplineTransform:
    reference = sitk.Image([24, 20, 16], sitk.sitkUInt8)
    reference.SetSpacing((2.0, 2.5, 3.0))
    reference.SetOrigin((-30.0, -20.0, -25.0))
    transform = sitk.BSplineTransformInitializer(reference, [4, 3, 3], 3)
    rng = np.random.default_rng(3)
    transform.SetParameters(rng.normal(0.0, 1.5, len(transform.GetParameters())).tolist())
    return transform


@pytest.mark.parametrize("kind", ["bspline", "affine+bspline"])
def test_deformable_transform_node(scene: Any, kind: str) -> None:
    registration: sitk.Transform = _bspline()
    expected_class = "vtkMRMLBSplineTransformNode"
    if kind == "affine+bspline":
        registration = sitk.CompositeTransform([_registration_result(), registration])
        expected_class = "vtkMRMLTransformNode"
    node = sitk_transform_node(scene, registration, "Deformable registration")
    assert node.GetClassName() == expected_class
    assert node.GetScene() is scene
    rng = np.random.default_rng(11)
    forward, inverse = [], []
    volume = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(volume)
    volume.SetAndObserveTransformNodeID(node.GetID())
    for baseline_ras in rng.uniform(-15.0, 15.0, (10, 3)):
        followup_ras = np.array(registration.TransformPoint(_lps(baseline_ras))) * _FLIP
        mapped = np.array(node.GetTransformFromParent().TransformPoint([float(v) for v in baseline_ras]))
        forward.append(np.abs(mapped - followup_ras).max())
        inverse.append(np.abs(_to_world(volume, followup_ras) - baseline_ras).max())
    print(f"{kind}: baseline->follow-up max error {max(forward):.2e} mm, follow-up->baseline {max(inverse):.2e} mm")
    assert max(forward) < 1e-9
    assert max(inverse) < 1e-3  # Slicer's iterative inverse
    with pytest.raises(InputError, match="not linear"):
        ras_matrix_from_sitk(registration)
    with pytest.raises(InputError, match="not linear"):
        transform_matrix(node)


def test_deformable_transform_rejected_by_linear_node(scene: Any) -> None:
    node = linear_transform_node(scene, np.eye(4), "Rigid")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="not linear"):
        sitk_transform_node(scene, _bspline(), "Deformable", node=node)
    with pytest.raises(InputError, match="SimpleITK"):
        sitk_transform_node(scene, np.eye(4), "Matrix")
    assert scene.GetNumberOfNodes() == before
    np.testing.assert_array_equal(transform_matrix(node), np.eye(4))


# --- volume chart -------------------------------------------------------------------------------------------------


def _table_columns(table_node: Any) -> dict[str, np.ndarray]:
    table = table_node.GetTable()
    return {
        table.GetColumnName(c): np.array(
            [table.GetValue(r, c).ToDouble() for r in range(table.GetNumberOfRows())], dtype=float
        )
        for c in range(table.GetNumberOfColumns())
    }


def test_chart_table_and_series(scene: Any) -> None:
    before = scene.GetNumberOfNodes()
    chart, table_node = volume_over_time_chart(scene, SERIES, "Nodule volumes", colors={"N2": (0.0, 0.0, 1.0)})
    assert scene.GetNumberOfNodes() == before + 5  # chart, table, 3 series
    assert chart.IsA("vtkMRMLPlotChartNode") and table_node.IsA("vtkMRMLTableNode")
    assert chart.GetXAxisTitle() == "Days since baseline"
    assert chart.GetYAxisTitle() == "Volume (mm³)"
    columns = _table_columns(table_node)
    assert list(columns) == ["Days since baseline", "N1", "N2", "N3"]
    np.testing.assert_array_equal(columns["Days since baseline"], [0.0, 90.0, 365.0])
    np.testing.assert_array_equal(columns["N1"], [250.0, 268.5, 310.25])
    np.testing.assert_array_equal(columns["N2"], [80.0, np.nan, 95.0])
    np.testing.assert_array_equal(columns["N3"], [np.nan, 30.0, 42.0])
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    expected_colors = {"N1": NODULE_COLORS[0], "N2": (0.0, 0.0, 1.0), "N3": NODULE_COLORS[2]}
    for index, nodule_id in enumerate(SERIES):
        series_node = chart.GetNthPlotSeriesNode(index)
        assert series_node.GetName() == nodule_id
        assert series_node.GetTableNode() is table_node
        assert series_node.GetXColumnName() == "Days since baseline"
        assert series_node.GetYColumnName() == nodule_id
        assert series_node.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter  # x to scale
        assert series_node.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleSolid
        assert series_node.GetMarkerStyle() == slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle
        np.testing.assert_allclose(series_node.GetColor(), expected_colors[nodule_id])
    assert chart_series(chart) == {nodule_id: sorted(samples) for nodule_id, samples in SERIES.items()}


def test_chart_accepts_numpy_samples(scene: Any) -> None:
    chart, _ = volume_over_time_chart(scene, {"N1": np.array([[0.0, 10.0], [30.5, 12.5]])}, "Volumes", x_title="Days")
    assert chart.GetXAxisTitle() == "Days"
    assert chart_series(chart) == {"N1": [(0.0, 10.0), (30.5, 12.5)]}


def test_chart_update_in_place(scene: Any) -> None:
    chart, table_node = volume_over_time_chart(scene, SERIES, "Nodule volumes")
    ids = {chart.GetNthPlotSeriesNode(i).GetName(): chart.GetNthPlotSeriesNode(i).GetID() for i in range(3)}
    before = scene.GetNumberOfNodes()
    update = {"N1": [*SERIES["N1"], (730.0, 330.0)], "N3": SERIES["N3"], "N4": [(730.0, 12.0)]}  # N2 resolved
    chart2, table2 = volume_over_time_chart(scene, update, "Nodule volumes", node=chart)
    assert chart2 is chart and table2 is table_node
    assert scene.GetNumberOfNodes() == before  # N2's series removed, N4's added
    assert scene.GetNodeByID(ids["N2"]) is None
    names = [chart.GetNthPlotSeriesNode(i).GetName() for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert names == ["N1", "N3", "N4"]
    assert chart.GetNthPlotSeriesNode(0).GetID() == ids["N1"]
    assert chart_series(chart) == {nodule_id: sorted(samples) for nodule_id, samples in update.items()}
    assert list(_table_columns(table_node)) == ["Days since baseline", "N1", "N3", "N4"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


@pytest.mark.parametrize(
    ("series", "colors", "message"),
    [
        ({}, None, "no nodule"),
        ({"N1": []}, None, "no \\(time, volume\\) sample"),
        ({"N1": [(0.0, math.nan)]}, None, "not finite"),
        ({"N1": [(math.inf, 1.0)]}, None, "not finite"),
        ({"N1": [(0.0, 1.0), (0.0, 2.0)]}, None, "two volumes"),
        ({"N1": [(0.0, 1.0, 2.0)]}, None, "pair"),
        ({"Days since baseline": [(0.0, 1.0)]}, None, "x column"),
        ({"N1": [(0.0, 1.0)]}, {"N1": (2.0, 0.0, 0.0)}, "colour"),
        ({"N1": 5.0}, None, "no \\(time, volume\\) sample"),
    ],
)
def test_chart_bad_input_leaves_scene_unchanged(scene: Any, series: Any, colors: Any, message: str) -> None:
    chart, _ = volume_over_time_chart(scene, SERIES, "Nodule volumes")
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=message):
        volume_over_time_chart(scene, series, "Bad", colors=colors)
    with pytest.raises(InputError, match=message):
        volume_over_time_chart(scene, series, "Bad", colors=colors, node=chart)
    assert scene.GetNumberOfNodes() == before
    assert chart.GetName() == "Nodule volumes"
    assert chart_series(chart) == {nodule_id: sorted(samples) for nodule_id, samples in SERIES.items()}


# --- saving -------------------------------------------------------------------------------------------------------


def test_saved_scene_keeps_tracking_nodes(scene: Any, tmp_path: Path) -> None:
    """Save like Slicer does (data files + .mrml), load into a fresh scene, read everything back."""
    matrix = ras_matrix_from_sitk(_registration_result())
    transform_node = linear_transform_node(scene, matrix, "Follow-up to baseline")
    points = nodule_fiducials_node(scene, POINTS, "Follow-up nodules", color=(0.2, 0.8, 0.4))
    points.SetAndObserveTransformNodeID(transform_node.GetID())
    volume_over_time_chart(scene, SERIES, "Nodule volumes")

    application = scene_logics(scene).application
    assert application.SaveSceneToSlicerDataBundleDirectory(str(tmp_path), None)
    (mrml,) = tmp_path.glob("*.mrml")
    data_files = sorted(p.name for p in (tmp_path / "Data").iterdir())
    print(f"saved: {mrml.name} + {data_files}")
    assert "Follow-up nodules.mrk.json" in data_files

    loaded = create_scene()
    try:
        loaded.SetURL(str(mrml))
        assert loaded.Import()
        points2 = loaded.GetFirstNodeByName("Follow-up nodules")
        assert points2.IsA("vtkMRMLMarkupsFiducialNode")
        assert [label for label, _ in fiducial_points(points2)] == ["N1", "N2", "N3"]
        for (_, position), (_, expected) in zip(fiducial_points(points2), POINTS, strict=True):
            np.testing.assert_allclose(position, expected, atol=1e-6)
        assert points2.GetLocked()
        np.testing.assert_allclose(points2.GetDisplayNode().GetSelectedColor(), (0.2, 0.8, 0.4))
        transform2 = loaded.GetFirstNodeByName("Follow-up to baseline")
        np.testing.assert_allclose(transform_matrix(transform2), matrix, atol=1e-9)
        assert points2.GetParentTransformNode() is transform2
        chart2 = loaded.GetFirstNodeByName("Nodule volumes")
        assert chart2.GetXAxisTitle() == "Days since baseline"
        assert chart2.GetYAxisTitle() == "Volume (mm³)"
        assert chart_series(chart2) == {nodule_id: sorted(samples) for nodule_id, samples in SERIES.items()}
        # the reloaded chart can be updated in place
        before = loaded.GetNumberOfNodes()
        volume_over_time_chart(loaded, {"N1": SERIES["N1"]}, "Nodule volumes", node=chart2)
        assert loaded.GetNumberOfNodes() == before - 2
    finally:
        close_scene(loaded)
