"""Reading back a folder that ``medai segment`` (or one study of ``medai batch``) wrote.

A folder holds ``segmentation.seg.nrrd`` and/or ``segmentation.nii.gz``, ``summary.json`` (the model, per-label
statistics and, when the CLI wrote it, the input it segmented) and, for a batch study, ``study.json`` and possibly
``input/`` (the retrieved DICOM series of a DICOMweb study). Used by the annotation queue of the Segmentation module
and by ``medai view``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import MedAIError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models import catalog as model_catalog

__all__ = ["SEGMENTATION_FILES", "find_segmentation_file", "output_labels", "read_summary", "segmented_input"]

#: The files of an output folder that hold the segmentation, in order of preference.
SEGMENTATION_FILES = ("segmentation.seg.nrrd", "segmentation.nii.gz")

_FALLBACK_COLOURS = ((0.5, 0.7, 1.0), (1.0, 1.0, 0.0), (1.0, 0.6, 0.4), (0.6, 1.0, 0.6), (1.0, 0.5, 1.0))


def find_segmentation_file(folder: Path) -> Path | None:
    """The folder's segmentation file (``.seg.nrrd`` preferred), or None."""
    return next((folder / name for name in SEGMENTATION_FILES if (folder / name).is_file()), None)


def read_summary(folder: Path) -> dict[str, Any]:
    """The folder's ``summary.json`` as a dict (empty when missing or unreadable)."""
    path = folder / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def output_labels(folder: Path, labelmap: Image) -> list[SegmentLabel]:
    """The segment labels of a folder's label map: the model's own (names, colours, terminology) when
    ``summary.json`` names a catalogue model whose labels match, else the summary's names with stock colours, else
    ``"Label N"``."""
    summary = read_summary(folder)
    values = sorted({int(v) for v in np.unique(np.asarray(labelmap.array)) if v != 0})
    names: dict[int, str] = {}
    for row in summary.get("statistics", []) if isinstance(summary.get("statistics"), list) else []:
        try:
            names[int(row["label"])] = str(row["name"])
        except (KeyError, TypeError, ValueError):
            continue
    values = sorted(set(values) | set(names))
    algorithm = summary.get("algorithm")
    model = _catalogue_labels(str(algorithm.get("name") or "") if isinstance(algorithm, dict) else "")
    if model and all(value in model for value in values):
        return [model[value] for value in values]
    return [
        SegmentLabel(value, names.get(value, f"Label {value}"), _FALLBACK_COLOURS[i % len(_FALLBACK_COLOURS)])
        for i, value in enumerate(values)
    ]


def _catalogue_labels(name: str) -> dict[int, SegmentLabel]:
    if not name:
        return {}
    try:
        entry = model_catalog.load_catalog().get(name)  # looked up at call time (tests replace the catalogue)
    except MedAIError:
        return {}
    return {label.value: label for label in entry.labels}


def segmented_input(folder: Path) -> Path | None:
    """The image a result folder was computed from, when it can be found: a batch's kept ``input/`` series, the
    ``input`` recorded in ``summary.json`` (absolute, or relative to the working folder or the result folder's
    parent), or the ``source`` of a batch's ``study.json``. None when none of them exists."""
    kept = folder / "input"
    if kept.is_dir():
        return kept
    candidates: list[str] = []
    summary_input = read_summary(folder).get("input")
    if isinstance(summary_input, str):
        candidates.append(summary_input)
    try:
        study = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        if isinstance(study, dict) and isinstance(study.get("source"), str):
            candidates.append(study["source"].split("#series-")[0])
    except (OSError, ValueError):
        pass
    for text in candidates:
        path = Path(text)
        options = [path] if os.path.isabs(text) else [Path.cwd() / path, folder.parent / path, folder / path]
        for option in options:
            if option.exists():
                return option
    return None
