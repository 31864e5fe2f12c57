"""Image <-> scalar volume node: exact round trips for every acquisition geometry and voxel type."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import slicer
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.mrml import image_to_volume_node, volume_node_to_image


def _node_ijk_to_ras(node: Any) -> np.ndarray:
    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_volume_round_trip_is_exact(scene: Any, ct: Image) -> None:
    node = image_to_volume_node(scene, ct, "CT")
    back = volume_node_to_image(node)
    assert back.array.dtype == ct.array.dtype
    assert np.array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.ijk_to_ras, ct.ijk_to_ras, atol=1e-6)
    assert back.modality == "CT"


def test_volume_node_geometry_matches_affine(scene: Any, ct: Image) -> None:
    node = image_to_volume_node(scene, ct, "CT")
    np.testing.assert_allclose(_node_ijk_to_ras(node), ct.ijk_to_ras, atol=1e-6)
    np.testing.assert_allclose(node.GetOrigin(), ct.origin_ras, atol=1e-6)
    np.testing.assert_allclose(node.GetSpacing(), ct.spacing, atol=1e-6)
    assert node.GetImageData().GetDimensions() == ct.size_ijk


def test_voxel_position_in_ras(scene: Any, ct: Image) -> None:
    """Voxel [k, j, i] of the array is voxel (i, j, k) of the node, at the same RAS point."""
    node = image_to_volume_node(scene, ct, "CT")
    k, j, i = 4, 2, 7
    assert node.GetImageData().GetScalarComponentAsDouble(i, j, k, 0) == ct.array[k, j, i]
    ras = _node_ijk_to_ras(node) @ np.array([i, j, k, 1.0])
    np.testing.assert_allclose(ras, ct.ijk_to_ras @ np.array([i, j, k, 1.0]), atol=1e-6)


def test_volume_node_is_in_scene_with_display(scene: Any, ct: Image) -> None:
    before = scene.GetNumberOfNodes()
    node = image_to_volume_node(scene, ct, "My CT")
    assert node.GetScene() is scene
    assert node.GetName() == "My CT"
    assert node.IsA("vtkMRMLScalarVolumeNode")
    assert node.GetDisplayNode() is not None
    assert scene.GetNumberOfNodes() == before + 2


def test_voxels_are_copied(scene: Any, ct: Image) -> None:
    array = ct.array.copy()
    node = image_to_volume_node(scene, ct.with_array(array), "CT")
    array[:] = 0
    assert np.array_equal(volume_node_to_image(node).array, ct.array)


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32", "float64", "bool"]
)
def test_voxel_types_round_trip(scene: Any, rng: np.random.Generator, dtype: str) -> None:
    values = rng.normal(0, 50, size=(3, 4, 5))
    array = (values > 0) if dtype == "bool" else values.astype(dtype)
    image = Image(array=array, ijk_to_ras=np.diag([0.5, 0.6, 2.0, 1.0]))
    back = volume_node_to_image(image_to_volume_node(scene, image, dtype))
    assert back.array.dtype == np.dtype(dtype)
    assert np.array_equal(back.array, image.array)


def test_update_existing_node_in_place(scene: Any, ct: Image) -> None:
    node = image_to_volume_node(scene, ct, "first")
    count = scene.GetNumberOfNodes()
    other = Image(array=ct.array[::-1].copy(), ijk_to_ras=np.diag([2.0, 2.0, 2.0, 1.0]))
    same = image_to_volume_node(scene, other, "second", node=node)
    assert same is node
    assert scene.GetNumberOfNodes() == count
    back = volume_node_to_image(node)
    assert np.array_equal(back.array, other.array)
    np.testing.assert_allclose(back.ijk_to_ras, other.ijk_to_ras)
    assert node.GetName() == "second"


def test_label_map_volume_node_is_accepted(scene: Any, ct: Image) -> None:
    node = slicer.vtkMRMLLabelMapVolumeNode()
    labels = ct.with_array((ct.array > 0).astype(np.uint8))
    result = image_to_volume_node(scene, labels, "labels", node=node)
    assert result.IsA("vtkMRMLLabelMapVolumeNode")
    assert result.GetScene() is scene
    assert np.array_equal(volume_node_to_image(result).array, labels.array)


def test_sheared_affine_round_trips(scene: Any) -> None:
    """A gantry-tilted (non-orthogonal) grid keeps its shear."""
    affine = np.array([[0.7, 0.0, 0.0, 1.0], [0.0, 0.7, 0.4, 2.0], [0.0, 0.0, 2.5, 3.0], [0, 0, 0, 1.0]])
    image = Image(array=np.arange(60, dtype=np.int16).reshape(3, 4, 5), ijk_to_ras=affine)
    back = volume_node_to_image(image_to_volume_node(scene, image, "tilted"))
    np.testing.assert_allclose(back.ijk_to_ras, affine, atol=1e-6)


def test_extent_not_starting_at_zero_is_folded_into_affine(scene: Any, ct: Image) -> None:
    node = image_to_volume_node(scene, ct, "CT")
    node.GetImageData().SetExtent(2, 2 + ct.size_ijk[0] - 1, 0, ct.size_ijk[1] - 1, 0, ct.size_ijk[2] - 1)
    back = volume_node_to_image(node)
    np.testing.assert_allclose(back.origin_ras, ct.ijk_to_ras[:3, :3] @ [2, 0, 0] + ct.origin_ras, atol=1e-6)


def test_node_of_other_scene_is_refused(scene: Any, ct: Image) -> None:
    from MedAIExtension.mrml import create_scene

    node = image_to_volume_node(create_scene(), ct, "elsewhere")
    with pytest.raises(InputError, match="another scene"):
        image_to_volume_node(scene, ct, "here", node=node)


def test_wrong_node_types_are_refused(scene: Any, ct: Image) -> None:
    with pytest.raises(InputError, match="scalar volume"):
        image_to_volume_node(scene, ct, "x", node=slicer.vtkMRMLSegmentationNode())
    with pytest.raises(InputError, match="scalar volume"):
        volume_node_to_image(slicer.vtkMRMLSegmentationNode())
    with pytest.raises(InputError, match="no voxels"):
        volume_node_to_image(slicer.vtkMRMLScalarVolumeNode())


def test_failure_after_adding_leaves_scene_unchanged(scene: Any, ct: Image, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while creating the display node removes the half-made volume again."""

    class FailingVolumeNode(slicer.vtkMRMLScalarVolumeNode):
        def CreateDefaultDisplayNodes(self) -> None:
            super().CreateDefaultDisplayNodes()
            raise RuntimeError("injected display failure")

    monkeypatch.setattr(slicer, "vtkMRMLScalarVolumeNode", FailingVolumeNode)
    before = scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError, match="injected"):
        image_to_volume_node(scene, ct, "CT")
    assert scene.GetNumberOfNodes() == before
