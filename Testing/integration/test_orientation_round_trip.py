"""DICOM series (axial both orders, sagittal, coronal, oblique) -> MRML -> DICOM SEG -> back: voxel-exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from MedAIExtension.dicom import read_dicom_seg, read_dicom_seg_with_dcmqi, validate_with_dciodvfy, write_dicom_seg
from MedAIExtension.io import read_dicom_series, write_dicom_series
from MedAIExtension.models.preprocessing import resample_to_grid
from MedAIExtension.mrml import (
    close_scene,
    create_scene,
    image_to_volume_node,
    labelmap_to_segmentation_node,
    segmentation_node_to_labelmap,
    volume_node_to_image,
)
from MedAIExtension.phantom import AXIAL, CORONAL, PHANTOM_LABELS, SAGITTAL, PhantomSpec, generate_chest_phantom

GEOMETRIES = {
    "axial": AXIAL,
    "axial-feet-first": np.array(AXIAL) @ np.diag([1.0, 1.0, -1.0]),
    "sagittal": SAGITTAL,
    "coronal": CORONAL,
    "oblique": Rotation.from_euler("xyz", [12, -18, 25], degrees=True).as_matrix() @ np.array(AXIAL),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_dicom_mrml_seg_round_trip_is_voxel_exact(tmp_path: Path, name: str) -> None:
    direction = np.array(GEOMETRIES[name], dtype=float)
    spec = PhantomSpec(size_ijk=(72, 64, 56), spacing=(5.0, 5.5, 6.0), direction_ras=direction, seed=3)
    phantom = generate_chest_phantom(spec)
    write_dicom_series(phantom.ct, tmp_path / "ct", uid_seed=name)
    ct = read_dicom_series(tmp_path / "ct")
    # the reader may reorder slices (k along the normal): bring the truth onto the grid it returns
    truth = resample_to_grid(phantom.labels, ct.ijk_to_ras, ct.shape, linear=False, fill=0)
    assert np.bincount(truth.array.ravel(), minlength=3)[1:].min() > 0, "phantom must show lung and nodule"
    assert np.count_nonzero(truth.array) == np.count_nonzero(phantom.labels.array)

    scene = create_scene()
    try:
        volume = image_to_volume_node(scene, ct, "CT")
        from_scene = volume_node_to_image(volume)
        np.testing.assert_array_equal(from_scene.array, ct.array)
        np.testing.assert_allclose(from_scene.ijk_to_ras, ct.ijk_to_ras, atol=1e-6)
        segmentation = labelmap_to_segmentation_node(scene, truth, PHANTOM_LABELS, "truth", volume)
        labelmap = segmentation_node_to_labelmap(segmentation, from_scene)
    finally:
        close_scene(scene)
    np.testing.assert_array_equal(labelmap.array, truth.array)

    seg_path = write_dicom_seg(
        labelmap, ct, PHANTOM_LABELS, tmp_path / "seg.dcm", algorithm_name="test", algorithm_version="1"
    )
    assert validate_with_dciodvfy(seg_path) == []
    np.testing.assert_array_equal(read_dicom_seg(seg_path, ct).array, truth.array)
    np.testing.assert_array_equal(read_dicom_seg_with_dcmqi(seg_path, ct, tmp_path).array, truth.array)
