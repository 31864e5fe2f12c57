"""Image input/output: the :class:`Image` type, DICOM series, NIfTI/NRRD and geometry helpers."""

from MedAIExtension.io.dicom_series import (
    SeriesInfo,
    list_series,
    read_dicom_files,
    read_dicom_series,
    write_dicom_series,
)
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts, affine_parts, lps_to_ras, ras_to_lps
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import is_volume_file, read_volume_file, write_volume_file

__all__ = [
    "LPS_TO_RAS",
    "Image",
    "SeriesInfo",
    "affine_from_parts",
    "affine_parts",
    "is_volume_file",
    "list_series",
    "load_image",
    "lps_to_ras",
    "ras_to_lps",
    "read_dicom_files",
    "read_dicom_series",
    "read_volume_file",
    "write_dicom_series",
    "write_volume_file",
]
