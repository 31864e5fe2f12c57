"""Review workflows on a project: lesion generation, blinded reader sessions, metrics, memorization, export.

Each function takes an open :class:`~MedAIExtension.review.store.ReviewStore`, does one step of the review and
records its result in the project, so the CLI (``medai review …``) and the Slicer module share one logic.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.review.features import PLANES, common_grid
from MedAIExtension.review.lesion_insertion import random_insertions
from MedAIExtension.review.memorization import DEFAULT_THRESHOLD, memorization_check
from MedAIExtension.review.metrics import (
    frechet_distance,
    mmd,
    set_features,
    set_metrics,
    standardize,
    tissue_histogram_distance,
)
from MedAIExtension.review.reader_study import (
    ReaderAnswer,
    agreement,
    balanced_sequence,
    per_reader_statistics,
    reader_statistics,
)
from MedAIExtension.review.report import latest_grades, report_html
from MedAIExtension.review.store import ImageRecord, ReviewStore

__all__ = [
    "export_review",
    "generate_lesions",
    "reader_study_results",
    "run_memorization",
    "run_metrics",
    "start_reader_session",
]

ProgressArg = Progress | Callable[[float, str], None] | None


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
    metrics = set_metrics(real_images, synthetic_images, progress=reporter.stage(0.3, 0.85))
    data = {"n_real": len(real), "n_synthetic": len(synthetic), **metrics.to_dict()}
    data["reference"] = _real_reference(real_images, reporter.stage(0.85, 1.0))
    reporter(1.0, "Metrics and their real-vs-real reference done")
    store.save_result("metrics", data)
    return data


def _real_reference(real_images: Sequence[Image], progress: Progress) -> dict[str, Any] | None:
    """FID, MMD and tissue histogram distance between two halves of the real set: what "realistic" scores.

    The halves are the alternate images (on the first real image's grid, as :func:`set_metrics` puts them). None
    with fewer than two real images. Each half holds about half the images, and FID and MMD grow as sets shrink,
    so the reference leans high for small sets.
    """
    if len(real_images) < 2:
        return None
    grid, _ = common_grid(real_images, real_images[0], True, "real image")
    first, second = grid[0::2], grid[1::2]
    features_a = set_features(first, progress=progress.stage(0.0, 0.45), label="real image")
    features_b = set_features(second, progress=progress.stage(0.45, 0.9), label="real image")
    fid: dict[str, float | None] = {}
    distance: dict[str, float | None] = {}
    for plane in PLANES:
        a, b = standardize(features_a[plane], features_b[plane])
        fid[plane], distance[plane] = frechet_distance(a, b), mmd(a, b)
    for values in (fid, distance):
        values["mean"] = float(np.mean([values[plane] for plane in PLANES]))
    histograms = tissue_histogram_distance(first, second, progress=progress.stage(0.9, 1.0))
    finite = {k: (v if math.isfinite(v) else None) for k, v in histograms.items()}
    return {
        "fid": fid,
        "mmd": distance,
        "tissue_histogram_distance": finite,
        "description": (
            f"the same metric between two halves of the real set ({len(first)} vs {len(second)} real images, "
            "alternate images); smaller sets inflate FID and MMD, so compare orders of magnitude."
        ),
    }


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


_MANIFEST_COLUMNS = (
    "id",
    "path",
    "sha256",
    "role",
    "generator",
    "version",
    "seed",
    "parent",
    "reviewers",
    "mean_realism",
    "artifacts",
    "memorization_similarity",
    "near_copy_of",
    "provenance",
)


def _manifest_rows(
    store: ReviewStore, records: Sequence[ImageRecord], memorization: dict[str, Any] | None
) -> list[dict[str, Any]]:
    grades = latest_grades(store)
    matches = {row.get("synthetic_id"): row for row in (memorization or {}).get("matches", [])}
    rows = []
    for record in records:
        own = grades.get(record.id, [])
        realism = [g.realism for g in own if g.realism is not None]
        provenance = dict(record.provenance or {})
        match = matches.get(record.id, {})
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
                "memorization_similarity": round(float(match["similarity"]), 4) if "similarity" in match else "",
                "near_copy_of": _real_name(match) if match.get("flagged") else "",
                "provenance": json.dumps(provenance, sort_keys=True),
            }
        )
    return rows


def _real_name(match: dict[str, Any]) -> str:
    """``#id path`` of the nearest real image of a memorization match."""
    return f"#{match.get('real_id', '?')} {match.get('real_path', '')}".strip()


def _near_copy_warnings(
    accepted: Sequence[ImageRecord], memorization: dict[str, Any] | None, exclude: bool
) -> tuple[set[int], list[str]]:
    """The accepted images the latest memorization check flagged, and what to tell the user about them."""
    if memorization is None:
        return set(), [
            "the memorization check has not been run: the accepted images were not checked for near-copies of "
            "real images (run: medai review memorization)."
        ]
    matches = {row.get("synthetic_id"): row for row in memorization.get("matches", [])}
    messages = []
    unchecked = [r.id for r in accepted if r.id not in matches]
    if unchecked:
        shown = ", ".join(f"#{i}" for i in unchecked[:10]) + (" …" if len(unchecked) > 10 else "")
        messages.append(
            f"{len(unchecked)} accepted image(s) ({shown}) were added after the latest memorization check "
            f"({memorization.get('saved_at', '?')}) and were not checked for near-copies; run medai review "
            "memorization again."
        )
    flagged = {r.id for r in accepted if matches.get(r.id, {}).get("flagged")}
    action = "excluded from accepted.csv" if exclude else "kept in accepted.csv (--exclude-near-copies leaves it out)"
    for record in accepted:
        if record.id in flagged:
            match = matches[record.id]
            parent = str((record.provenance or {}).get("parent", ""))
            own = ""
            if parent in (str(match.get("real_id")), str(match.get("real_path"))):
                own = " (its own provenance parent: a lesion inserted into a real image still shows that patient)"
            messages.append(
                f"accepted synthetic image #{record.id} ({Path(record.path).name}) is a near-copy of real image "
                f"{_real_name(match)}{own}"
                f" (memorization similarity {float(match['similarity']):.3f} >= threshold "
                f"{float(match.get('threshold', float('nan'))):g}); {action}."
            )
    return flagged, messages


def export_review(
    store: ReviewStore,
    output_dir: str | os.PathLike[str],
    *,
    min_reviewers: int = 1,
    exclude_near_copies: bool = False,
    warn: Callable[[str], None] | None = None,
    progress: ProgressArg = None,
) -> dict[str, Path]:
    """Write the accepted synthetic subset as a training manifest (CSV + JSON) and the review report (HTML).

    Every accepted image the latest memorization check flagged as a near-copy of a real image is reported: a
    warning, its ``near_copy_of`` and ``memorization_similarity`` columns in the manifest and a marked row in the
    report; ``exclude_near_copies`` leaves such images out of the manifest. A missing memorization check, or
    accepted images added after it, are warned about too.

    Args:
        store: the open review project.
        output_dir: folder for ``accepted.csv``, ``accepted.json`` and ``review_report.html``.
        min_reviewers: how many reviewers must have accepted an image.
        exclude_near_copies: leave flagged near-copies out of the manifest.
        warn: called with each warning (the CLI prints ``warning: …`` on stderr); None: :func:`warnings.warn`.
        progress: optional ``callback(fraction, message)``.

    Returns:
        The written files by kind (``manifest_csv``, ``manifest_json``, ``report``).
    """
    reporter = Progress(progress)
    out = ensure_writable_directory(output_dir)
    accepted = store.accepted(min_reviewers)
    memorization = store.latest_result("memorization")
    flagged, messages = _near_copy_warnings(accepted, memorization, exclude_near_copies)
    exported = [r for r in accepted if not (exclude_near_copies and r.id in flagged)]
    rows = _manifest_rows(store, exported, memorization)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".medai-staging-"))
    names = {"manifest_csv": "accepted.csv", "manifest_json": "accepted.json", "report": "review_report.html"}
    try:
        reporter(0.1, "writing the manifest")
        with open(staging / names["manifest_csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=_MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        document = {
            "project": store.project_info(),
            "min_reviewers": min_reviewers,
            "exclude_near_copies": exclude_near_copies,
            "memorization_checked_at": (memorization or {}).get("saved_at"),
            "warnings": messages,
            "images": rows,
        }
        (staging / names["manifest_json"]).write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
        reporter(0.5, "writing the report")
        html = report_html(store, accepted, exported, messages)
        (staging / names["report"]).write_text(html, encoding="utf-8")
        for name in names.values():
            os.replace(staging / name, out / name)
    except OSError as exc:
        reason = exc.strerror or exc
        raise OutputError(f"Writing the export into {out} failed ({reason}); nothing was written.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for message in messages:
        if warn is None:
            warnings.warn(message, UserWarning, stacklevel=2)
        else:
            warn(message)
    reporter(1.0, f"{len(rows)} accepted images exported")
    return {kind: out / name for kind, name in names.items()}
