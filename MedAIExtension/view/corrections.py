"""Writing an annotator's corrected segmentation: ``<result>/corrections/<UTC time>/`` of a result folder.

The folder holds

* ``segmentation.nii.gz`` — the corrected label map, on the grid (and with the label values) of the result's own
  ``segmentation.nii.gz``;
* ``segmentation.dcm`` — the same as a DICOM Segmentation referencing the study, when the study is a DICOM series
  (segment algorithm type SEMIAUTOMATIC: the model's result edited by a person, who is the SEG's content creator);
* ``provenance.json`` — where it came from: the source model and version (the result's ``summary.json``), the
  annotator, the UTC time, the source result folder and study, and per label the voxels added and removed.

Everything is written into a staging folder first and moved into place as one folder
(:func:`~MedAIExtension.atomic.staged_output`): a failed save leaves no partial correction.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import save_dataset, staged_output
from MedAIExtension.dicom import EmptySegmentationError, write_dicom_seg
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.mrml.segmentations import segmentation_node_to_labelmap
from MedAIExtension.segmentation.output_folder import read_summary

__all__ = ["CORRECTIONS_FOLDER", "Correction", "default_annotator", "write_correction"]

#: The folder of a result that holds its corrections, one sub-folder per save.
CORRECTIONS_FOLDER = "corrections"


@dataclass(frozen=True)
class Correction:
    """A saved correction.

    Attributes:
        folder: ``<result>/corrections/<UTC time>/``.
        labelmap: the written NIfTI label map.
        dicom_seg: the written DICOM SEG (None when the study is not DICOM or nothing is segmented).
        provenance: the written ``provenance.json``.
    """

    folder: Path
    labelmap: Path
    dicom_seg: Path | None
    provenance: Path


def default_annotator() -> str:
    """The annotator's name when none is given: the operating system user (``"unknown"`` when there is none)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):  # no login name and no passwd entry (e.g. an anonymous container user)
        return "unknown"


def _edits(original: np.ndarray, corrected: np.ndarray, labels: Sequence[SegmentLabel]) -> list[dict[str, Any]]:
    rows = []
    for label in labels:
        before, after = original == label.value, corrected == label.value
        rows.append(
            {
                "label": label.value,
                "name": label.name,
                "voxels_added": int(np.count_nonzero(after & ~before)),
                "voxels_removed": int(np.count_nonzero(before & ~after)),
                "voxels": int(np.count_nonzero(after)),
            }
        )
    return rows


def _free_name(folder: Path, now: dt.datetime) -> str:
    stem = now.strftime("%Y%m%dT%H%M%SZ")
    name, number = stem, 1
    while (folder / name).exists():
        number += 1
        name = f"{stem}-{number}"
    return name


def _mark_as_edited(path: Path, annotator: str) -> None:
    """The SEG's segments as SEMIAUTOMATIC (model + person) and the annotator as its content creator."""
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.ContentCreatorName = annotator.replace("^", " ")[:63] + "^"  # the whole name as the family name
    for segment in dataset.SegmentSequence:
        segment.SegmentAlgorithmType = "SEMIAUTOMATIC"
    save_dataset(dataset, path, "DICOM SEG")


def write_correction(
    segmentation_node: Any,
    result: str | os.PathLike[str],
    original: Image,
    study: Image,
    labels: Sequence[SegmentLabel],
    annotator: str,
    study_path: str | os.PathLike[str] = "",
    now: dt.datetime | None = None,
) -> Correction:
    """Write the segmentation node's segments as a correction of the result folder ``result``.

    Args:
        segmentation_node: the edited ``vtkMRMLSegmentationNode`` (segments tagged with their label values,
            as :func:`~MedAIExtension.mrml.segmentations.labelmap_to_segmentation_node` makes them).
        result: the result folder (its ``summary.json`` names the model).
        original: the result's own label map (``segmentation.nii.gz``): the corrected one gets its grid.
        study: the study the result was computed from; a DICOM series (``source_files``) also gets a DICOM SEG.
        labels: the segments' labels (values, names, colours, codes).
        annotator: who corrected it (non-empty).
        study_path: where the study was read from (recorded in the provenance).
        now: the save time (UTC; default now).

    Returns:
        The written :class:`Correction`.

    Raises:
        InputError: no annotator, or the node cannot be exported to a label map.
        OutputError: the corrections folder cannot be written (nothing is left behind).
    """
    annotator = annotator.strip()
    if not annotator:
        raise InputError("No annotator name: give one with medai view --user NAME.")
    folder = Path(result)
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    corrected = segmentation_node_to_labelmap(segmentation_node, original)
    summary = read_summary(folder)
    algorithm = summary.get("algorithm")
    if not isinstance(algorithm, dict):
        algorithm = {}
    model = str(algorithm.get("name") or "unknown")
    version = str(algorithm.get("version") or "unknown")
    corrections = folder / CORRECTIONS_FOLDER
    name = _free_name(corrections, now)
    with staged_output(corrections) as staged:
        target = staged.folder / name
        target.mkdir()
        files = {"labelmap": "segmentation.nii.gz"}
        write_volume_file(corrected, target / files["labelmap"])
        seg_note = "the study is not a DICOM series"
        if study.source_files:
            on_study = segmentation_node_to_labelmap(segmentation_node, study)
            try:
                write_dicom_seg(
                    on_study,
                    study,
                    labels,
                    target / "segmentation.dcm",
                    algorithm_name=model,
                    algorithm_version=version,
                    series_description=f"MedAI segmentation corrected by {annotator}",
                    content_label="MEDAI_CORRECTED",
                )
                _mark_as_edited(target / "segmentation.dcm", annotator)
                files["dicom_seg"] = "segmentation.dcm"
            except EmptySegmentationError:
                seg_note = "no segmented voxel is left (a DICOM SEG needs at least one)"
        provenance = {
            "source_model": model,
            "model_version": version,
            "annotator": annotator,
            "time_utc": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "source_result": str(folder.resolve()),
            "source_segmentation": str((folder / "segmentation.nii.gz").resolve()),
            "study": str(study_path or summary.get("input") or ""),
            "files": files,
            **({} if "dicom_seg" in files else {"dicom_seg_not_written": seg_note}),
            "edits": _edits(np.asarray(original.array), np.asarray(corrected.array), labels),
        }
        (target / "provenance.json").write_text(json.dumps(provenance, indent=2), encoding="utf-8")
        final = staged.commit([name])[name]
    return Correction(
        final,
        final / files["labelmap"],
        final / files["dicom_seg"] if "dicom_seg" in files else None,
        final / "provenance.json",
    )
