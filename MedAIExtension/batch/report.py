"""The end of a batch: the cohort report, each study's drift against the model's training inputs, the queue.

:func:`write_batch_report` writes ``report/`` (cohort tables, subgroup audit and HTML page; see
:mod:`~MedAIExtension.batch.cohort_report`) and, when uncertainties were computed, ``queue.csv`` into the batch's
output folder. Drift compares each study's input statistics with the model's ``input_distribution`` (catalogue);
a model without one gets no drift section.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from MedAIExtension.batch.annotation_queue import write_annotation_queue
from MedAIExtension.batch.cohort_report import write_cohort_report
from MedAIExtension.batch.drift import drift_score
from MedAIExtension.batch.records import StudyRecord
from MedAIExtension.models.entry import ModelEntry

__all__ = ["QUEUE_NAME", "REPORT_DIR", "drift_rows", "write_batch_report"]

REPORT_DIR = "report"
QUEUE_NAME = "queue.csv"


def drift_rows(records: Sequence[StudyRecord], entry: ModelEntry) -> list[dict[str, Any]] | None:
    """Per finished study: drift score, out-of-distribution flag and reasons; None without a training distribution."""
    distribution = entry.input_distribution
    if not distribution:
        return None
    rows = []
    for record in records:
        if record.status != "done" or not record.input_stats:
            continue
        result = drift_score(record.input_stats, distribution)
        rows.append(
            {
                "key": record.key,
                "score": result.score,
                "out_of_distribution": result.out_of_distribution,
                "reasons": list(result.reasons),
            }
        )
    return rows


def write_batch_report(
    records: Sequence[StudyRecord], entry: ModelEntry, output: Path, *, queue: bool = False
) -> dict[str, Path]:
    """The cohort report (with drift) in ``output/report`` and, with ``queue``, ``output/queue.csv``.

    Returns the written files by kind (``html``, ``studies``, ``means``, ``subgroups``, ``queue``).
    """
    ranked = None
    files: dict[str, Path] = {}
    if queue and any(r.uncertainty is not None for r in records):
        files["queue"] = write_annotation_queue(records, output / QUEUE_NAME)
        order = sorted((r for r in records if r.uncertainty is not None), key=lambda r: -float(r.uncertainty or 0))
        ranked = [{"key": r.key, "uncertainty": r.uncertainty, "rank": n + 1} for n, r in enumerate(order)]
    files.update(write_cohort_report(records, output / REPORT_DIR, drift=drift_rows(records, entry), queue=ranked))
    return files
