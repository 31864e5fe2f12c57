"""Nodule location (side, zone, image number) in physical space, on axial and sagittal grids and from DICOM."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.location import LungSide, LungZone, locate_nodule

SPACING = 2.0


def _lungs_axial() -> tuple[Image, np.ndarray]:
    """An axial grid [k=S, j=A->P, i=R->L as LPS files] with two box 'lungs' from S=0 to S=90 mm."""
    shape = (46, 60, 80)
    affine = np.diag([-SPACING, -SPACING, SPACING, 1.0])  # i to the patient's left, j posterior, k superior
    affine[:3, 3] = (80.0, 60.0, 0.0)
    lungs = np.zeros(shape, bool)
    lungs[:, 10:50, 5:35] = True  # i 5..35: RAS x 70..10 -> the patient's right
    lungs[:, 10:50, 45:75] = True  # RAS x -10..-70 -> left
    return Image(np.zeros(shape, np.int16), affine, modality="CT"), lungs


@pytest.mark.parametrize(
    ("point", "side", "zone"),
    [
        ((40.0, 0.0, 80.0), LungSide.RIGHT, LungZone.UPPER),
        ((-40.0, 0.0, 45.0), LungSide.LEFT, LungZone.MIDDLE),
        ((30.0, 0.0, 5.0), LungSide.RIGHT, LungZone.LOWER),
    ],
)
def test_side_and_zone_on_an_axial_grid(point, side, zone) -> None:
    image, lungs = _lungs_axial()
    location = locate_nodule(point, image, lungs)
    assert (location.side, location.zone) == (side, zone)
    assert location.image_number_kind == "slice index"
    assert location.image_number == round(point[2] / SPACING) + 1


def test_a_sagittal_acquisition_gives_the_same_side_and_zone() -> None:
    image, lungs = _lungs_axial()
    # Re-grid the same anatomy sagittally: array axes [k = R->L, j = S, i = A->P]
    sagittal_lungs = np.transpose(lungs, (2, 0, 1))
    affine = np.zeros((4, 4))
    affine[0, 2] = -SPACING  # k: RAS x decreasing (towards the left)
    affine[2, 1] = SPACING  # j: superior
    affine[1, 0] = -SPACING  # i: posterior
    affine[:3, 3] = (80.0, 60.0, 0.0)
    affine[3, 3] = 1.0
    sagittal = Image(np.zeros(sagittal_lungs.shape, np.int16), affine, modality="CT")
    for point in ((40.0, 0.0, 80.0), (-40.0, 0.0, 45.0), (30.0, 0.0, 5.0)):
        axial_location = locate_nodule(point, image, lungs)
        sagittal_location = locate_nodule(point, sagittal, sagittal_lungs)
        assert (sagittal_location.side, sagittal_location.zone) == (axial_location.side, axial_location.zone)
    # the image a viewer shows is the sagittal slice through the point: k along RAS x
    assert locate_nodule((40.0, 0.0, 80.0), sagittal, sagittal_lungs).image_number == round((80 - 40) / SPACING) + 1


def test_image_number_is_the_dicom_instance_number(tmp_path) -> None:
    image, lungs = _lungs_axial()
    files = []
    for k in range(image.shape[0]):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = 200 - k  # scanners number from the top down as often as from the bottom up
        path = tmp_path / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    from_dicom = Image(image.array, image.ijk_to_ras, modality="CT", source_files=tuple(files))
    location = locate_nodule((40.0, 0.0, 80.0), from_dicom, lungs)
    assert (location.image_number, location.image_number_kind) == (200 - 40, "InstanceNumber")
    assert location.describe() == "right upper zone, image 160"


def test_without_lungs_only_the_image_is_given() -> None:
    image, _ = _lungs_axial()
    location = locate_nodule((40.0, 0.0, 80.0), image, None)
    assert location.side is None and location.zone is None
    assert location.describe() == "image 41"
    assert locate_nodule((40.0, 0.0, 80.0), image, np.zeros(image.shape, bool)).side is None
