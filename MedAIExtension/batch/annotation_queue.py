"""The annotation queue: a batch's studies ranked by model uncertainty, most informative first (``queue.csv``).

A study's uncertainty is one number made from the existing test-time-augmentation entropy map
(:func:`~MedAIExtension.explain.uncertainty.segmentation_uncertainty`: normalised predictive entropy of the mean
softmax over flipped inputs, 0..1): its **mean over the predicted foreground plus a band** of ``band_mm`` around
it (:data:`BAND_MM`). The band holds the segment borders, where a model that is unsure puts its doubt; the mean
over the foreground and band, rather than over the whole image, keeps large empty air regions from diluting it.
When nothing is segmented, the mean over the region the model looked at (entropy above zero) is used, else 0.

``queue.csv`` columns: ``rank`` (1 = most uncertain), ``key``, ``source``, ``uncertainty``, ``output_dir``. Only
finished studies with an uncertainty are queued; ties keep the order of their keys.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from MedAIExtension.atomic import atomic_path
from MedAIExtension.batch.records import StudyRecord
from MedAIExtension.errors import InputError
from MedAIExtension.explain.uncertainty import UncertaintyResult, segmentation_uncertainty
from MedAIExtension.io.image import Image
from MedAIExtension.models.backends import Backend
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.inference import InferenceOptions
from MedAIExtension.progress import Progress

__all__ = [
    "BAND_MM",
    "QUEUE_COLUMNS",
    "QUEUE_NAME",
    "read_annotation_queue",
    "study_uncertainty",
    "uncertainty_of",
    "write_annotation_queue",
]

QUEUE_NAME = "queue.csv"
QUEUE_COLUMNS = ("rank", "key", "source", "uncertainty", "output_dir")
#: Width of the band around the predicted foreground that counts towards a study's uncertainty (mm).
BAND_MM = 3.0


def uncertainty_of(result: UncertaintyResult, band_mm: float = BAND_MM) -> float:
    """A study's uncertainty from a computed :class:`UncertaintyResult` (see the module docstring)."""
    entropy = np.asarray(result.entropy.array, dtype=np.float32)
    foreground = np.asarray(result.labelmap.array) > 0
    if foreground.any():
        spacing_kji = np.asarray(result.labelmap.spacing, dtype=float)[::-1]
        distance = ndimage.distance_transform_edt(~foreground, sampling=spacing_kji)
        region = distance <= float(band_mm)
    else:
        region = entropy > 0
    if not region.any():
        return 0.0
    return float(entropy[region].mean(dtype=np.float64))


def study_uncertainty(
    image: Image,
    entry: ModelEntry,
    backend: Backend,
    *,
    tta_flips: int = 2,
    band_mm: float = BAND_MM,
    options: InferenceOptions | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
) -> float:
    """A study's model uncertainty for the annotation queue (0..1, higher = more informative to annotate).

    Args:
        image: the study's CT.
        entry, backend: the segmentation model and its loaded backend (loaded once per worker).
        tta_flips: flip combinations (1..8) averaged for the entropy; 2 (none and left-right) by default.
        band_mm: width of the band around the predicted foreground that counts (see the module docstring).
        options: inference options, as for ``medai segment``.
        progress: ``callback(fraction, message)`` or a :class:`Progress`.

    Raises:
        InputError: bad ``tta_flips``; ModelError: a classification model (see ``segmentation_uncertainty``).
    """
    result = segmentation_uncertainty(image, entry, backend, tta_flips=tta_flips, options=options, progress=progress)
    return uncertainty_of(result, band_mm)


def write_annotation_queue(records: Sequence[StudyRecord], path: str | Path) -> Path:
    """Write ``queue.csv``: finished studies with an uncertainty, most uncertain first (atomic). Returns the path.

    Raises:
        InputError: the folder of ``path`` does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"Cannot write the annotation queue: the folder {path.parent} does not exist. Create it.")
    queued = sorted(
        (r for r in records if r.status == "done" and r.uncertainty is not None),
        key=lambda r: (-float(r.uncertainty or 0.0), r.key),
    )
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(QUEUE_COLUMNS)
        for rank, record in enumerate(queued, start=1):
            writer.writerow(
                [rank, record.key, record.source, f"{float(record.uncertainty or 0.0):.6f}", record.output_dir or ""]
            )
    return path


def read_annotation_queue(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``queue.csv`` in rank order (what the Segmentation module steps through).

    Raises:
        InputError: the file is missing or is not an annotation queue.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No annotation queue at {path}. Run medai batch first; it writes {QUEUE_NAME}.")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != QUEUE_COLUMNS:
            raise InputError(
                f"{path} is not an annotation queue: its columns are {reader.fieldnames}, expected "
                f"{list(QUEUE_COLUMNS)}. Open the {QUEUE_NAME} that medai batch wrote."
            )
        rows = list(reader)
    return sorted(rows, key=lambda row: int(row["rank"]))
