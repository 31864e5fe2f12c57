"""One entry point that turns whatever the user points at into an :class:`Image`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import VOLUME_SUFFIXES, is_volume_file, read_volume_file

__all__ = ["load_image"]


def load_image(
    path: str | os.PathLike[str],
    series_uid: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Image:
    """Load a DICOM folder, a NIfTI file or a NRRD file.

    Args:
        path: a folder of DICOM files, or a volume file.
        series_uid: which series to read from a folder holding several.
        warn: receives non-fatal warnings.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid, warn=warn)
    if not path.exists():
        raise InputError(f"{path} does not exist. Check the --input path.")
    if is_volume_file(path):
        return read_volume_file(path)
    raise InputError(
        f"{path.name} is neither a DICOM folder nor a volume file ({', '.join(VOLUME_SUFFIXES)}). "
        "Point --input at a DICOM series folder or a .nii.gz/.nrrd file."
    )
