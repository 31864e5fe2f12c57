"""A picture and a one-page HTML summary of a segmentation result (for the demo and for reviewers)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import atomic_path
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel

__all__ = ["axial_slice_index", "render_overlay_png", "write_html_summary"]


def _axial_axis(image: Image) -> int:
    """Array axis (0=k, 1=j, 2=i) closest to the superior direction."""
    s_component = np.abs(image.direction_ras[2])  # S component of the i, j, k directions
    return 2 - int(np.argmax(s_component))


def axial_slice_index(labelmap: Image, prefer_label: int | None = None) -> int:
    """The axial slice with the most voxels of ``prefer_label`` (else of any label)."""
    axis = _axial_axis(labelmap)
    data = labelmap.array
    mask = data == prefer_label if prefer_label is not None else data > 0
    if not mask.any():
        mask = data > 0
    if not mask.any():
        return data.shape[axis] // 2
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax(mask.sum(axis=other)))


def render_overlay_png(
    ct: Image,
    labelmap: Image,
    labels: Sequence[SegmentLabel],
    path: str | os.PathLike[str],
    window: tuple[float, float] = (-600.0, 1500.0),
    prefer_label: int | None = None,
    alpha: float = 0.45,
) -> Path:
    """Write a PNG of one axial slice: CT in a lung window with coloured label overlays and outlines."""
    from PIL import Image as PILImage
    from scipy import ndimage

    axis = _axial_axis(ct)
    index = axial_slice_index(labelmap, prefer_label)
    ct_slice = np.take(ct.array, index, axis=axis).astype(np.float32)
    lab_slice = np.take(labelmap.array, index, axis=axis)
    level, width = window
    gray = np.clip((ct_slice - (level - width / 2)) / width, 0.0, 1.0)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for label in labels:
        mask = lab_slice == label.value
        if not mask.any():
            continue
        colour = np.array(label.color, dtype=np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
        edge = mask & ~ndimage.binary_erosion(mask)
        rgb[edge] = colour
    picture = PILImage.fromarray((rgb * 255).astype(np.uint8))
    # show with anatomical aspect: rows/columns may have different spacing
    spacing = ct.spacing[[i for i in range(3) if 2 - i != axis]][::-1]  # (row, column) spacing
    height = int(round(picture.height * spacing[0] / spacing[1]))
    picture = picture.resize((picture.width, max(height, 1)), PILImage.Resampling.BILINEAR)
    scale = max(1, 512 // max(picture.size))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), PILImage.Resampling.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def write_html_summary(
    path: str | os.PathLike[str],
    title: str,
    facts: Sequence[tuple[str, str]],
    statistics: Sequence[Mapping[str, Any]],  # rows of labels.label_statistics
    image_name: str | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Write a short self-contained HTML page: facts, a statistics table, the overlay picture, file links."""
    rows = "".join(
        f"<tr><td>{html.escape(str(s['name']))}</td><td>{s['voxel_count']}</td><td>{float(s['volume_ml']):.2f}</td></tr>"
        for s in statistics
    )
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    links = "".join(
        f'<li><a href="{html.escape(name)}">{html.escape(name)}</a> ({html.escape(kind)})</li>'
        for kind, name in (files or {}).items()
    )
    picture = f'<img src="{html.escape(image_name)}" alt="overlay" style="max-width:100%">' if image_name else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table>{fact_rows}</table>
<h2>Segments</h2><table><tr><th>Segment</th><th>Voxels</th><th>Volume [mL]</th></tr>{rows}</table>
{picture}
<h2>Files</h2><ul>{links}</ul>
<p><small>Research use only. Not for diagnosis.</small></p>
</body></html>
"""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
