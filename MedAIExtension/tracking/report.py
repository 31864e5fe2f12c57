"""Key-slice pictures of each tracked nodule at both time points, and the HTML tracking report.

Crops are sampled on an axial plane through the nodule centre in RAS (radiological view: patient right on the
left, anterior up), so they look the same whatever the acquisition orientation. They are resampled with linear
interpolation to at least :data:`MIN_PIXELS_PER_MM` pixels per millimetre, shown on a lung window, and carry a
10 mm scale bar and the orientation letters (R and L on the image's left and right, A and P at top and bottom),
so a reader can judge size and side on the picture itself. Each PNG records its ``mm_per_pixel`` and
``scale_bar_mm`` as text chunks.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.types import Finding

__all__ = [
    "MIN_PIXELS_PER_MM",
    "SCALE_BAR_COLOR",
    "SCALE_BAR_MM",
    "NoduleSide",
    "axial_crop",
    "crop_size_mm",
    "nodule_picture",
    "pixel_mm_for",
    "tracking_html",
]

#: One study's side of a nodule picture: the image, the finding (None where the nodule is absent) and the centre.
NoduleSide = tuple[Image, Finding | None, Sequence[float]]

_LUNG_WINDOW = (-600.0, 1500.0)
#: The crops are never coarser than this (pixels per mm); a 40 mm crop is drawn at :data:`_PANEL_PIXELS` pixels.
MIN_PIXELS_PER_MM = 4.0
_PANEL_PIXELS = 320
#: Length and colour of the scale bar (pure yellow never occurs in the grey image or the nodule outlines).
SCALE_BAR_MM = 10.0
SCALE_BAR_COLOR = (255, 255, 0)
_CAPTION_PIXELS = 22
_GAP_PIXELS = 6


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


def crop_size_mm(long_axis_mm: float) -> float:
    """Side of the key-slice crop for a lesion with this long axis: 40 mm, more for a large lesion or mass."""
    return float(max(40.0, 10.0 * np.ceil((1.5 * float(long_axis_mm) + 10.0) / 10.0)))


def pixel_mm_for(size_mm: float) -> float:
    """The crop's pixel size: :data:`_PANEL_PIXELS` across, never coarser than :data:`MIN_PIXELS_PER_MM`."""
    return min(1.0 / MIN_PIXELS_PER_MM, float(size_mm) / _PANEL_PIXELS)


def _panel(grey: np.ndarray, mask: np.ndarray, color: Sequence[float]) -> np.ndarray:
    from scipy import ndimage

    rgb = np.repeat(grey[..., None], 3, axis=2)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
    rgb[edge] = np.asarray(color, dtype=float)
    return (rgb * 255).astype(np.uint8)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an older Pillow or one without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _annotate(panel: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Orientation letters on the four edges and a :data:`SCALE_BAR_MM` scale bar in the lower left corner."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    picture = PILImage.fromarray(panel)
    draw = ImageDraw.Draw(picture)
    n = panel.shape[0]
    font = _font(max(14, n // 14))
    margin = max(4, n // 60)
    for letter, xy, anchor in (
        ("R", (margin, n / 2), "lm"),  # the patient's right on the image's left (radiological convention)
        ("L", (n - margin, n / 2), "rm"),
        ("A", (n / 2, margin), "mt"),
        ("P", (n / 2, n - margin), "mb"),
    ):
        draw.text(xy, letter, fill=SCALE_BAR_COLOR, font=font, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))
    length = int(round(SCALE_BAR_MM / pixel_mm))
    thickness = max(3, n // 100)
    x0, y1 = 2 * margin, n - 2 * margin
    draw.rectangle((x0 - 1, y1 - thickness - 1, x0 + length, y1 + 1), fill=(0, 0, 0))
    draw.rectangle((x0, y1 - thickness, x0 + length - 1, y1), fill=SCALE_BAR_COLOR)
    label = f"{SCALE_BAR_MM:g} mm"
    draw.text(
        (x0, y1 - thickness - 3),
        label,
        fill=SCALE_BAR_COLOR,
        font=font,
        anchor="lb",
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    return np.asarray(picture)


def _caption(text: str, width: int) -> np.ndarray:
    from PIL import Image as PILImage
    from PIL import ImageDraw

    strip = PILImage.new("RGB", (width, _CAPTION_PIXELS), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, _CAPTION_PIXELS // 2), text, fill=(0, 0, 0), font=_font(14), anchor="lm")
    return np.asarray(strip)


def nodule_picture(
    path: Path,
    baseline: NoduleSide | None,
    followup: NoduleSide | None,
    color: Sequence[float],
    size_mm: float = 40.0,
    captions: Sequence[str] = ("baseline", "follow-up"),
) -> Path:
    """A PNG with the baseline crop on the left and the follow-up crop on the right (dark where absent).

    Each crop covers ``size_mm`` at :func:`pixel_mm_for` ``(size_mm)`` mm per pixel, with the nodule's outline in
    ``color``, the orientation letters and a scale bar, under its caption (``captions``: baseline, follow-up).
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw
    from PIL.PngImagePlugin import PngInfo

    pixel_mm = pixel_mm_for(size_mm)
    panels = []
    for item, caption in zip((baseline, followup), captions, strict=True):
        if item is None:
            n = int(round(size_mm / pixel_mm))
            blank = PILImage.new("RGB", (n, n), (40, 40, 40))
            ImageDraw.Draw(blank).text((n / 2, n / 2), "not seen", fill=(200, 200, 200), font=_font(16), anchor="mm")
            panel = np.asarray(blank)
        else:
            grey, mask = axial_crop(item[0], item[1], item[2], size_mm, pixel_mm)
            panel = _annotate(_panel(grey, mask, color), pixel_mm)
        panels.append(np.concatenate([_caption(caption, panel.shape[1]), panel], axis=0))
    gap = np.full((panels[0].shape[0], _GAP_PIXELS, 3), 255, dtype=np.uint8)
    info = PngInfo()
    info.add_text("mm_per_pixel", f"{pixel_mm:.6g}")
    info.add_text("scale_bar_mm", f"{SCALE_BAR_MM:g}")
    info.add_text("orientation", "axial; left of image = patient right (R), top = anterior (A)")
    picture = PILImage.fromarray(np.ascontiguousarray(np.concatenate([panels[0], gap, panels[1]], axis=1)))
    picture.save(path, format="PNG", pnginfo=info)
    return path


def _text(value: object) -> str:
    return "—" if value is None or value == "" else html.escape(str(value))


def _mm(value: Any) -> str:
    """A diameter to one decimal (mm)."""
    return "—" if value is None else f"{float(value):.1f}"


def _mm3(value: Any) -> str:
    """A volume to the whole mm³."""
    return "—" if value is None else f"{float(value):.0f}"


def _percent(value: Any) -> str:
    return "—" if value is None else f"{float(value):+.1f}"


def _long_short(row: dict[str, Any], when: str) -> str:
    if row.get(f"{when}_long_axis_mm") is None:
        return "—"
    return f"{_mm(row.get(f'{when}_long_axis_mm'))} × {_mm(row.get(f'{when}_short_axis_mm'))}"


def _axes(row: dict[str, Any], when: str) -> str:
    """E.g. ``"8.4 × 7.6 mm (mean 8.0 mm)"``; the solid component of a part-solid nodule added."""
    if row.get(f"{when}_mean_diameter_mm") is None:
        return "not seen"
    text = (
        f"{_mm(row.get(f'{when}_long_axis_mm'))} × {_mm(row.get(f'{when}_short_axis_mm'))} mm "
        f"(mean {_mm(row.get(f'{when}_mean_diameter_mm'))} mm), {_mm3(row.get(f'{when}_volume_mm3'))} mm³"
    )
    if row.get(f"{when}_kind") == "part-solid" and row.get(f"{when}_solid_mean_diameter_mm") is not None:
        text += f", solid component mean {_mm(row.get(f'{when}_solid_mean_diameter_mm'))} mm"
    return text


def _category(row: dict[str, Any], prefix: str) -> str:
    category = row.get(f"{prefix}lung_rads")
    reason = row.get("baseline_lung_rads_reason" if prefix else "lung_rads_reason")
    if category is None:
        return "—"
    return f"<b>{html.escape(str(category))}</b>" + (f" — {html.escape(str(reason))}" if reason else "")


#: The summary table: (title, how a row's cell is written).
_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("Nodule", lambda r: _text(r.get("tracking_id"))),
    ("Status", lambda r: _text(r.get("status"))),
    ("Finding", lambda r: _text(r.get("finding"))),
    ("Type", lambda r: _text(r.get("followup_kind") or r.get("baseline_kind"))),
    ("Location", lambda r: _text(r.get("location"))),
    ("Long × short axis 1 (mm)", lambda r: _long_short(r, "baseline")),
    ("Mean diam. 1 (mm)", lambda r: _mm(r.get("baseline_mean_diameter_mm"))),
    ("Long × short axis 2 (mm)", lambda r: _long_short(r, "followup")),
    ("Mean diam. 2 (mm)", lambda r: _mm(r.get("followup_mean_diameter_mm"))),
    ("Volume 1 (mm³)", lambda r: _mm3(r.get("baseline_volume_mm3"))),
    ("Volume 2 (mm³)", lambda r: _mm3(r.get("followup_volume_mm3"))),
    ("Change (%)", lambda r: _percent(r.get("volume_change_percent"))),
    ("Growth", lambda r: _text(r.get("growth"))),
    ("Lung-RADS baseline", lambda r: _text(r.get("baseline_lung_rads"))),
    ("Lung-RADS", lambda r: _text(r.get("lung_rads"))),
    ("NELSON", lambda r: _text(r.get("nelson"))),
)  # fmt: skip


def _nodule_section(row: dict[str, Any], picture: str | None) -> str:
    """One nodule: where it is, its sizes, change, categories with reasons, management, notes, and its picture."""
    tid = str(row.get("tracking_id"))
    kind = row.get("followup_kind") or row.get("baseline_kind")
    title = f"{tid}: {row.get('finding') or 'nodule'}, {kind}" + (f", {row['location']}" if row.get("location") else "")
    images = f"baseline image {_text(row.get('baseline_image'))}, follow-up image {_text(row.get('followup_image'))}"
    items = [
        ("Where", f"{_text(row.get('side'))} lung, {_text(row.get('lung_zone'))} zone; {images}"),
        ("Baseline", html.escape(_axes(row, "baseline"))),
        ("Follow-up", html.escape(_axes(row, "followup"))),
        ("Change", _text(row.get("growth"))),
        ("Lung-RADS at baseline", _category(row, "baseline_")),
        ("Lung-RADS now", _category(row, "")),
        ("Management (Lung-RADS v2022)", _text(row.get("management"))),
    ]
    if row.get("nelson") is not None:
        nelson = f"<b>{_text(row.get('nelson'))}</b> — {_text(row.get('nelson_reason'))}"
        if row.get("nelson_note"):
            nelson += f"<br>{_text(row.get('nelson_note'))}"
        items.append(("NELSON (volume)", nelson))
    for key, what in (("baseline_borderline", "Borderline size at baseline"), ("borderline", "Borderline size")):
        if row.get(key) and (key == "baseline_borderline" or row.get(key) != row.get("baseline_borderline")):
            items.append((what, f'<span class="warn">{_text(row.get(key))}</span>'))
    listing = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in items)
    figure = ""
    if picture is not None:
        figure = (
            f'<figure><img src="{html.escape(picture)}" alt="{html.escape(tid)}"><figcaption>{html.escape(tid)}: '
            "baseline (left), follow-up (right); axial, lung window, radiological view (patient right on the "
            "left, R/L/A/P marked), 10 mm scale bar</figcaption></figure>"
        )
    return f'<section id="{html.escape(tid)}"><h3>{html.escape(title)}</h3><dl>{listing}</dl>{figure}</section>'


def tracking_html(
    title: str,
    facts: Sequence[tuple[str, str]],
    rows: Sequence[dict[str, Any]],
    pictures: dict[str, str],
    files: dict[str, str],
    warnings: Sequence[str],
) -> str:
    """A self-contained page: facts, warnings, the longitudinal table, one section per nodule, file links.

    ``rows`` are :func:`MedAIExtension.tracking.reading.report_rows`; diameters are shown to 0.1 mm and volumes
    to the whole mm³.
    """
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{cell(row)}</td>" for _, cell in _COLUMNS) + "</tr>" for row in rows)
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    sections = "".join(_nodule_section(row, pictures.get(str(row.get("tracking_id")))) for row in rows)
    links = "".join(
        f'<li><a href="{html.escape(name)}">{html.escape(name)}</a> ({html.escape(kind)})</li>'
        for kind, name in files.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}figure{{display:inline-block;margin:1em}}
dl{{display:grid;grid-template-columns:max-content auto;gap:2px 1em}}dt{{font-weight:bold}}dd{{margin:0}}
.warn{{color:#a00}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table>{fact_rows}</table>
{f'<h2>Warnings</h2><ul class="warn">{warn}</ul>' if warn else ""}
<h2>Nodules</h2><table><tr>{head}</tr>{body}</table>
{sections}
<h2>Files</h2><ul>{links}</ul>
<p><small>Research use only. Not for diagnosis. Lung-RADS and NELSON categories are computed from automatic
measurements and need a radiologist's review.</small></p>
</body></html>
"""
