"""The HTML review report that ``medai review export`` writes (one self-contained file).

Sections: counts (with the accepted near-copies), expert grades, the blinded reader study (each reader's own test
first; the figure pooled over readers only after it and labelled as not independent), the realism and diversity
metrics (readable name, unit, direction and the real-vs-real reference), and the memorization check (file names,
threshold, and for each near-copy its key slice next to the nearest real image's as small embedded PNGs).
"""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.review.features import common_grid
from MedAIExtension.review.plots import svg_bars, svg_roc_curves
from MedAIExtension.review.store import GradeRecord, ImageRecord, ReviewStore
from MedAIExtension.tracking.lungs import axial_axis

__all__ = ["POOLED_LABEL", "latest_grades", "metric_rows", "report_html"]

#: How the report labels statistics of answers pooled over several readers.
POOLED_LABEL = "answers pooled over readers; not independent"

_STYLE = (
    "body{font-family:sans-serif;max-width:64em;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}.warning{background:#fdecea;padding:.5em}"
    ".note{color:#555}.near-copy{background:#fdecea}"
)
_PICTURE_PX = 128  # longest side of a key-slice picture
_PICTURE_WINDOW = (-1350.0, 150.0)  # lung window (level -600, width 1500)
_MAX_PICTURE_ROWS = 20
#: Working-grid size of :mod:`MedAIExtension.review.memorization` (its alignment shifts are in those voxels).
_MEMORIZATION_WORK_SIZE = 64
_PLANES = ("axial", "coronal", "sagittal", "mean")

# metric key -> (readable name, unit, direction); {part} is a plane or an HU band
_METRICS: dict[str, tuple[str, str, str]] = {
    "fid": (
        "2.5D FID ({part})",
        "none (standardised features)",
        "lower is more realistic (0 = same feature distribution)",
    ),
    "mmd": ("MMD² with an RBF kernel ({part})", "none (standardised features)", "lower is more realistic (≈ 0)"),
    "tissue_histogram_distance": (
        "Tissue histogram distance ({part} HU band)",
        "HU (Wasserstein-1)",
        "lower is more realistic (0 = same HU distribution)",
    ),
    "diversity_synthetic": (
        "MS-SSIM between synthetic images (diversity)",
        "none (0–1)",
        "lower is more diverse; close to the real reference is realistic",
    ),
}


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    attribute = f' class="{cls}"' if cls else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return "n/a" if value is None else str(value)


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(name, value, real-vs-real reference, unit, direction)`` of a stored metrics result.

    The reference comes from ``metrics["reference"]`` (one half of the real set against the other, see
    :func:`MedAIExtension.review.workflow.run_metrics`) and, for diversity, ``diversity_real``; "no reference"
    where neither exists. Keys the report does not know are listed with their raw name.
    """
    reference = metrics.get("reference") or {}
    rows: list[tuple[str, str, str, str, str]] = []
    for key in ("fid", "mmd", "tissue_histogram_distance"):
        values = metrics.get(key)
        if not isinstance(values, dict):
            continue
        name, unit, direction = _METRICS[key]
        found = reference.get(key)
        ref_values: dict[str, Any] = found if isinstance(found, dict) else {}
        parts = [p for p in _PLANES if p in values] + sorted(p for p in values if p not in _PLANES)
        for part in parts:
            shown = part if key == "tissue_histogram_distance" else f"{part} slices"
            if key != "tissue_histogram_distance" and part == "mean":
                shown = "mean of the axial, coronal and sagittal values"
            ref = _number(ref_values.get(part)) if part in ref_values else "no reference"
            rows.append((name.format(part=shown), _number(values[part]), ref, unit, direction))
    if "diversity_synthetic" in metrics:
        name, unit, direction = _METRICS["diversity_synthetic"]
        real = metrics.get("diversity_real")
        ref = f"{_number(real)} (between real images)" if real is not None else "no reference"
        rows.append((name, _number(metrics["diversity_synthetic"]), ref, unit, direction))
    known = {*_METRICS, "diversity_real", "reference", "n_real", "n_synthetic", "feature_extractor", "notes"}
    for key, value in metrics.items():
        if key in known or key == "saved_at" or isinstance(value, dict | list | str):
            continue
        rows.append((key, _number(value), "no reference", "unknown", "unknown"))
    return rows


def _overview(
    store: ReviewStore, accepted: Sequence[ImageRecord], exported: Sequence[ImageRecord], near_copy_ids: set[int]
) -> str:
    synthetic = store.images("synthetic")
    grades = latest_grades(store)
    return _table(
        [
            ("Real images", len(store.images("real"))),
            ("Synthetic images", len(synthetic)),
            ("Synthetic images graded", sum(1 for image in synthetic if grades.get(image.id))),
            ("Accepted by the reviewers", len(accepted)),
            ("Accepted near-copies of real images (memorization check)", sum(r.id in near_copy_ids for r in accepted)),
            ("Exported (accepted.csv)", len(exported)),
        ],
        ("", "count"),
    )


def latest_grades(store: ReviewStore) -> dict[int, list[GradeRecord]]:
    """Each image's latest grade per reviewer, by image id."""
    grades: dict[int, list[GradeRecord]] = {}
    for grade in store.grades(latest_only=True):
        grades.setdefault(grade.image_id, []).append(grade)
    return grades


def _grades_section(store: ReviewStore) -> list[str]:
    synthetic = store.images("synthetic")
    grades = latest_grades(store)
    realism = Counter(g.realism for image in synthetic for g in grades.get(image.id, []) if g.realism is not None)
    artifacts = Counter(a for image in synthetic for g in grades.get(image.id, []) for a in g.artifacts)
    parts = [
        "<h2>Expert grades</h2>",
        svg_bars([str(v) for v in range(1, 6)], [realism.get(v, 0) for v in range(1, 6)], "Realism (1–5)"),
    ]
    if artifacts:
        names = sorted(artifacts)
        parts.append(svg_bars(names, [artifacts[n] for n in names], "Artifact flags"))
    return parts


def _stats_row(name: str, s: Mapping[str, Any]) -> tuple[Any, ...]:
    verdict = "indistinguishable" if s.get("indistinguishable") else "distinguishable"
    return (
        name,
        s["n"],
        f"{s['accuracy']:.3f}",
        f"{s['ci_low']:.2f}–{s['ci_high']:.2f}",
        f"{s['p_greater']:.3g}",
        "n/a" if s.get("auc") is None else f"{s['auc']:.3f}",
        verdict,
    )


_STATS_HEADER = ("reader", "answers", "accuracy", "95 % CI", "p (accuracy > 50 %)", "ROC AUC", "at α")


def _reader_section(study: Mapping[str, Any] | None) -> list[str]:
    parts = ["<h2>Blinded reader study</h2>"]
    if not study:
        return [*parts, "<p>No reader study yet.</p>"]
    readers = sorted((study.get("readers") or {}).items())
    pooled = study.get("pooled")
    if readers:
        told = [name for name, s in readers if not s.get("indistinguishable")]
        alpha = readers[0][1].get("alpha", 0.05)
        parts.append(
            f'<p class="headline"><b>Per reader:</b> {len(told)} of {len(readers)} reader(s) told synthetic from '
            f"real (one-sided exact binomial test of each reader's own answers at α = {alpha:g}).</p>"
        )
        parts.append(_table([_stats_row(name, s) for name, s in readers], _STATS_HEADER, "per-reader"))
        parts.extend(f"<p>{escape(name)}: {escape(str(s.get('verdict', '')))}</p>" for name, s in readers)
    if pooled:
        parts.append(f"<h3>Pooled ({escape(POOLED_LABEL)})</h3>")
        parts.append(
            f'<p class="note">The same images are read by several readers, so the pooled answers are not '
            f"independent trials and the pooled p-value overstates the evidence; the per-reader tests above are the "
            f"valid ones. Pooled: {escape(str(pooled.get('verdict', '')))}</p>"
        )
        parts.append(_table([_stats_row(f"pooled ({POOLED_LABEL})", pooled)], _STATS_HEADER, "pooled"))
    curves = [(f"{name} (AUC {s['auc']:.2f})", s["roc_fpr"], s["roc_tpr"]) for name, s in readers if s.get("auc")]
    if not curves and pooled and pooled.get("auc") is not None:
        curves = [(f"pooled, not independent (AUC {pooled['auc']:.2f})", pooled["roc_fpr"], pooled["roc_tpr"])]
    if curves:
        parts.append(svg_roc_curves(curves, "Reader study ROC (per reader)"))
    if "agreement" in study:
        kappa = study["agreement"].get("fleiss_kappa")
        parts.append(f"<p>Inter-reader agreement, Fleiss' kappa: {'n/a' if kappa is None else f'{kappa:.3f}'}</p>")
    return parts


def _metrics_section(metrics: Mapping[str, Any] | None) -> list[str]:
    parts = ["<h2>Realism and diversity metrics</h2>"]
    if not metrics:
        return [*parts, "<p>Metrics not computed yet (medai review metrics).</p>"]
    parts.append(
        f"<p>{metrics.get('n_synthetic', '?')} synthetic against {metrics.get('n_real', '?')} real images.</p>"
    )
    header = ("metric", "value", "real-vs-real reference", "unit", "direction")
    parts.append(_table(metric_rows(metrics), header, "metrics"))
    reference = metrics.get("reference")
    if isinstance(reference, dict) and reference.get("description"):
        parts.append(f'<p class="note">Reference: {escape(str(reference["description"]))}</p>')
    elif not reference:
        parts.append('<p class="note">No real-vs-real reference (it needs at least two real images).</p>')
    if metrics.get("feature_extractor"):
        parts.append(f'<p class="note">Features: {escape(str(metrics["feature_extractor"]))}</p>')
    parts.extend(f'<p class="note">{escape(str(note))}</p>' for note in metrics.get("notes") or [])
    return parts


def _png(values: np.ndarray, spacing_rc: tuple[float, float]) -> str:
    """A small grayscale PNG (lung window, anatomical aspect) of a 2D slice as a ``data:`` URI."""
    from PIL import Image as PILImage

    low, high = _PICTURE_WINDOW
    gray = np.clip((values.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    picture = PILImage.fromarray((gray * 255).astype(np.uint8))
    height_mm, width_mm = values.shape[0] * spacing_rc[0], values.shape[1] * spacing_rc[1]
    scale = _PICTURE_PX / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    picture = picture.resize(size, PILImage.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _key_slices(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """PNG URIs of the key slice: synthetic (aligned onto the nearest real image if possible) and real."""
    from scipy import ndimage

    real = load_image(row["real_path"])
    synthetic: Image = common_grid([load_image(row["synthetic_path"])], real, True, "synthetic image")[0][0]
    axis = axial_axis(real)
    index = real.shape[axis] // 2
    shift = np.asarray(row.get("shift_voxels") or (0.0, 0.0, 0.0), dtype=float)
    factor = max(1, math.ceil(max(real.shape) / _MEMORIZATION_WORK_SIZE))
    shift = shift * factor  # image voxels (k, j, i) that move the synthetic image onto the real one
    aligned = bool(np.any(np.abs(shift) > 0.0))
    source = int(np.clip(round(index - shift[axis]), 0, synthetic.shape[axis] - 1))
    syn_slice = np.take(synthetic.array, source, axis=axis).astype(np.float32)
    in_plane = [s for a, s in enumerate(shift) if a != axis]
    if aligned:
        syn_slice = ndimage.shift(syn_slice, in_plane, order=1, mode="nearest")
    spacing = real.spacing[::-1]
    spacing_rc = tuple(float(s) for a, s in enumerate(spacing) if a != axis)
    real_slice = np.take(real.array, index, axis=axis)
    how = "after the memorization check's alignment (translation)" if aligned else "same central slice, unaligned"
    rc = (spacing_rc[0], spacing_rc[1])
    return _png(syn_slice, rc), _png(real_slice, rc), f"central axial slice of the real image, {how}"


def _copied_how(row: Mapping[str, Any]) -> str:
    """How the synthetic image relates to its real parent: zoom and mirroring found by the alignment."""
    zoom = float(row.get("zoom", 1.0) or 1.0)
    parts = [f"zoomed {zoom - 1.0:+.0%}"] if abs(zoom - 1.0) >= 0.02 else []
    if row.get("mirrored"):
        parts.append(f"mirrored {row['mirrored']}")
    return ", ".join(parts) or "same scale, not mirrored"


def _memorization_section(
    memorization: Mapping[str, Any] | None, accepted_ids: set[int], exported_ids: set[int]
) -> list[str]:
    parts = ["<h2>Memorization check (near-copies of real images)</h2>"]
    if not memorization:
        return [
            *parts,
            '<p class="warning">Memorization check not run yet: accepted images were not checked for near-copies '
            "of real images (medai review memorization).</p>",
        ]
    matches = memorization.get("matches", [])
    flagged = memorization.get("flagged", [])
    thresholds = sorted({float(r["threshold"]) for r in matches if r.get("threshold") is not None})
    threshold = ", ".join(f"{t:g}" for t in thresholds) or "unknown"
    parts.append(
        f"<p>{len(flagged)} of {len(matches)} synthetic images flagged as near-copies (similarity after alignment "
        f"≥ threshold {threshold}; checked {escape(str(memorization.get('saved_at', '')))}).</p>"
    )
    if not flagged:
        return parts
    header = ("synthetic image", "nearest real image", "similarity", "threshold", "copied how", "accepted", "key slice")
    rows = []
    for number, row in enumerate(flagged):
        sid = row.get("synthetic_id")
        state = "no"
        if sid in accepted_ids:
            state = "yes, in accepted.csv" if sid in exported_ids else "yes, excluded from accepted.csv"
        cells = [
            f"#{sid} {Path(str(row.get('synthetic_path', ''))).name}",
            f"#{row.get('real_id', '?')} {Path(str(row.get('real_path', ''))).name}",
            f"{float(row.get('similarity', math.nan)):.3f}",
            f"{float(row.get('threshold', math.nan)):g}",
            _copied_how(row),
            state,
        ]
        picture = "<td>not shown (first 20 only)</td>"
        if number < _MAX_PICTURE_ROWS:
            try:
                syn_uri, real_uri, how = _key_slices(row)
                picture = (
                    f'<td><figure><img class="synthetic" src="{syn_uri}" alt="synthetic #{sid}">'
                    f'<img class="real" src="{real_uri}" alt="real #{row.get("real_id", "?")}">'
                    f"<figcaption>synthetic (left) vs nearest real (right); {escape(how)}</figcaption></figure></td>"
                )
            except (InputError, OSError, KeyError) as exc:
                picture = f"<td>pictures unavailable ({escape(str(exc))})</td>"
        style = ' class="near-copy"' if state.startswith("yes") else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + picture + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    parts.append(f'<table class="memorization"><tr>{head}</tr>{"".join(rows)}</table>')
    return parts


def report_html(
    store: ReviewStore,
    accepted: Sequence[ImageRecord],
    exported: Sequence[ImageRecord],
    warnings: Sequence[str] = (),
) -> str:
    """The review report as one HTML document.

    Args:
        store: the open review project.
        accepted: the synthetic images accepted by the reviewers.
        exported: those written to the manifest (``accepted`` less excluded near-copies).
        warnings: messages shown at the top (accepted near-copies, memorization check missing or stale).
    """
    info = store.project_info()
    memorization = store.latest_result("memorization")
    flagged_ids = {int(r["synthetic_id"]) for r in (memorization or {}).get("flagged", []) if "synthetic_id" in r}
    parts = [f"<h1>Synthetic data review: {escape(str(info.get('name', '')))}</h1>"]
    parts.extend(f'<p class="warning">Warning: {escape(w)}</p>' for w in warnings)
    parts.append(_overview(store, accepted, exported, flagged_ids))
    parts.extend(_grades_section(store))
    parts.extend(_reader_section(store.latest_result("reader_study")))
    parts.extend(_metrics_section(store.latest_result("metrics")))
    parts.extend(_memorization_section(memorization, {r.id for r in accepted}, {r.id for r in exported}))
    head = f"<meta charset='utf-8'><title>MedAI review</title><style>{_STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(parts)}</body></html>"
