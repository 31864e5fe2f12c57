"""The cohort report of a batch: CSV tables (Parquet too where pyarrow is installed) and one self-contained HTML page.

:func:`write_cohort_report` takes the batch's :class:`StudyRecord` s and writes, all at once or not at all:

* ``cohort_studies.csv`` — one row per finished study and label (volume, Dice, IoU, HD95, NSD, acquisition), and
  one row per failed study with its error;
* ``cohort_means.csv`` — each label's metrics over the cohort, with bootstrap 95 % CIs;
* ``cohort_subgroups.csv`` — the subgroup audit (:func:`MedAIExtension.batch.subgroups.audit_subgroups`);
* ``cohort_report.html`` — the tables, the metrics' distributions per label, a forest plot of the subgroup gaps,
  the optional drift and annotation-queue sections, and the failed studies with their errors.

The optional sections take plain rows (mappings), so that whatever computes them only has to produce these keys:

* ``drift``: ``{"key": study key, "score": float, "out_of_distribution": bool, "reasons": [str, ...]}``;
* ``queue``: ``{"key": study key, "uncertainty": float, "rank": int}`` (rank 1 = most informative first).

Other keys of a row are ignored; every ``key`` must be one of the records'.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import staged_output
from MedAIExtension.batch.bootstrap import DEFAULT_RESAMPLES
from MedAIExtension.batch.cohort_plots import ForestRow, svg_forest, svg_strips
from MedAIExtension.batch.records import StudyRecord
from MedAIExtension.batch.subgroups import (
    HIGHER_IS_BETTER,
    TOO_SMALL,
    VOLUME,
    CohortMean,
    SubgroupRow,
    audit_subgroups,
    cohort_means,
    done_records,
)
from MedAIExtension.errors import InputError

__all__ = ["REPORT_FILES", "STUDY_COLUMNS", "write_cohort_report"]

REPORT_FILES = {
    "studies": "cohort_studies.csv",
    "means": "cohort_means.csv",
    "subgroups": "cohort_subgroups.csv",
    "html": "cohort_report.html",
}
"""What :func:`write_cohort_report` writes, by the key it returns each path under."""

_ACQUISITION = ("sex", "age_years", "manufacturer", "scanner_model", "slice_thickness_mm", "kernel", "contrast")
STUDY_COLUMNS = (
    "key",
    "source",
    "status",
    "error",
    "label",
    VOLUME,
    "dice",
    "iou",
    "hd95_mm",
    "nsd",
    *_ACQUISITION,
    "seconds",
)
"""Columns of ``cohort_studies.csv`` (metrics other than these four are appended after ``nsd``)."""

_UNITS = {"dice": "Dice", "iou": "IoU", "nsd": "normalised surface Dice", "hd95_mm": "HD95 (mm)", VOLUME: "volume (ml)"}
_DRIFT_KEYS = ("key", "score", "out_of_distribution", "reasons")
_QUEUE_KEYS = ("key", "uncertainty", "rank")


def _study_rows(records: Sequence[StudyRecord]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of ``cohort_studies.csv`` and its columns."""
    extra = sorted({m for r in records for values in r.metrics.values() for m in values} - set(STUDY_COLUMNS))
    columns = list(STUDY_COLUMNS[:10]) + extra + list(STUDY_COLUMNS[10:])
    rows = []
    for record in records:
        base: dict[str, Any] = {"key": record.key, "source": record.source, "status": record.status}
        base["error"] = record.error
        base.update({name: getattr(record.acquisition, name) for name in _ACQUISITION})
        base["seconds"] = record.seconds
        labels = list(dict.fromkeys([*record.volumes_ml, *record.metrics]))
        if record.status != "done" or not labels:
            rows.append(base)
            continue
        for label in labels:
            row = dict(base, label=label, **{VOLUME: record.volumes_ml.get(label)})
            row.update(record.metrics.get(label, {}))
            rows.append(row)
    return rows, columns


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    return str(value)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Parquet beside the CSV (only called when pyarrow is installed; it is not a dependency)."""
    import pyarrow as pa  # optional: only where the environment already has it
    import pyarrow.parquet as pq

    data = {
        c: [_cell(row.get(c)) if isinstance(row.get(c), list | tuple) else row.get(c) for row in rows] for c in columns
    }
    pq.write_table(pa.table(data), path)


def _checked_rows(
    rows: Iterable[Mapping[str, Any]] | None, what: str, needed: Sequence[str], keys: set[str]
) -> list[Mapping[str, Any]]:
    if rows is None:
        return []
    checked = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InputError(f"The {what} row {index} is not a mapping; give rows with the keys {', '.join(needed)}.")
        missing = [k for k in needed if k not in row]
        if missing:
            raise InputError(
                f"The {what} row {index} lacks {', '.join(missing)}; give rows with the keys {', '.join(needed)}."
            )
        if row["key"] not in keys:
            raise InputError(
                f"The {what} row {index} names the study {row['key']!r}, which is not in the records; "
                f"compute the {what} from the same batch."
            )
        checked.append(row)
    return checked


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else _cell(value)
    return escape(_cell(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], table_id: str) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        flag = row.get("flag")
        cls = f' class="flag-{escape(str(flag).replace(" ", "-"))}"' if flag else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _ci_text(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"[{low:.4g}, {high:.4g}]"


def _distribution_plots(done: Sequence[StudyRecord], means: Sequence[CohortMean]) -> list[str]:
    plots = []
    for metric in dict.fromkeys(m.metric for m in means):
        rows = []
        for mean in (m for m in means if m.metric == metric):
            if metric == VOLUME:
                values = [r.volumes_ml.get(mean.label) for r in done]
            else:
                values = [r.metrics.get(mean.label, {}).get(metric) for r in done]
            finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
            rows.append((mean.label, finite, mean.mean, mean.ci_low, mean.ci_high))
        bounded = metric in ("dice", "iou", "nsd")
        name = _UNITS.get(metric, metric)
        plots.append(
            svg_strips(rows, f"{name} per label (mean and 95 % CI in black)", name, (0.0, 1.0) if bounded else None)
        )
    return plots


def _forest_plots(rows: Sequence[SubgroupRow]) -> list[str]:
    plots = []
    for label, metric in dict.fromkeys((r.label, r.metric) for r in rows):
        forest: list[ForestRow] = [
            (f"{r.grouping}: {r.group} (n={r.n})", r.gap, r.gap_low, r.gap_high, r.flag)
            for r in rows
            if r.label == label and r.metric == metric
        ]
        name = _UNITS.get(metric, metric)
        direction = HIGHER_IS_BETTER.get(metric)
        side = "no better side" if direction is None else ("higher is better" if direction else "lower is better")
        plots.append(svg_forest(forest, f"{label}: {name}, group minus cohort ({side})", f"gap in {name}"))
    return plots


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0;"
    "font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee}"
    ".flag-worse td{background:#f9d6d2}.flag-better td{background:#d4efdf}.flag-too-small-to-judge td{color:#888}"
    ".note{color:#555;font-size:13px}"
)


def _html(
    records: Sequence[StudyRecord],
    means: Sequence[CohortMean],
    subgroups: Sequence[SubgroupRow],
    drift: Sequence[Mapping[str, Any]],
    queue: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
) -> str:
    done = [r for r in records if r.status == "done"]
    failed = [r for r in records if r.status != "done"]
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>MedAI cohort report</title>',
        f"<style>{_STYLE}</style></head><body><h1>Cohort report</h1>",
        f'<p id="summary">{len(records)} studies: {len(done)} done, {len(failed)} failed. Intervals are '
        f"{settings['confidence']:.0%} bootstrap intervals ({settings['n_resamples']} resamples, seed "
        f"{settings['seed']}); groups under {settings['min_n']} studies are too small to judge.</p>",
        "<h2>Cohort means</h2>",
        _table(
            [dict(m.to_dict(), ci=_ci_text(m.ci_low, m.ci_high)) for m in means],
            ["label", "metric", "n", "mean", "ci", "excluded", "note"],
            "means",
        ),
        '<p class="note">excluded: values that were not finite (e.g. an infinite HD95 where a structure was '
        "missed or found where there is none), left out of the mean.</p>",
        "<h2>Distributions</h2>",
        *_distribution_plots(done, means),
        "<h2>Subgroup audit</h2>",
        f'<p class="note">{sum(r.flag == "worse" for r in subgroups)} group rows flagged worse, '
        f"{sum(r.flag == 'better' for r in subgroups)} better, {sum(r.flag == TOO_SMALL for r in subgroups)} too "
        f"small to judge, out of {len(subgroups)}. Each row is a separate comparison: at "
        f"{settings['confidence']:.0%}, about {1 - settings['confidence']:.0%} of rows with no real difference are "
        "flagged by chance.</p>",
        *_forest_plots(subgroups),
        _table(
            [
                dict(r.to_dict(), ci=_ci_text(r.ci_low, r.ci_high), gap_ci=_ci_text(r.gap_low, r.gap_high))
                for r in subgroups
            ],
            ["grouping", "group", "label", "metric", "n", "mean", "ci", "cohort_mean", "gap", "gap_ci", "flag", "note"],
            "subgroups",
        ),
    ]
    if drift:
        out = [d for d in drift if d["out_of_distribution"]]
        parts += [
            "<h2>Drift</h2>",
            f'<p id="drift-summary">{len(out)} of {len(drift)} studies out of distribution.</p>',
            _table(
                sorted(drift, key=lambda d: -float(d["score"])),
                ["key", "score", "out_of_distribution", "reasons"],
                "drift",
            ),
        ]
    if queue:
        parts += [
            "<h2>Annotation queue</h2>",
            _table(sorted(queue, key=lambda q: int(q["rank"])), ["rank", "key", "uncertainty"], "queue"),
        ]
    parts.append("<h2>Failed studies</h2>")
    if failed:
        parts.append(_table([r.to_dict() for r in failed], ["key", "source", "error"], "failed"))
    else:
        parts.append('<p id="failed">No study failed.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_cohort_report(
    records: Iterable[StudyRecord],
    output_dir: str | Path,
    *,
    drift: Iterable[Mapping[str, Any]] | None = None,
    queue: Iterable[Mapping[str, Any]] | None = None,
    min_n: int = 5,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    parquet: bool | None = None,
) -> dict[str, Path]:
    """Write the cohort report of ``records`` into ``output_dir`` (see the module docstring), atomically.

    Args:
        records: every study of the batch, done or failed.
        output_dir: the folder to write into (created if needed); the report's files replace earlier ones.
        drift, queue: optional sections (rows as in the module docstring); None or empty leaves them out.
        min_n: the smallest group the subgroup audit judges.
        confidence, n_resamples, seed: of the bootstrap intervals.
        parquet: also write each table as Parquet (None: when pyarrow is installed; True without it is an error).

    Returns:
        ``{"studies", "means", "subgroups", "html"}`` (and ``"<table>_parquet"`` for Parquet) -> final path.

    Raises:
        InputError: no records, a record with an unknown status or a repeated key, a malformed drift or queue row,
            or bad bootstrap settings; nothing is written.
        OutputError: the folder cannot be written; nothing is written.
    """
    records = list(records)
    if not records:
        raise InputError("There are no study records to report on; run the batch on at least one study first.")
    has_pyarrow = importlib.util.find_spec("pyarrow") is not None
    if parquet and not has_pyarrow:
        raise InputError("Parquet output needs pyarrow, which is not installed; install it or write CSV only.")
    parquet = has_pyarrow if parquet is None else parquet
    done = done_records(records)
    keys = {r.key for r in records}
    drift_rows = _checked_rows(drift, "drift", _DRIFT_KEYS, keys)
    queue_rows = _checked_rows(queue, "queue", _QUEUE_KEYS, keys)
    options: dict[str, Any] = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    means = cohort_means(done, **options)
    subgroups = audit_subgroups(done, min_n=min_n, **options)
    study_rows, study_columns = _study_rows(records)
    tables: dict[str, tuple[Sequence[Mapping[str, Any]], list[str]]] = {
        "studies": (study_rows, study_columns),
        "means": ([m.to_dict() for m in means], list(CohortMean.__dataclass_fields__)),
        "subgroups": ([r.to_dict() for r in subgroups], list(SubgroupRow.__dataclass_fields__)),
    }
    html = _html(records, means, subgroups, drift_rows, queue_rows, dict(options, min_n=min_n))
    names: dict[str, str] = {}
    with staged_output(output_dir) as stage:
        for kind, (rows, columns) in tables.items():
            names[kind] = REPORT_FILES[kind]
            _write_csv(stage.folder / names[kind], rows, columns)
            if parquet:
                names[f"{kind}_parquet"] = Path(REPORT_FILES[kind]).with_suffix(".parquet").name
                _write_parquet(stage.folder / names[f"{kind}_parquet"], rows, columns)
        names["html"] = REPORT_FILES["html"]
        (stage.folder / names["html"]).write_text(html, encoding="utf-8")
        final = stage.commit(names.values())
    return {kind: final[name] for kind, name in names.items()}
