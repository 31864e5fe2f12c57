"""NIfTI (.nii, .nii.gz) and NRRD (.nrrd, .nhdr) volumes through SimpleITK (LPS handled by ITK)."""

from __future__ import annotations

import os
from pathlib import Path

from MedAIExtension.atomic import atomic_path
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image

__all__ = ["VOLUME_SUFFIXES", "is_volume_file", "read_volume_file", "write_volume_file"]

VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a volume-file suffix MedAI reads."""
    name = Path(path).name.lower()
    return any(name.endswith(suffix) for suffix in VOLUME_SUFFIXES)


def read_volume_file(path: str | os.PathLike[str], modality: str = "") -> Image:
    """Read a NIfTI/NRRD/MetaImage volume.

    Raises:
        InputError: the file is missing, unreadable, 2D, or not scalar.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist. Check the --input path.")
    try:
        sitk_image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(
            f"Cannot read {path.name} as a volume ({first_line}). Give a valid .nii.gz, .nrrd or DICOM folder."
        ) from None
    return Image.from_sitk(sitk_image, modality=modality, metadata={"SourceFile": str(path)})


def write_volume_file(image: Image, path: str | os.PathLike[str], compress: bool = True) -> Path:
    """Write ``image`` to ``path`` (format from the suffix) atomically."""
    import SimpleITK as sitk

    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image.to_sitk(), str(tmp), compress)
    return path
