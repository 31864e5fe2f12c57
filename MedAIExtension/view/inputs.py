"""What ``medai view PATH`` shows: a study alone, a segmentation result over its study, or a tracking result.

Result folders are recognised by the files MedAI writes into them (``summary.json`` + ``segmentation.nii.gz``;
``tracking.json``), and the study they were computed from is found from what those files recorded (or given with
``--image``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from MedAIExtension.errors import InputError
from MedAIExtension.explain.scene import DOCUMENT_NAME, read_explanation_document
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.segmentation.output_folder import find_segmentation_file, output_labels, segmented_input
from MedAIExtension.tracking.scene import read_tracking_document

__all__ = ["ViewInput", "resolve_view_input"]


@dataclass(frozen=True)
class ViewInput:
    """What a review session shows.

    Attributes:
        image: the study (DICOM folder or volume file).
        segmentation: the label map to overlay (``segmentation.nii.gz``) or None.
        title: the page's title.
        labels: the segments' names and colours (with ``segmentation``).
        tracking: a ``medai track`` result folder (``image`` is then the follow-up study).
        baseline: the tracking's baseline study.
        explanation: a ``medai explain`` result folder (``explanation.json``) to show over ``image``.
        user: who reviews or annotates in this session (recorded with each decision and correction).
        after_export: called with the decisions SR after "Export SR" wrote it (a gateway study: store it in the
            PACS); returns what it did, in words.
    """

    image: Path
    segmentation: Path | None = None
    title: str = "MedAI view"
    labels: tuple[SegmentLabel, ...] = field(default=())
    tracking: Path | None = None
    baseline: Path | None = None
    explanation: Path | None = None
    user: str = ""
    after_export: Callable[[Path], str] | None = field(default=None, compare=False)


def resolve_view_input(path: str | os.PathLike[str], image: str | os.PathLike[str] | None = None) -> ViewInput:
    """What ``medai view PATH [--image IMAGE]`` shows: a study alone, or a result folder over its study.

    Raises:
        InputError: no such path, a result folder whose study cannot be found (give ``--image``), or a folder
            that is neither a study nor a result.
    """
    target = Path(path)
    if not target.exists():
        raise InputError(f"{target} does not exist. Give a study (DICOM folder, NIfTI/NRRD) or a MedAI result folder.")
    if target.is_dir() and (target / "tracking.json").is_file():
        return _tracking_input(target, image)
    if target.is_dir() and (target / DOCUMENT_NAME).is_file():
        return _explanation_input(target, image)
    if target.is_dir() and (target / "summary.json").is_file():
        segmentation = target / "segmentation.nii.gz"
        if not segmentation.is_file():
            found = find_segmentation_file(target)
            raise InputError(
                f"{target} has no segmentation.nii.gz"
                + (f" (only {found.name})" if found else "")
                + ". Run medai segment again with --format nii.gz (the default writes it)."
            )
        study = Path(image) if image is not None else segmented_input(target)
        if study is None or not study.exists():
            raise InputError(
                f"The study segmented into {target} cannot be found (summary.json names "
                f"{study or 'none'}). Give it with --image."
            )
        labels = tuple(output_labels(target, read_volume_file(segmentation)))
        return ViewInput(study, segmentation, f"MedAI view: {target.name}", labels)
    if image is not None:
        raise InputError("--image is for a result folder (it names the study the folder was computed from).")
    return ViewInput(target, None, f"MedAI view: {target.name}")


def _tracking_input(folder: Path, image: str | os.PathLike[str] | None) -> ViewInput:
    inputs = read_tracking_document(folder).get("inputs") or {}
    followup = Path(image) if image is not None else Path(str(inputs.get("followup", "")))
    baseline = Path(str(inputs.get("baseline", "")))
    if not str(followup) or not followup.exists():
        raise InputError(
            f"The follow-up study tracked into {folder} cannot be found ({followup or 'not recorded'}). "
            "Give it with --image."
        )
    return ViewInput(
        followup,
        title=f"MedAI view: {folder.name} (follow-up)",
        tracking=folder,
        baseline=baseline if str(baseline) and baseline.exists() else None,
    )


def _explanation_input(folder: Path, image: str | os.PathLike[str] | None) -> ViewInput:
    document = read_explanation_document(folder)
    recorded = document.get("input_path")
    study = Path(image) if image is not None else Path(str(recorded)) if recorded else None
    if study is None or not study.exists():
        raise InputError(
            f"The study explained into {folder} cannot be found ("
            + (f"explanation.json names {study}" if study else "explanation.json does not record input_path")
            + "). Give it with --image."
        )
    method = str(document.get("method_title") or document["method"])
    return ViewInput(study, title=f"MedAI view: {folder.name} ({method})", explanation=folder)
