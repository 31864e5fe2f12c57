"""Small, dependency-free SVG plots for the review report (realism histogram, reader-study ROC curve).

Inline SVG keeps the HTML report one self-contained file that opens in any browser, and needs no plotting
library in Slicer's Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["svg_bars", "svg_roc"]

_WIDTH, _HEIGHT, _PAD = 360, 240, 40


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
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD

    def point(x: float, y: float) -> str:
        return f"{_PAD + inner_w * x:.1f},{_HEIGHT - _PAD - inner_h * y:.1f}"

    curve = " ".join(point(float(x), float(y)) for x, y in zip(fpr, tpr, strict=True))
    parts = [
        _frame(f"{title} (AUC {auc:.2f})", "true-positive rate"),
        f'<polyline points="{point(0, 0)} {point(1, 1)}" fill="none" stroke="#999" stroke-dasharray="4 3"/>',
        f'<polyline points="{curve}" fill="none" stroke="#c0392b" stroke-width="2"/>',
        f'<text x="{_WIDTH / 2}" y="{_HEIGHT - 6}" font-size="11" text-anchor="middle">false-positive rate</text>',
    ]
    return _svg(parts)


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
