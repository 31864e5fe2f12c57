"""Key-slice pictures of each tracked nodule at both time points, and the HTML tracking report.

Crops are sampled on an axial plane through the nodule centre in RAS (radiological view: patient right on the
left, anterior up), so they look the same whatever the acquisition orientation.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.types import Finding

__all__ = ["NoduleSide", "axial_crop", "nodule_picture", "tracking_html"]

#: One study's side of a nodule picture: the image, the finding (None where the nodule is absent) and the centre.
NoduleSide = tuple[Image, Finding | None, Sequence[float]]

_LUNG_WINDOW = (-600.0, 1500.0)


def axial_crop(
    image: Image, finding: Finding | None, center_ras: Sequence[float], size_mm: float = 40.0, pixel_mm: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Grey values (lung window, 0..1) and the nodule's mask on an axial RAS plane through ``center_ras``."""
    from scipy.ndimage import map_coordinates

    n = int(round(size_mm / pixel_mm))
    offsets = (np.arange(n) - (n - 1) / 2.0) * pixel_mm
    x, y = np.meshgrid(offsets, offsets)  # x: columns, y: rows
    centre = np.asarray(center_ras, dtype=float)
    points = np.stack([centre[0] - x, centre[1] - y, np.full_like(x, centre[2])], axis=-1)  # R left, A up
    inverse = np.linalg.inv(image.ijk_to_ras)
    ijk = points @ inverse[:3, :3].T + inverse[:3, 3]
    kji = ijk[..., ::-1].reshape(-1, 3).T
    # interpolate in the block of voxels around the plane only (casting the whole CT to float would cost ~1 s)
    shape = np.asarray(image.array.shape)
    low = np.clip(np.floor(kji.min(axis=1)).astype(int) - 1, 0, shape)
    high = np.clip(np.ceil(kji.max(axis=1)).astype(int) + 2, low, shape)
    block = image.array[tuple(slice(a, b) for a, b in zip(low, high, strict=True))].astype(np.float32)
    if block.size:
        grey = map_coordinates(block, kji - low[:, None], order=1, mode="constant", cval=-1000.0)
    else:  # the plane misses the image
        grey = np.full(kji.shape[1], -1000.0)
    level, width = _LUNG_WINDOW
    grey = np.clip((grey.reshape(n, n) - (level - width / 2)) / width, 0.0, 1.0)
    mask = np.zeros((n, n), dtype=bool)
    if finding is not None:
        box = finding.mask.box
        nearest = np.rint(kji).astype(int)
        local = [nearest[a] - (box[a].start or 0) for a in range(3)]
        mask_shape = finding.mask.mask.shape
        inside = np.all([(local[a] >= 0) & (local[a] < mask_shape[a]) for a in range(3)], axis=0)
        values = np.zeros(inside.shape, dtype=bool)
        values[inside] = finding.mask.mask[local[0][inside], local[1][inside], local[2][inside]]
        mask = values.reshape(n, n)
    return grey, mask


def _panel(grey: np.ndarray, mask: np.ndarray, color: Sequence[float]) -> np.ndarray:
    from scipy import ndimage

    rgb = np.repeat(grey[..., None], 3, axis=2)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
    rgb[edge] = np.asarray(color, dtype=float)
    return (rgb * 255).astype(np.uint8)


def nodule_picture(
    path: Path,
    baseline: NoduleSide | None,
    followup: NoduleSide | None,
    color: Sequence[float],
    size_mm: float = 40.0,
) -> Path:
    """A PNG with the baseline crop on the left and the follow-up crop on the right (blank when absent)."""
    from PIL import Image as PILImage

    panels = []
    for item in (baseline, followup):
        if item is None:
            n = int(round(size_mm / 0.25))
            panels.append(np.full((n, n, 3), 40, dtype=np.uint8))
        else:
            panels.append(_panel(*axial_crop(item[0], item[1], item[2], size_mm), color))
    gap = np.full((panels[0].shape[0], 6, 3), 255, dtype=np.uint8)
    PILImage.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1)).save(path, format="PNG")
    return path


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(f"{v:g}" for v in value)
    return html.escape(str(value))


def _value(row: dict[str, Any], key: str) -> Any:
    if key == "kind":
        return row.get("followup_kind") or row.get("baseline_kind")
    return row.get(key)


def tracking_html(
    title: str,
    facts: Sequence[tuple[str, str]],
    rows: Sequence[dict[str, Any]],
    pictures: dict[str, str],
    files: dict[str, str],
    warnings: Sequence[str],
) -> str:
    """A self-contained page: facts, warnings, the longitudinal table, one picture row per nodule, file links."""
    columns = [
        ("tracking_id", "Nodule"),
        ("status", "Status"),
        ("kind", "Type"),
        ("baseline_volume_mm3", "Volume 1 (mm³)"),
        ("followup_volume_mm3", "Volume 2 (mm³)"),
        ("volume_change_percent", "Change (%)"),
        ("vdt_days", "VDT (days)"),
        ("baseline_mean_diameter_mm", "Mean diam. 1 (mm)"),
        ("followup_mean_diameter_mm", "Mean diam. 2 (mm)"),
        ("lung_rads", "Lung-RADS"),
        ("lung_rads_reason", "Why"),
    ]
    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(_value(row, key))}</td>" for key, _ in columns) + "</tr>" for row in rows
    )
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    figures = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(tid)}"><figcaption>{html.escape(tid)}: '
        "baseline (left), follow-up (right), axial, lung window</figcaption></figure>"
        for tid, src in pictures.items()
    )
    links = "".join(
        f'<li><a href="{html.escape(name)}">{html.escape(name)}</a> ({html.escape(kind)})</li>'
        for kind, name in files.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}figure{{display:inline-block;margin:1em}}
.warn{{color:#a00}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table>{fact_rows}</table>
{f'<h2>Warnings</h2><ul class="warn">{warn}</ul>' if warn else ""}
<h2>Nodules</h2><table><tr>{head}</tr>{body}</table>
{figures}
<h2>Files</h2><ul>{links}</ul>
<p><small>Research use only. Not for diagnosis. Lung-RADS categories are computed from automatic measurements and
need a radiologist's review.</small></p>
</body></html>
"""
