"""Dependency-free inline SVG plots for the cohort report: a metric's distribution per label and a forest plot.

Inline SVG keeps the HTML report one self-contained file (as the review report does) and needs no plotting
library. Both plots have a labelled x axis with ticks; rows are labelled on the left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["ForestRow", "svg_forest", "svg_strips"]

_LEFT, _RIGHT, _TOP, _BOTTOM, _ROW = 170, 20, 34, 46, 22
_WIDTH = 620
_NAME_CHARS = 30  # what fits in the left margin at 11 px
_FLAG_COLOURS = {"worse": "#c0392b", "better": "#1e8449", "higher": "#af601a", "lower": "#2471a3"}

ForestRow = tuple[str, float | None, float | None, float | None, str]
"""``(row name, gap, gap CI low, gap CI high, flag)``."""


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = math.floor(low / step) * step
    return [round(start + i * step, 10) for i in range(int(math.ceil((high - start) / step)) + 1)]


def _frame(title: str, x_label: str, rows: int, lo: float, hi: float) -> tuple[list[str], float, float]:
    """Title, plot box, x ticks and x label; returns the parts and the plotted x range (from the ticks)."""
    ticks = _ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    inner_w, inner_h = _WIDTH - _LEFT - _RIGHT, rows * _ROW
    parts = [
        f'<text x="{_WIDTH / 2:.1f}" y="18" font-size="13" text-anchor="middle" font-weight="bold">'
        f"{escape(title)}</text>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#333"/>',
    ]
    for tick in ticks:
        x = _LEFT + inner_w * (tick - lo) / (hi - lo)
        parts.append(
            f'<line class="tick x" x1="{x:.1f}" y1="{_TOP + inner_h}" x2="{x:.1f}" y2="{_TOP + inner_h + 5}" '
            f'stroke="#333"/><text class="tick-label x" x="{x:.1f}" y="{_TOP + inner_h + 17}" font-size="10" '
            f'text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<text class="axis-label x" x="{_LEFT + inner_w / 2:.1f}" y="{_TOP + inner_h + 36}" font-size="11" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    return parts, lo, hi


def _svg(parts: Sequence[str], rows: int) -> str:
    height = _TOP + rows * _ROW + _BOTTOM
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif">' + "".join(parts) + "</svg>"
    )


def _x(value: float, lo: float, hi: float) -> float:
    return _LEFT + (_WIDTH - _LEFT - _RIGHT) * (value - lo) / (hi - lo)


def _row_name(index: int, name: str) -> str:
    """The row's name left of the plot, shortened to fit (the whole name shows on hover)."""
    y = _TOP + (index + 0.5) * _ROW
    shown = name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "\u2026"
    return (
        f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end"><title>{escape(name)}</title>'
        f"{escape(shown)}</text>"
    )


def svg_strips(
    rows: Sequence[tuple[str, Sequence[float], float | None, float | None, float | None]],
    title: str,
    x_label: str,
    x_range: tuple[float, float] | None = None,
) -> str:
    """One row per ``(name, values, mean, ci_low, ci_high)``: every value as a dot, the mean and its CI in black.

    Dots are spread vertically by a fixed pattern (no randomness) so equal values stay visible.
    """
    finite = [float(v) for _, values, *_ in rows for v in values if math.isfinite(float(v))]
    lo, hi = x_range if x_range is not None else ((min(finite), max(finite)) if finite else (0.0, 1.0))
    count = max(len(rows), 1)
    parts, lo, hi = _frame(title, x_label, count, lo, hi)
    for index, (name, values, mean, low, high) in enumerate(rows):
        parts.append(_row_name(index, name))
        centre = _TOP + (index + 0.5) * _ROW
        for k, value in enumerate(v for v in values if math.isfinite(float(v))):
            offset = ((k * 0.618) % 1.0 - 0.5) * _ROW * 0.6
            parts.append(
                f'<circle cx="{_x(float(value), lo, hi):.1f}" cy="{centre + offset:.1f}" r="2.2" '
                f'fill="#4a7fb5" fill-opacity="0.6"><title>{float(value):.4g}</title></circle>'
            )
        if low is not None and high is not None:
            parts.append(
                f'<line class="ci" x1="{_x(low, lo, hi):.1f}" y1="{centre:.1f}" x2="{_x(high, lo, hi):.1f}" '
                f'y2="{centre:.1f}" stroke="#000" stroke-width="2"/>'
            )
        if mean is not None:
            parts.append(
                f'<rect class="mean" x="{_x(mean, lo, hi) - 3:.1f}" y="{centre - 6:.1f}" width="6" height="12" '
                f'fill="#000"><title>mean {mean:.4g}</title></rect>'
            )
    return _svg(parts, count)


def svg_forest(rows: Sequence[ForestRow], title: str, x_label: str) -> str:
    """A forest plot: one row per group, its gap to the cohort as a square with the gap's CI, and the zero line.

    Flagged rows are coloured (worse red, better green); rows without a gap are named and left empty.
    """
    ends = [v for _, gap, low, high, _ in rows for v in (gap, low, high) if v is not None and math.isfinite(v)]
    span = max([abs(v) for v in ends] + [1e-3])
    count = max(len(rows), 1)
    parts, lo, hi = _frame(title, x_label, count, -span, span)
    zero = _x(0.0, lo, hi)
    parts.append(
        f'<line class="zero" x1="{zero:.1f}" y1="{_TOP}" x2="{zero:.1f}" y2="{_TOP + count * _ROW}" '
        'stroke="#888" stroke-dasharray="4 3"/>'
    )
    for index, (name, gap, low, high, flag) in enumerate(rows):
        parts.append(_row_name(index, name))
        centre = _TOP + (index + 0.5) * _ROW
        colour = _FLAG_COLOURS.get(flag, "#555")
        if low is not None and high is not None:
            parts.append(
                f'<line class="ci" x1="{_x(low, lo, hi):.1f}" y1="{centre:.1f}" x2="{_x(high, lo, hi):.1f}" '
                f'y2="{centre:.1f}" stroke="{colour}" stroke-width="2"/>'
            )
        if gap is not None:
            tip = f"{name}: gap {gap:+.4g}" + (f" [{low:+.4g}, {high:+.4g}]" if low is not None else "")
            parts.append(
                f'<rect class="gap" x="{_x(gap, lo, hi) - 4:.1f}" y="{centre - 4:.1f}" width="8" height="8" '
                f'fill="{colour}"><title>{escape(tip)} ({escape(flag)})</title></rect>'
            )
    return _svg(parts, count)
