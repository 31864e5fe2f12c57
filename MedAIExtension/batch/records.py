"""What one study of a batch produced: the record the runner writes (``study.json``) and the cohort report reads.

Nothing in a record's ``key`` or in any output path comes from the study's DICOM headers (untrusted): the key is
derived from the input's location as given on the command line or in the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RECORD_NAME", "RETRIEVED_INPUT_DIR", "Acquisition", "StudyRecord", "study_key"]

RECORD_NAME = "study.json"
"""File name of a study's record inside its output folder."""

RETRIEVED_INPUT_DIR = "input"
"""Folder inside a DICOMweb study's output folder holding its retrieved series (kept for the annotation queue)."""


def study_key(source: str) -> str:
    """A stable folder-safe key for a study: 16 hex digits of the SHA-256 of its input location."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Acquisition:
    """Who and how a study was acquired (read from DICOM where there is DICOM; None when unknown).

    Attributes:
        sex: PatientSex ("F", "M", "O").
        age_years: PatientAge in years (or from the birth and study dates).
        manufacturer, scanner_model: Manufacturer, ManufacturerModelName.
        slice_thickness_mm: SliceThickness.
        kernel: ConvolutionKernel (joined when multi-valued).
        contrast: True when ContrastBolusAgent is present and not empty, False when absent.
    """

    sex: str | None = None
    age_years: float | None = None
    manufacturer: str | None = None
    scanner_model: str | None = None
    slice_thickness_mm: float | None = None
    kernel: str | None = None
    contrast: bool | None = None


@dataclass(frozen=True)
class StudyRecord:
    """One study of a batch and what came of it.

    Attributes:
        key: :func:`study_key` of ``source``; also the name of the study's output folder.
        source: the input as given (folder, file or manifest row).
        status: ``"done"`` or ``"failed"``.
        error: the one-line error of a failed study.
        output_dir: the study's output folder (the files ``medai segment`` writes), None when failed.
        acquisition: who and how it was acquired.
        volumes_ml: segmented volume per label name.
        reference: path of the reference label map, when the batch was given references.
        metrics: per label name, the comparison with the reference (``dice``, ``iou``, ``hd95_mm``, ``nsd``).
        input_stats: input statistics for drift checks (HU histogram, spacing, noise, field of view).
        uncertainty: the study's mean predictive entropy (annotation queue), when computed.
        seconds: time spent on the study.
        extra: anything else the runner records (e.g. the worker node).
    """

    key: str
    source: str
    status: str
    error: str | None = None
    output_dir: str | None = None
    acquisition: Acquisition = field(default_factory=Acquisition)
    volumes_ml: dict[str, float] = field(default_factory=dict)
    reference: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    input_stats: dict[str, Any] = field(default_factory=dict)
    uncertainty: float | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyRecord:
        """The record :meth:`to_dict` wrote (unknown keys are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["acquisition"] = Acquisition(**(data.get("acquisition") or {}))
        return cls(**values)

    @property
    def folder_name(self) -> str:
        """The output folder's name (the key)."""
        return Path(self.key).name
