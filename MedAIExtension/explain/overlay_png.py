"""Key-slice pictures of an explanation: the image in grey with the map blended in a heat colour scale.

Used for the PNG overlays and the DICOM Secondary Capture (for PACS viewers without overlay support). Each
picture is an orthogonal plane of the input grid through the map's peak, turned the way radiologists read it
(axial/coronal: patient's right on the left of the picture; superior or anterior up), and annotated so it reads
on its own: orientation letters on the four edges (computed from the image's direction matrix and the flips
actually applied, so they are right for LPS, RAS or any other acquisition), a scale bar in mm, a colour bar with
the map's display range and threshold, and a caption naming the map and the slice (index and position).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from MedAIExtension.io.image import Image

__all__ = ["KeySlice", "edge_letters", "heat_colors", "key_slices", "orientation_letters"]

_PLANE_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
# desired RAS direction of picture x (left→right) and y (top→bottom) for each plane (by its normal)
_PICTURE_AXES = {
    2: (np.array([-1.0, 0, 0]), np.array([0, -1.0, 0])),  # axial: x toward patient left, y toward posterior
    1: (np.array([-1.0, 0, 0]), np.array([0, 0, -1.0])),  # coronal: x toward left, y toward inferior
    0: (np.array([0, -1.0, 0]), np.array([0, 0, -1.0])),  # sagittal: x toward posterior, y toward inferior
}
_RAS_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))  # letter for +axis, -axis
#: A secondary axis is named in an oblique direction when its share of the unit vector is at least this.
_OBLIQUE_SHARE = 0.25
_LETTER_COLOR = (255, 255, 0)
_BAR_PIXELS = 72  # colour-bar strip on the right (bar + value labels)
_NICE_MM = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)


@dataclass(frozen=True, eq=False)
class KeySlice:
    """One picture: plane name, slice index along its array axis, RGB uint8 pixels (annotated).

    Attributes:
        plane: axial, coronal or sagittal.
        index: the slice's index along its array axis of the input grid.
        rgb: the annotated picture (image panel, colour bar on the right, caption below).
        letters: orientation letters on the panel's ``left``, ``right``, ``top`` and ``bottom`` edges.
        position_mm: the slice's RAS coordinate along the plane's normal (R, A or S in mm).
        scale_bar_mm: length of the scale bar drawn in the panel.
    """

    plane: str
    index: int
    rgb: np.ndarray
    letters: dict[str, str] = field(default_factory=dict)
    position_mm: float = 0.0
    scale_bar_mm: float = 0.0


def orientation_letters(vector_ras: Sequence[float] | np.ndarray) -> str:
    """Patient orientation letters of a RAS direction, main axis first (``[-1, 0, 0]`` → ``"L"``).

    An oblique direction also names each other axis carrying at least :data:`_OBLIQUE_SHARE` of it
    (``[0.8, 0.6, 0]`` → ``"RA"``), as viewers do for tilted slices.
    """
    vector = np.asarray(vector_ras, dtype=float)
    norm = float(np.linalg.norm(vector))
    if vector.shape != (3,) or norm == 0:
        raise ValueError(f"A direction needs three components, not all zero; got {vector_ras!r}.")
    vector = vector / norm
    order = np.argsort(-np.abs(vector), kind="stable")
    letters = [_RAS_LETTERS[order[0]][0 if vector[order[0]] > 0 else 1]]
    for axis in order[1:]:
        if abs(vector[axis]) >= _OBLIQUE_SHARE:
            letters.append(_RAS_LETTERS[axis][0 if vector[axis] > 0 else 1])
    return "".join(letters)


def edge_letters(right_ras: Sequence[float] | np.ndarray, down_ras: Sequence[float] | np.ndarray) -> dict[str, str]:
    """Letters for the four edges of a picture whose +x (rightwards) and +y (downwards) run along these RAS
    directions: the right edge lies towards ``right_ras``, the left edge away from it, and so on."""
    right, down = np.asarray(right_ras, dtype=float), np.asarray(down_ras, dtype=float)
    return {
        "left": orientation_letters(-right),
        "right": orientation_letters(right),
        "top": orientation_letters(-down),
        "bottom": orientation_letters(down),
    }


def heat_colors(t: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white heat scale for values in [0, 1] → RGB floats."""
    t = np.clip(t, 0.0, 1.0)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)


def _grey(image: Image, values: np.ndarray) -> np.ndarray:
    if image.modality == "CT":
        low, high = -1000.0, 400.0
    else:
        low, high = (float(v) for v in np.percentile(image.array, [1, 99]))
        high = high if high > low else low + 1.0
    return np.clip((values.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def _orient(
    plane: np.ndarray, axes: Sequence[int], image: Image, normal_ras: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Transpose/flip a 2D slice (array axes ``axes``) so picture x/y follow :data:`_PICTURE_AXES`.

    Returns the picture, its (row, column) spacing and the RAS directions of picture +x and +y as shown.
    """
    directions = {0: image.direction_ras[:, 2], 1: image.direction_ras[:, 1], 2: image.direction_ras[:, 0]}
    spacing = {0: image.spacing[2], 1: image.spacing[1], 2: image.spacing[0]}
    want_x, _ = _PICTURE_AXES[normal_ras]
    a, b = axes
    # the array axis closest to picture x becomes the columns
    if abs(directions[a] @ want_x) > abs(directions[b] @ want_x):
        plane, (row_axis, col_axis) = plane.transpose(1, 0, 2), (b, a)
    else:
        row_axis, col_axis = a, b
    want_x, want_y = _PICTURE_AXES[normal_ras]
    right, down = np.array(directions[col_axis], dtype=float), np.array(directions[row_axis], dtype=float)
    if right @ want_x < 0:
        plane, right = plane[:, ::-1], -right
    if down @ want_y < 0:
        plane, down = plane[::-1, :], -down
    return plane, np.array([spacing[row_axis], spacing[col_axis]]), right, down


def _resize(rgb: np.ndarray, spacing_rc: np.ndarray, target: int = 384) -> tuple[np.ndarray, float]:
    """The picture scaled to ``target`` pixels on its longer side, square pixels; returns it and mm per pixel."""
    from PIL import Image as PILImage

    height_mm, width_mm = rgb.shape[0] * spacing_rc[0], rgb.shape[1] * spacing_rc[1]
    scale = target / max(height_mm, width_mm)
    size = (max(int(round(width_mm * scale)), 1), max(int(round(height_mm * scale)), 1))
    return np.asarray(PILImage.fromarray(rgb).resize(size, PILImage.Resampling.BILINEAR)), 1.0 / scale


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an older Pillow or one without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _scale_bar_mm(width_mm: float) -> float:
    """The longest round length (1, 2, 5 × 10ⁿ mm) up to a quarter of the picture's width."""
    fitting = [v for v in _NICE_MM if v <= width_mm / 4]
    return fitting[-1] if fitting else _NICE_MM[0]


def _value(value: float) -> str:
    return f"{value:.3g}"


def _draw_panel(panel: np.ndarray, letters: dict[str, str], mm_per_pixel: float) -> tuple[Any, float]:
    """Orientation letters on the edges and a scale bar in the lower left corner of the image panel."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    picture = PILImage.fromarray(np.ascontiguousarray(panel))
    draw = ImageDraw.Draw(picture)
    height, width = panel.shape[:2]
    font = _font(16)
    margin = 4
    text = {"fill": _LETTER_COLOR, "font": font, "stroke_width": 2, "stroke_fill": (0, 0, 0)}
    draw.text((margin, height / 2), letters["left"], anchor="lm", **text)
    draw.text((width - margin, height / 2), letters["right"], anchor="rm", **text)
    draw.text((width / 2, margin), letters["top"], anchor="mt", **text)
    draw.text((width / 2, height - margin), letters["bottom"], anchor="mb", **text)
    length_mm = _scale_bar_mm(width * mm_per_pixel)
    length = max(int(round(length_mm / mm_per_pixel)), 1)
    x0, y1 = 2 * margin, height - 3 * margin
    draw.rectangle((x0 - 1, y1 - 4, x0 + length, y1 + 1), fill=(0, 0, 0))
    draw.rectangle((x0, y1 - 3, x0 + length - 1, y1), fill=_LETTER_COLOR)
    draw.text((x0, y1 - 6), f"{length_mm:g} mm", anchor="lb", **{**text, "font": _font(12)})
    return picture, length_mm


def _colour_bar(height: int, low: float, high: float, threshold: float) -> np.ndarray:
    """A vertical heat bar (high at the top) with its value range and the display threshold marked."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    strip = PILImage.new("RGB", (_BAR_PIXELS, height), (0, 0, 0))
    top, bottom, left, right = 12, max(height - 12, 13), 6, 20
    t = np.linspace(1.0, 0.0, bottom - top)
    colours = (heat_colors(t) * 255).astype(np.uint8)
    bar = np.repeat(colours[:, None, :], right - left, axis=1)
    strip.paste(PILImage.fromarray(bar), (left, top))
    draw = ImageDraw.Draw(strip)
    font = _font(11)
    draw.rectangle((left - 1, top - 1, right, bottom), outline=(200, 200, 200))
    draw.text((right + 4, top), _value(high), fill=(255, 255, 255), font=font, anchor="lm")
    draw.text((right + 4, bottom), _value(low), fill=(255, 255, 255), font=font, anchor="lm")
    if high > low and low < threshold < high:
        y = int(round(bottom - (threshold - low) / (high - low) * (bottom - top)))
        draw.line((left - 3, y, right + 2, y), fill=(0, 255, 255), width=1)
        if bottom - 10 > y > top + 10:
            draw.text((right + 4, y), f">{_value(threshold)}", fill=(0, 255, 255), font=font, anchor="lm")
    return np.asarray(strip)


def _caption(lines: Sequence[str], width: int) -> np.ndarray:
    """White band with black text, wrapped to ``width`` pixels (ASCII punctuation: Pillow's default font has no
    dashes or ≥)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    font = _font(12)
    probe = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    per_char = max(probe.textlength("abcdefghij", font=font) / 10.0, 1.0)
    wrapped = [part for line in lines for part in textwrap.wrap(line, max(int((width - 8) / per_char), 10))]
    band = PILImage.new("RGB", (width, 6 + 15 * len(wrapped)), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for row, line in enumerate(wrapped):
        draw.text((4, 3 + 15 * row), line, fill=(0, 0, 0), font=font)
    return np.asarray(band)


def key_slices(
    image: Image,
    values: Image,
    window: Sequence[float],
    threshold: float,
    opacity: float = 0.5,
    *,
    title: str = "explanation map",
    unit: str = "",
) -> list[KeySlice]:
    """Axial, coronal and sagittal pictures through the peak of ``values`` (a map on ``image``'s grid).

    ``title`` names the map in the caption (e.g. "Grad-CAM of 'Nodule'"), ``unit`` its values next to the range.
    """
    data = values.array
    peak = np.unravel_index(int(np.argmax(data)), data.shape) if np.any(data > 0) else tuple(s // 2 for s in data.shape)
    peak_ras = image.ijk_to_ras @ np.array([peak[2], peak[1], peak[0], 1.0])
    low, high = float(window[0]), float(window[1])
    pictures = []
    for axis in range(3):
        # which anatomical axis does this array axis (k=0, j=1, i=2) run along?
        direction = image.direction_ras[:, 2 - axis]
        normal = int(np.argmax(np.abs(direction)))
        grey = _grey(image, np.take(image.array, peak[axis], axis=axis))
        heat = np.take(data, peak[axis], axis=axis).astype(np.float32)
        t = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
        shown = heat > threshold
        rgb = np.repeat(grey[..., None], 3, axis=2)
        rgb[shown] = (1 - opacity) * rgb[shown] + opacity * heat_colors(t[shown])
        rest = [a for a in range(3) if a != axis]
        plane, spacing, right, down = _orient(rgb, rest, image, normal)
        pixels, mm_per_pixel = _resize((np.clip(plane, 0, 1) * 255).astype(np.uint8), spacing)
        letters = edge_letters(right, down)
        panel, bar_mm = _draw_panel(pixels, letters, mm_per_pixel)
        name = _PLANE_NAMES[normal]
        position = float(peak_ras[normal])
        body = np.concatenate([np.asarray(panel), _colour_bar(pixels.shape[0], low, high, threshold)], axis=1)
        unit_text = f" {unit}" if unit else ""
        caption = _caption(
            [
                f"{title}: {name} slice {int(peak[axis])} of {data.shape[axis]} "
                f"({'RAS'[normal]} {position:+.1f} mm), through the map's peak.",
                f"Colour: {_value(low)} to {_value(high)}{unit_text}, shown above {_value(threshold)}; "
                f"scale bar {bar_mm:g} mm.",
            ],
            body.shape[1],
        )
        annotated = np.ascontiguousarray(np.concatenate([body, caption], axis=0))
        pictures.append(KeySlice(name, int(peak[axis]), annotated, letters, position, bar_mm))
    order = {"axial": 0, "coronal": 1, "sagittal": 2}
    return sorted(pictures, key=lambda p: order[p.plane])
