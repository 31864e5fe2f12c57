"""Writing .seg.nrrd: atomic, and read back by slicerio voxel for voxel in physical space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer
import slicerio

from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.mrml import labelmap_to_segmentation_node, write_seg_nrrd


def _resample_file_voxels(voxels: np.ndarray, file_ijk_to_lps: np.ndarray, grid: Image) -> np.ndarray:
    """Put the file's voxels onto ``grid`` (array ``[k, j, i]``), checking both grids coincide in LPS space."""
    assert voxels.ndim == 3, "one shared layer expected"
    file_to_grid = np.linalg.inv(grid.ijk_to_lps) @ file_ijk_to_lps
    # the file's grid must be the labelmap's grid up to a whole-voxel offset (same spacing and directions)
    np.testing.assert_allclose(file_to_grid, np.round(file_to_grid), atol=1e-4)
    file_to_grid = np.round(file_to_grid).astype(int)
    file_ijk = np.indices(voxels.shape).reshape(3, -1)  # slicerio (pynrrd) arrays are indexed [i, j, k]
    grid_ijk = file_to_grid[:3, :3] @ file_ijk + file_to_grid[:3, 3:]
    size = np.array(grid.size_ijk)[:, None]
    inside = np.all((grid_ijk >= 0) & (grid_ijk < size), axis=0)
    assert not voxels.reshape(-1)[~inside].any(), "labelled voxels outside the reference grid"
    out = np.zeros(grid.shape, dtype=voxels.dtype)
    i, j, k = grid_ijk[:, inside]
    out[k, j, i] = voxels.reshape(-1)[inside]
    return out


def test_seg_nrrd_reads_back_voxel_exact(
    scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...], tmp_path: Path
) -> None:
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    path = write_seg_nrrd(node, tmp_path / "result.seg.nrrd")
    assert path == tmp_path / "result.seg.nrrd"
    assert path.is_file()
    segmentation = slicerio.read_segmentation(str(path))
    on_grid = _resample_file_voxels(segmentation["voxels"], np.asarray(segmentation["ijkToLPS"]), labelmap)
    assert np.array_equal(on_grid, labelmap.array)
    # the whole grid is written, not cropped to the segments
    assert segmentation["voxels"].shape == labelmap.size_ijk


def test_seg_nrrd_segment_metadata(
    scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...], tmp_path: Path
) -> None:
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    segmentation = slicerio.read_segmentation(str(write_seg_nrrd(node, tmp_path / "result.seg.nrrd")), skip_voxels=True)
    segments = segmentation["segments"]
    assert [s["name"] for s in segments] == [label.name for label in labels]
    assert [s["labelValue"] for s in segments] == [label.value for label in labels]
    for segment, label in zip(segments, labels, strict=True):
        np.testing.assert_allclose(segment["color"], label.color, atol=1e-6)
        assert segment["tags"]["MedAI.LabelValue"] == str(label.value)
        assert segment["terminology"]["category"] == [
            label.category.scheme,
            label.category.value,
            label.category.meaning,
        ]
        expected_type = label.type_or_default
        assert segment["terminology"]["type"] == [expected_type.scheme, expected_type.value, expected_type.meaning]
    assert segmentation["masterRepresentation"] == "Binary labelmap"


def test_seg_nrrd_by_label_value(scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...], tmp_path: Path) -> None:
    """slicerio's own lookup: the voxels of the segment named 'Spleen' are the label map's value 2."""
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    segmentation = slicerio.read_segmentation(str(write_seg_nrrd(node, tmp_path / "result.seg.nrrd")))
    spleen = slicerio.segment_from_name(segmentation, "Spleen")
    extracted = slicerio.extract_segments(segmentation, [(spleen["name"], 1)])
    on_grid = _resample_file_voxels(extracted["voxels"], np.asarray(extracted["ijkToLPS"]), labelmap)
    assert np.array_equal(on_grid == 1, labelmap.array == 2)


def test_empty_labelmap_writes_full_grid(scene: Any, tmp_path: Path) -> None:
    labelmap = Image(array=np.zeros((3, 4, 5), dtype=np.uint8), ijk_to_ras=np.diag([-1.0, -1.0, 2.0, 1.0]))
    node = labelmap_to_segmentation_node(scene, labelmap, [SegmentLabel(1, "Nothing", (1.0, 0.0, 0.0))], "S")
    segmentation = slicerio.read_segmentation(str(write_seg_nrrd(node, tmp_path / "empty.seg.nrrd")))
    assert segmentation["voxels"].shape == labelmap.size_ijk
    assert not segmentation["voxels"].any()
    assert [s["name"] for s in segmentation["segments"]] == ["Nothing"]


def test_write_replaces_atomically_and_leaves_no_temporary(
    scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...], tmp_path: Path
) -> None:
    target = tmp_path / "result.seg.nrrd"
    target.write_bytes(b"old")
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    write_seg_nrrd(node, target)
    assert target.read_bytes().startswith(b"NRRD")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.seg.nrrd"]


def test_write_does_not_touch_scene_or_node(
    scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...], tmp_path: Path
) -> None:
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    before = scene.GetNumberOfNodes()
    write_seg_nrrd(node, tmp_path / "result.seg.nrrd")
    assert scene.GetNumberOfNodes() == before
    assert node.GetStorageNode() is None


def test_write_errors(scene: Any, labelmap: Image, labels: tuple[SegmentLabel, ...], tmp_path: Path) -> None:
    node = labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    with pytest.raises(OutputError, match=r"\.seg\.nrrd"):
        write_seg_nrrd(node, tmp_path / "result.nii.gz")
    with pytest.raises(OutputError, match="does not exist"):
        write_seg_nrrd(node, tmp_path / "missing" / "result.seg.nrrd")
    with pytest.raises(InputError, match="segmentation"):
        write_seg_nrrd(slicer.vtkMRMLScalarVolumeNode(), tmp_path / "result.seg.nrrd")
    assert list(tmp_path.iterdir()) == []
