"""Small, dependency-free SVG plots: the review report (realism histogram, reader-study ROC curve), the nodule
volume chart of ``medai view``.

Inline SVG keeps the HTML report one self-contained file that opens in any browser, and needs no plotting
library in Slicer's Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["svg_bars", "svg_lines", "svg_roc", "svg_roc_curves"]

_WIDTH, _HEIGHT, _PAD = 360, 240, 40
_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
_COLOURS = ("#c0392b", "#2471a3", "#1e8449", "#af601a", "#7d3c98", "#34495e")


def svg_bars(labels: Sequence[str], values: Sequence[float], title: str, y_label: str = "images") -> str:
    """A bar chart (one bar per label) as an inline ``<svg>`` element."""
    top = max([float(v) for v in values] + [1.0])
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD
    step = inner_w / max(len(values), 1)
    parts = [_frame(title, y_label)]
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = inner_h * float(value) / top
        x = _PAD + index * step + step * 0.15
        y = _HEIGHT - _PAD - height
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{height:.1f}" fill="#4a7fb5">'
            f"<title>{escape(str(label))}: {value:g}</title></rect>"
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{_HEIGHT - _PAD + 14}" font-size="11" '
            f'text-anchor="middle">{escape(str(label))}</text>'
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{y - 3:.1f}" font-size="10" text-anchor="middle">{value:g}</text>'
        )
    return _svg(parts)


def svg_roc(fpr: Sequence[float], tpr: Sequence[float], auc: float, title: str = "Reader study ROC") -> str:
    """An ROC curve (false- vs true-positive rate) with the chance diagonal, as an inline ``<svg>`` element."""
    return svg_roc_curves([(f"AUC {auc:.2f}", fpr, tpr)], title)


def svg_roc_curves(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]], title: str = "Reader study ROC"
) -> str:
    """ROC curves (one per ``(label, fpr, tpr)``) on one square plot, as an inline ``<svg>`` element.

    Both axes run from 0 to 1 with ticks and labels every 0.25; the dashed diagonal is chance (AUC 0.5), and a
    legend names each curve (its label, e.g. the reader and the area under the curve).
    """
    width, height, left, bottom, top = 340, 330, 56, 46, 30
    inner = min(width - left - 16, height - bottom - top)

    def point(x: float, y: float) -> str:
        return f"{left + inner * x:.1f},{top + inner * (1.0 - y):.1f}"

    parts = [
        f'<text x="{left + inner / 2:.1f}" y="18" font-size="13" text-anchor="middle" font-weight="bold">'
        f"{escape(title)}</text>",
        f'<rect x="{left}" y="{top}" width="{inner}" height="{inner}" fill="none" stroke="#333"/>',
    ]
    for tick in _TICKS:
        x, y = left + inner * tick, top + inner * (1.0 - tick)
        parts.append(
            f'<line class="tick x" x1="{x:.1f}" y1="{top + inner}" x2="{x:.1f}" y2="{top + inner + 5}" stroke="#333"/>'
            f'<text class="tick-label x" x="{x:.1f}" y="{top + inner + 17}" font-size="10" text-anchor="middle">'
            f"{tick:g}</text>"
            f'<line class="tick y" x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#333"/>'
            f'<text class="tick-label y" x="{left - 8}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
            f"{tick:g}</text>"
        )
    parts.append(
        f'<text class="axis-label x" x="{left + inner / 2:.1f}" y="{height - 8}" font-size="11" '
        'text-anchor="middle">false-positive rate (real called synthetic)</text>'
        f'<text class="axis-label y" x="14" y="{top + inner / 2:.1f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + inner / 2:.1f})">true-positive rate (synthetic called synthetic)</text>'
        f'<polyline class="chance" points="{point(0, 0)} {point(1, 1)}" fill="none" stroke="#999" '
        'stroke-dasharray="4 3"><title>chance (AUC 0.5)</title></polyline>'
    )
    for index, (label, fpr, tpr) in enumerate(curves):
        colour = _COLOURS[index % len(_COLOURS)]
        curve = " ".join(point(float(x), float(y)) for x, y in zip(fpr, tpr, strict=True))
        parts.append(
            f'<polyline class="roc" points="{curve}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(label)}</title></polyline>"
        )
        y = top + inner - 10 - 14 * (len(curves) - index)
        parts.append(
            f'<line x1="{left + inner * 0.4:.1f}" y1="{y + 10}" x2="{left + inner * 0.4 + 14:.1f}" y2="{y + 10}" '
            f'stroke="{colour}" stroke-width="2"/><text class="legend" x="{left + inner * 0.4 + 18:.1f}" '
            f'y="{y + 13}" font-size="10">{escape(label)}</text>'
        )
    parts.append(
        f'<text class="legend" x="{left + inner * 0.4 + 18:.1f}" y="{top + inner - 9}" font-size="10" '
        'fill="#777">dashed: chance</text>'
    )
    body = "".join(parts)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{body}</svg>'


def svg_lines(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 280,
    height: int = 200,
) -> str:
    """Lines through points, one per ``(label, colour, [(x, y), …])``, with both axes from 0 to the largest value,
    as an inline ``<svg>`` element (class ``series`` on each line, the label as its tooltip and in a legend)."""
    left, right, top, bottom = 52, 12, 24, 36
    inner_w, inner_h = width - left - right, height - top - bottom
    xs = [float(x) for _, _, points in series for x, _ in points] or [1.0]
    ys = [float(y) for _, _, points in series for _, y in points] or [1.0]
    x_top, y_top = max(max(xs), 1e-9), max(max(ys), 1e-9)

    def point(x: float, y: float) -> str:
        return f"{left + inner_w * x / x_top:.1f},{top + inner_h * (1.0 - y / y_top):.1f}"

    parts = [
        f'<text x="{width / 2:.0f}" y="15" font-size="12" text-anchor="middle" font-weight="bold">'
        f"{escape(title)}</text>",
        f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#333"/>',
        f'<text x="{left + inner_w / 2:.0f}" y="{height - 6}" font-size="10" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text x="10" y="{top + inner_h / 2:.0f}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 10 {top + inner_h / 2:.0f})">{escape(y_label)}</text>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="9" text-anchor="end">{y_top:.0f}</text>',
        f'<text x="{left - 4}" y="{top + inner_h}" font-size="9" text-anchor="end">0</text>',
        f'<text x="{left + inner_w}" y="{top + inner_h + 11}" font-size="9" text-anchor="end">{x_top:.0f}</text>',
    ]
    for index, (label, colour, points) in enumerate(series):
        line = " ".join(point(float(x), float(y)) for x, y in points)
        parts.append(
            f'<polyline class="series" points="{line}" fill="none" stroke="{escape(colour)}" stroke-width="2">'
            f"<title>{escape(label)}</title></polyline>"
        )
        parts += [
            f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2.5" fill="{escape(colour)}"/>'
            for c in line.split()
        ]
        parts.append(
            f'<text x="{left + 6}" y="{top + 12 + 11 * index}" font-size="9" fill="{escape(colour)}">'
            f"{escape(label)}</text>"
        )
    body = "".join(parts)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{body}</svg>'


def _frame(title: str, y_label: str) -> str:
    return (
        f'<text x="{_WIDTH / 2}" y="18" font-size="13" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" stroke="#333"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_HEIGHT - _PAD}" stroke="#333"/>'
        f'<text x="12" y="{_HEIGHT / 2}" font-size="11" transform="rotate(-90 12 {_HEIGHT / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )


def _svg(parts: Sequence[str]) -> str:
    body = "".join(parts)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img">{body}</svg>'
