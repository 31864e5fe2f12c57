"""Review workflows on a project: lesion generation, blinded reader sessions, metrics, memorization, export.

Each function takes an open :class:`~MedAIExtension.review.store.ReviewStore`, does one step of the review and
records its result in the project, so the CLI (``medai review …``) and the Slicer module share one logic.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.review.lesion_insertion import random_insertions
from MedAIExtension.review.memorization import DEFAULT_THRESHOLD, memorization_check
from MedAIExtension.review.metrics import set_metrics
from MedAIExtension.review.plots import svg_bars, svg_roc
from MedAIExtension.review.reader_study import (
    ReaderAnswer,
    agreement,
    balanced_sequence,
    per_reader_statistics,
    reader_statistics,
)
from MedAIExtension.review.store import GradeRecord, ImageRecord, ReviewStore

__all__ = [
    "export_review",
    "generate_lesions",
    "reader_study_results",
    "run_memorization",
    "run_metrics",
    "start_reader_session",
]

ProgressArg = Progress | Callable[[float, str], None] | None
_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px}"
)


def _load(records: Sequence[ImageRecord], reporter: Progress, what: str) -> list[Image]:
    images = []
    for index, record in enumerate(records):
        reporter(index / max(len(records), 1), f"loading {what} image {index + 1}/{len(records)}")
        images.append(load_image(record.path))
    return images


def _both_sets(store: ReviewStore) -> tuple[list[ImageRecord], list[ImageRecord]]:
    real, synthetic = store.images("real"), store.images("synthetic")
    if not real or not synthetic:
        raise InputError(
            f"The project has {len(real)} real and {len(synthetic)} synthetic image(s); this step compares the two "
            "sets, so import both first (medai review import --real … / --synthetic …)."
        )
    return real, synthetic


def generate_lesions(
    store: ReviewStore,
    parent_id: int,
    count: int,
    output_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    sizes: tuple[float, float] = (4.0, 20.0),
    reviewer: str | None = None,
    progress: ProgressArg = None,
) -> list[ImageRecord]:
    """Insert ``count`` synthetic nodules into real image ``parent_id`` (one per copy), save and import them.

    Each synthetic image is written as NRRD into ``output_dir`` and added with its full provenance (generator,
    version, seed, parent, centre, size, kind).
    """
    parent = store.image(parent_id)
    if str(parent.role) != "real":
        raise InputError(f"Image {parent_id} is synthetic; lesions are inserted into a real image.")
    reporter = Progress(progress)
    reporter(0.0, f"loading real image {parent_id}")
    ct = load_image(parent.path)
    lesions = random_insertions(ct, None, count, seed, sizes=sizes, progress=reporter.stage(0.05, 0.8))
    out = ensure_writable_directory(output_dir)
    records = []
    for index, lesion in enumerate(lesions):
        reporter(0.8 + 0.2 * index / max(len(lesions), 1), f"saving synthetic image {index + 1}/{len(lesions)}")
        path = write_volume_file(lesion.image, out / f"lesion_p{parent_id}_s{seed}_{index + 1:03d}.nrrd")
        provenance = {**lesion.provenance, "parent": parent_id}
        records.append(store.add_image(path, "synthetic", provenance, reviewer=reviewer))
    reporter(1.0, f"{len(records)} synthetic images added")
    return records


def start_reader_session(
    store: ReviewStore, reviewer: str, *, per_class: int | None = None, seed: int | None = None
) -> int:
    """A new blinded reader session for ``reviewer``: balanced, randomised real/synthetic order, stored."""
    real, synthetic = _both_sets(store)
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    trials = balanced_sequence([r.id for r in real], [s.id for s in synthetic], per_class, seed=seed)
    return store.create_reader_session(reviewer, trials, seed=seed)


def reader_study_results(store: ReviewStore) -> dict[str, Any]:
    """Statistics of every answered trial: pooled, per reader, and inter-reader agreement (JSON-ready)."""
    by_reader: dict[str, list[ReaderAnswer]] = {}
    for session in store.reader_sessions():
        for trial in store.reader_trials(session.id):
            if trial.said_synthetic is None:
                continue
            if trial.confidence is None:
                raise InputError(
                    f"Trial {trial.index} of reader session {session.id} was answered without a confidence; the "
                    "reader-study statistics need one (1 guess .. 5 certain) with every answer."
                )
            answer = ReaderAnswer(trial.image_id, trial.is_synthetic, trial.said_synthetic, trial.confidence)
            by_reader.setdefault(session.reviewer, []).append(answer)
    if not by_reader:
        raise InputError("No reader-study answers yet. Start a session (medai review reader-study start) first.")
    pooled = [answer for answers in by_reader.values() for answer in answers]
    result: dict[str, Any] = {
        "pooled": reader_statistics(pooled).to_dict(),
        "readers": {name: stats.to_dict() for name, stats in per_reader_statistics(by_reader).items()},
    }
    if len(by_reader) >= 2:
        result["agreement"] = agreement(by_reader).to_dict()
    store.save_result("reader_study", result)
    return result


def run_metrics(store: ReviewStore, progress: ProgressArg = None, token: CancelToken | None = None) -> dict[str, Any]:
    """Realism and diversity metrics of the synthetic set against the real set; saved in the project."""
    reporter = Progress(progress, token)
    real, synthetic = _both_sets(store)
    real_images = _load(real, reporter.stage(0.0, 0.15), "real")
    synthetic_images = _load(synthetic, reporter.stage(0.15, 0.3), "synthetic")
    metrics = set_metrics(real_images, synthetic_images, progress=reporter.stage(0.3, 1.0))
    data = {"n_real": len(real), "n_synthetic": len(synthetic), **metrics.to_dict()}
    store.save_result("metrics", data)
    return data


def run_memorization(
    store: ReviewStore, threshold: float | None = None, progress: ProgressArg = None, token: CancelToken | None = None
) -> dict[str, Any]:
    """Nearest real image of every synthetic image and the near-copies flagged; saved in the project."""
    reporter = Progress(progress, token)
    real, synthetic = _both_sets(store)
    real_images = _load(real, reporter.stage(0.0, 0.15), "real")
    synthetic_images = _load(synthetic, reporter.stage(0.15, 0.3), "synthetic")
    matches = memorization_check(
        synthetic_images,
        real_images,
        DEFAULT_THRESHOLD if threshold is None else threshold,
        progress=reporter.stage(0.3, 1.0),
    )
    rows = []
    for record, match in zip(synthetic, matches, strict=True):
        row = match.to_dict()
        row["synthetic_id"] = record.id
        row["synthetic_path"] = record.path
        nearest = getattr(match, "real_index", None)
        if nearest is not None:
            row["real_id"] = real[int(nearest)].id
            row["real_path"] = real[int(nearest)].path
        rows.append(row)
    data = {"matches": rows, "flagged": [row for row in rows if row.get("flagged")]}
    store.save_result("memorization", data)
    return data


def _latest_grades(store: ReviewStore) -> dict[int, list[GradeRecord]]:
    grades: dict[int, list[GradeRecord]] = {}
    for grade in store.grades(latest_only=True):
        grades.setdefault(grade.image_id, []).append(grade)
    return grades


def _manifest_rows(store: ReviewStore, records: Sequence[ImageRecord]) -> list[dict[str, Any]]:
    grades = _latest_grades(store)
    rows = []
    for record in records:
        own = grades.get(record.id, [])
        realism = [g.realism for g in own if g.realism is not None]
        provenance = dict(record.provenance or {})
        rows.append(
            {
                "id": record.id,
                "path": record.path,
                "sha256": record.sha256,
                "role": str(record.role),
                "generator": provenance.get("generator", ""),
                "version": provenance.get("version", ""),
                "seed": provenance.get("seed", ""),
                "parent": provenance.get("parent", ""),
                "reviewers": ";".join(sorted(g.reviewer for g in own)),
                "mean_realism": round(sum(realism) / len(realism), 3) if realism else "",
                "artifacts": ";".join(sorted({a for g in own for a in g.artifacts})),
                "provenance": json.dumps(provenance, sort_keys=True),
            }
        )
    return rows


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _report_html(store: ReviewStore, accepted: Sequence[ImageRecord]) -> str:
    info = store.project_info()
    synthetic = store.images("synthetic")
    grades = _latest_grades(store)
    realism = Counter(g.realism for image in synthetic for g in grades.get(image.id, []) if g.realism is not None)
    artifacts = Counter(a for image in synthetic for g in grades.get(image.id, []) for a in g.artifacts)
    parts = [
        f"<h1>Synthetic data review: {escape(str(info.get('name', '')))}</h1>",
        _table(
            [
                ("Real images", len(store.images("real"))),
                ("Synthetic images", len(synthetic)),
                ("Synthetic images graded", sum(1 for image in synthetic if grades.get(image.id))),
                ("Accepted (exported)", len(accepted)),
            ],
            ("", "count"),
        ),
        "<h2>Expert grades</h2>",
        svg_bars([str(v) for v in range(1, 6)], [realism.get(v, 0) for v in range(1, 6)], "Realism (1–5)"),
    ]
    if artifacts:
        names = sorted(artifacts)
        parts.append(svg_bars(names, [artifacts[n] for n in names], "Artifact flags"))
    study = store.latest_result("reader_study")
    parts.append("<h2>Blinded reader study</h2>")
    if study:
        pooled = study["pooled"]
        parts.append(f"<p>{escape(str(pooled.get('verdict', '')))}</p>")
        rows = [("all readers", pooled), *sorted(study.get("readers", {}).items())]
        parts.append(
            _table(
                [
                    (
                        name,
                        s["n"],
                        f"{s['accuracy']:.3f}",
                        f"{s['ci_low']:.2f}–{s['ci_high']:.2f}",
                        f"{s['p_greater']:.3g}",
                        "" if s.get("auc") is None else f"{s['auc']:.3f}",
                    )
                    for name, s in rows
                ],
                ("reader", "answers", "accuracy", "95 % CI", "p (accuracy > 50 %)", "ROC AUC"),
            )
        )
        if pooled.get("roc_fpr") and pooled.get("auc") is not None:
            parts.append(svg_roc(pooled["roc_fpr"], pooled["roc_tpr"], pooled["auc"]))
        if "agreement" in study:
            kappa = study["agreement"].get("fleiss_kappa")
            parts.append(f"<p>Fleiss' kappa: {'n/a' if kappa is None else f'{kappa:.3f}'}</p>")
    else:
        parts.append("<p>No reader study yet.</p>")
    metrics = store.latest_result("metrics")
    parts.append("<h2>Realism and diversity metrics</h2>")
    if metrics:
        flat = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        nested = [(f"{k}: {kk}", vv) for k, v in metrics.items() if isinstance(v, dict) for kk, vv in v.items()]
        shown = [(k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in flat + nested if not isinstance(v, dict)]
        parts.append(_table(shown, ("metric", "value")))
    else:
        parts.append("<p>Metrics not computed yet (medai review metrics).</p>")
    memorization = store.latest_result("memorization")
    parts.append("<h2>Memorization check (near-copies of real images)</h2>")
    if memorization:
        flagged = memorization.get("flagged", [])
        parts.append(f"<p>{len(flagged)} of {len(memorization.get('matches', []))} synthetic images flagged.</p>")
        if flagged:
            parts.append(
                _table(
                    [
                        (r.get("synthetic_id"), r.get("real_id", ""), f"{r.get('similarity', float('nan')):.3f}")
                        for r in flagged
                    ],
                    ("synthetic image", "nearest real image", "similarity"),
                )
            )
    else:
        parts.append("<p>Memorization check not run yet (medai review memorization).</p>")
    head = f"<meta charset='utf-8'><title>MedAI review</title><style>{_STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(parts)}</body></html>"


def export_review(
    store: ReviewStore, output_dir: str | os.PathLike[str], *, min_reviewers: int = 1, progress: ProgressArg = None
) -> dict[str, Path]:
    """Write the accepted synthetic subset as a training manifest (CSV + JSON) and the review report (HTML)."""
    reporter = Progress(progress)
    out = ensure_writable_directory(output_dir)
    accepted = store.accepted(min_reviewers)
    rows = _manifest_rows(store, accepted)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".medai-staging-"))
    names = {"manifest_csv": "accepted.csv", "manifest_json": "accepted.json", "report": "review_report.html"}
    try:
        reporter(0.1, "writing the manifest")
        columns = list(rows[0]) if rows else ["id", "path", "sha256", "role", "provenance"]
        with open(staging / names["manifest_csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        document = {"project": store.project_info(), "min_reviewers": min_reviewers, "images": rows}
        (staging / names["manifest_json"]).write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
        reporter(0.5, "writing the report")
        (staging / names["report"]).write_text(_report_html(store, accepted), encoding="utf-8")
        for name in names.values():
            os.replace(staging / name, out / name)
    except OSError as exc:
        reason = exc.strerror or exc
        raise OutputError(f"Writing the export into {out} failed ({reason}); nothing was written.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    reporter(1.0, f"{len(rows)} accepted images exported")
    return {kind: out / name for kind, name in names.items()}
