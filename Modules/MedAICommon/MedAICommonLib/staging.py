"""Handing a Slicer volume to the worker process: its DICOM series (when Slicer's DICOM database has every file)
or the volume written as NRRD. Shared by the MedAI modules that write DICOM objects referencing the input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import slicer

__all__ = ["dicomFiles", "stageInput", "temporaryFolder"]


def dicomFiles(volume: Any) -> list[str]:
    """The volume's DICOM files in Slicer's DICOM database; empty unless every instance is found there."""
    uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    files = [database.fileForInstance(uid) for uid in uids] if uids and database is not None else []
    return files if files and all(files) and all(os.path.isfile(f) for f in files) else []


def stageInput(volume: Any, folder: Path, files: list[str]) -> Path:
    """A folder holding (links to) the volume's DICOM ``files``, or the volume written as ``<folder>.nrrd``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not files:
        from MedAIExtension.io import write_volume_file
        from MedAIExtension.mrml import volume_node_to_image

        return write_volume_file(volume_node_to_image(volume), folder.with_suffix(".nrrd"))
    folder.mkdir()
    for number, source in enumerate(files):
        target = folder / f"{number:06d}.dcm"  # the database may hold equal file names in several folders
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, target)
    return folder


def temporaryFolder() -> str | None:
    """Slicer's temporary folder (None outside the application: the system default is used)."""
    return getattr(getattr(slicer, "app", None), "temporaryPath", None)
