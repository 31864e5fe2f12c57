"""One study of a batch: segment it through ``medai segment``'s compute-and-write call, describe it, commit it.

:func:`process_study` writes everything into a staging folder inside ``studies/`` (the files of
:func:`~MedAIExtension.segmentation.pipeline.segment_to_folder` plus the study's record), then renames the staging
folder to ``studies/<key>`` in one step. A committed folder is never rewritten: when it already exists (another
attempt at the same study committed first), the new results are discarded and the committed record returned.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from MedAIExtension.batch.annotation_queue import study_uncertainty
from MedAIExtension.batch.dicomweb_input import retrieve_study
from MedAIExtension.batch.drift import input_statistics
from MedAIExtension.batch.inputs import StudyInput
from MedAIExtension.batch.records import RECORD_NAME, RETRIEVED_INPUT_DIR, Acquisition, StudyRecord
from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.metrics import compare_labelmaps
from MedAIExtension.models.backends import Backend, load_backend
from MedAIExtension.models.catalog import Catalog
from MedAIExtension.models.variants import runtime_entry
from MedAIExtension.segmentation.outputs import OUTPUT_FORMATS
from MedAIExtension.segmentation.pipeline import SegmentRequest, segment_to_folder

if TYPE_CHECKING:
    from MedAIExtension.pacs.dicomweb import DicomWebStore

__all__ = ["acquisition_of", "one_line_error", "process_study", "remove_stale_staging"]

_STAGING_PREFIX = ".staging-"


def one_line_error(exc: BaseException) -> str:
    """A failure as one line: MedAI's own message, or the exception type and its first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = text if isinstance(exc, MedAIError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return line[:500]


def _text(metadata: dict[str, Any], keyword: str) -> str | None:
    value = str(metadata.get(keyword) or "").strip()
    return value or None


def _age_years(text: str | None) -> float | None:
    if not text or len(text) < 2 or not text[:-1].isdigit():
        return None
    per_year = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}.get(text[-1].upper())
    return round(int(text[:-1]) / per_year, 3) if per_year else None


def acquisition_of(image: Image) -> Acquisition:
    """Sex, age, scanner, slice thickness, kernel and contrast of a DICOM image (as its reader kept them).

    The header is untrusted: its values are kept as data only. Unknown for images not read from DICOM.
    """
    if not image.source_files:
        return Acquisition()
    meta = image.metadata
    thickness = _text(meta, "SliceThickness")
    try:
        thickness_mm = float(thickness) if thickness else None
    except ValueError:
        thickness_mm = None
    sex = _text(meta, "PatientSex")
    return Acquisition(
        sex=sex.upper()[:1] if sex else None,
        age_years=_age_years(_text(meta, "PatientAge")),
        manufacturer=_text(meta, "Manufacturer"),
        scanner_model=_text(meta, "ManufacturerModelName"),
        slice_thickness_mm=thickness_mm,
        kernel=_text(meta, "ConvolutionKernel"),
        contrast=_text(meta, "ContrastBolusAgent") is not None,
    )


def _metrics(labelmap: Image, reference: Path, labels: list[tuple[int, str]]) -> dict[str, dict[str, float]]:
    rows = compare_labelmaps(labelmap, load_image(reference), labels)
    metrics: dict[str, dict[str, float]] = {}
    for row in rows:
        values = {"dice": row.dice, "iou": row.iou, "hd95_mm": row.hd95_mm, "nsd": row.surface_dice}
        metrics[row.name] = {k: float(v) for k, v in values.items() if v == v and abs(v) != float("inf")}
    return metrics


def _committed(folder: Path) -> StudyRecord | None:
    record = folder / RECORD_NAME
    if not record.is_file():
        return None
    return StudyRecord.from_dict(json.loads(record.read_text(encoding="utf-8")))


def process_study(
    study: StudyInput,
    model: str,
    studies_dir: Path,
    *,
    catalog: Catalog | None = None,
    device: str = "auto",
    extra: dict[str, Any] | None = None,
    warn: Callable[[str], None] | None = None,
    uncertainty: bool = False,
    backend: Backend | None = None,
    store: DicomWebStore | None = None,
    keep_retrieved: bool = False,
) -> StudyRecord:
    """Segment ``study`` with ``model`` and commit its folder ``studies_dir/<key>``; never raises for the study.

    Returns the study's record: ``done`` with its output folder, volumes, acquisition, input statistics (for
    drift checks, with the model's lung label as the lung mask) and (with a reference) its metrics, or
    ``failed`` with the one-line error. ``uncertainty``: also the study's mean predictive entropy (test-time
    flips; for the annotation queue; two more passes of the model). ``backend``: the model already loaded (a
    worker's; loaded per study by default). ``store``: the DICOMweb server a remote study
    (:attr:`StudyInput.is_remote`) is retrieved from, into a staging folder removed afterwards, or, with
    ``keep_retrieved`` (an annotator will open it from the queue), committed as the study folder's
    :data:`~MedAIExtension.batch.records.RETRIEVED_INPUT_DIR`. ``extra`` goes into the record's ``extra``.
    """
    started = time.perf_counter()
    final = studies_dir / study.key
    already = _committed(final)
    if already is not None:
        return already
    studies_dir.mkdir(parents=True, exist_ok=True)
    staging = studies_dir / f"{_STAGING_PREFIX}{study.key}-{secrets.token_hex(6)}"
    staging.mkdir()  # with the umask's permissions, as the folder 'medai segment' creates
    retrieved = staging.with_name(f"{staging.name}-input")
    try:
        source = study
        if study.is_remote:
            if store is None:
                raise InputError(f"{study.source} is on a DICOMweb server, and this worker was given none.")
            source = retrieve_study(study, store, retrieved)
        outcome = segment_to_folder(
            SegmentRequest(
                input=source.path,
                model=model,
                output=staging,
                formats=OUTPUT_FORMATS,
                strict_formats=False,  # as 'medai segment' without --format: a DICOM SEG only for DICOM input
                device=device,
                series=study.series,
                catalog=catalog,
                describe_input=True,
                backend=backend,
            ),
            warn=warn,
        )
        summary = json.loads((staging / "summary.json").read_text(encoding="utf-8"))
        volumes = {row["name"]: float(row["volume_ml"]) for row in summary["statistics"]}
        labels = [(label.value, label.name) for label in outcome.result.labels]
        metrics = _metrics(outcome.result.labelmap, study.reference, labels) if study.reference else {}
        lung = [value for value, name in labels if name.lower() == "lung"]
        lungs = outcome.result.labelmap.array == lung[0] if lung else None
        entry = outcome.result.model
        score = None
        if uncertainty:
            loaded = backend or load_backend(runtime_entry(entry, device, catalog), device)
            score = round(study_uncertainty(outcome.image, entry, loaded), 6)
        record = StudyRecord(
            key=study.key,
            source=study.source,
            status="done",
            output_dir=str(final),
            acquisition=acquisition_of(outcome.image),
            volumes_ml=volumes,
            reference=str(study.reference) if study.reference else None,
            metrics=metrics,
            input_stats=input_statistics(outcome.image, lungs),
            uncertainty=score,
            seconds=round(time.perf_counter() - started, 3),
            extra={**(extra or {}), "files": sorted(p.name for p in staging.iterdir())},
        )
        if study.is_remote and keep_retrieved:
            os.rename(retrieved, staging / RETRIEVED_INPUT_DIR)
            record = replace(record, extra={**record.extra, "files": sorted(p.name for p in staging.iterdir())})
        (staging / RECORD_NAME).write_text(json.dumps(record.to_dict(), indent=2), encoding="utf-8")
        try:
            os.rename(staging, final)  # the commit: one step; fails when the folder was committed meanwhile
        except OSError:
            committed = _committed(final)
            if committed is None:
                raise
            return committed
        _remove_abandoned_staging(studies_dir, study.key)
        return record
    except Exception as exc:  # noqa: BLE001 - one bad study is recorded and the batch goes on
        return StudyRecord(
            key=study.key,
            source=study.source,
            status="failed",
            error=one_line_error(exc),
            reference=str(study.reference) if study.reference else None,
            seconds=round(time.perf_counter() - started, 3),
            extra=dict(extra or {}),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retrieved, ignore_errors=True)


def _remove_abandoned_staging(studies_dir: Path, key: str) -> None:
    """After a study's commit: remove the staging folders of its earlier attempts (a worker killed mid-study)."""
    for folder in studies_dir.glob(f"{_STAGING_PREFIX}{key}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_staging(studies_dir: Path) -> int:
    """Remove staging folders an interrupted run left behind; returns how many."""
    if not studies_dir.is_dir():
        return 0
    stale = [p for p in studies_dir.iterdir() if p.is_dir() and p.name.startswith(_STAGING_PREFIX)]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale)
