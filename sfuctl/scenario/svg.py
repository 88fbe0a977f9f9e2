"""Inline SVG charts for the HTML report, drawn by hand: line charts over time and histograms.

The SVG is meant to sit inside an HTML5 page, which needs no namespace declaration, so the output
contains no URL at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
WIDTH = 760
PLOT_HEIGHT = 180
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 58, 14, 30, 34
FADED = "#cfcfcf"  # the lines of rooms that are not among the worst, when there are many
LEGEND_ROW = 18
LEGEND_ITEM = 150


@dataclass(frozen=True)
class Line:
    """One series: (x, y) points, y None for a gap. `color` picks a palette entry (default: its position);
    a line with `legend` False shares the legend entry of the line of the same color."""

    label: str
    points: list[tuple[float, float | None]]
    dashed: bool = False
    color: int | None = None
    legend: bool = True
    faded: bool = False  # drawn thin and grey behind the others (one of many rooms that are not the worst)


@dataclass(frozen=True)
class Band:
    """A shaded span of the x axis, e.g. a network impairment window."""

    start: float
    end: float
    label: str


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values from at or below `low` to at or above `high` (about `count` steps)."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(s * magnitude for s in (1, 2, 2.5, 5, 10) if s * magnitude >= raw - 1e-12)
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - 1e-9 * step:
        ticks.append(first + len(ticks) * step)
    return [round(t, 10) for t in ticks]


def number(value: float) -> str:
    """A tick label: 0, 0.25, 12.5, 340."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def line_chart(
    title: str,
    unit: str,
    lines: list[Line],
    x_max: float,
    *,
    scale: float = 1.0,
    markers: Sequence[tuple[float, str]] = (),
    bands: Sequence[Band] = (),
    limits: Sequence[tuple[float, str]] = (),
) -> str:
    """A chart of `lines` over 0..x_max seconds (later points are left out); y values are multiplied by
    `scale` and shown in `unit`. `limits` are horizontal lines (a threshold's value, before `scale`)."""
    lines = [Line(line.label, [(x, y) for x, y in line.points if x <= x_max], line.dashed,
                  index if line.color is None else line.color, line.legend and not line.faded, line.faded)
             for index, line in enumerate(lines)]
    lines.sort(key=lambda line: not line.faded)  # faded lines first, so that the others are drawn over them
    values = [y * scale for line in lines for _, y in line.points if y is not None]
    top = max([*values, *(value * scale for value, _ in limits)], default=0.0)
    y_ticks = nice_ticks(0.0, top or 1.0)
    x_ticks = nice_ticks(0.0, x_max if x_max > 0 else 1.0, 8)
    x_top, y_top = x_ticks[-1], y_ticks[-1]
    legend = [line for line in lines if line.legend]
    per_row = max(1, (WIDTH - MARGIN_LEFT) // LEGEND_ITEM)
    rows = math.ceil(len(legend) / per_row) if len(legend) > 1 else 0
    height = MARGIN_TOP + PLOT_HEIGHT + MARGIN_BOTTOM + rows * LEGEND_ROW
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT

    def px(x: float) -> float:
        return MARGIN_LEFT + x / x_top * plot_width

    def py(y: float) -> float:
        return MARGIN_TOP + PLOT_HEIGHT - y / y_top * PLOT_HEIGHT

    parts = [_open(title, height), _text(MARGIN_LEFT, 18, f"{title} ({unit})", "title")]
    for band in bands:
        left, right = px(max(0.0, band.start)), px(min(x_top, band.end))
        parts.append(f'<rect class="band" x="{left:.1f}" y="{MARGIN_TOP}" width="{max(0.0, right - left):.1f}" '
                     f'height="{PLOT_HEIGHT}"><title>{escape(band.label)}</title></rect>')
    for tick in y_ticks:
        y = py(tick)
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(_text(MARGIN_LEFT - 6, y + 4, number(tick), "tick", anchor="end"))
    for tick in x_ticks:
        x = px(tick)
        parts.append(_text(x, MARGIN_TOP + PLOT_HEIGHT + 16, f"{number(tick)} s", "tick", anchor="middle"))
    for at, label in markers:
        if 0 < at < x_top:
            x = px(at)
            parts.append(f'<line class="marker" x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP}" '
                         f'y2="{MARGIN_TOP + PLOT_HEIGHT}"><title>{escape(label)}</title></line>')
    parts.append(f'<rect class="frame" x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_width}" height="{PLOT_HEIGHT}"/>')
    for value, label in limits:
        y = py(value * scale)
        parts.append(f'<line class="limit" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}">'
                     f"<title>{escape(label)}</title></line>")
        parts.append(_text(WIDTH - MARGIN_RIGHT - 4, y - 4, label, "limit-label", anchor="end"))
    for line in lines:
        color = FADED if line.faded else PALETTE[(line.color or 0) % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        for run in _runs(line.points):
            if len(run) == 1:
                x, y = run[0]
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y * scale):.1f}" r="2" fill="{color}"/>')
                continue
            points = " ".join(f"{px(x):.1f},{py(y * scale):.1f}" for x, y in run)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{points}">'
                         f"<title>{escape(line.label)}</title></polyline>")
    if rows:
        for index, line in enumerate(legend):
            x = MARGIN_LEFT + (index % per_row) * LEGEND_ITEM
            y = MARGIN_TOP + PLOT_HEIGHT + MARGIN_BOTTOM + (index // per_row) * LEGEND_ROW
            color = PALETTE[(line.color or 0) % len(PALETTE)]
            dash = ' stroke-dasharray="5 3"' if line.dashed else ""
            parts.append(f'<line x1="{x}" x2="{x + 18}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                         f'stroke-width="2"{dash}/>')
            parts.append(_text(x + 24, y, line.label, "legend"))
    if not values:
        parts.append(_text(MARGIN_LEFT + plot_width / 2, MARGIN_TOP + PLOT_HEIGHT / 2, "no data", "empty",
                           anchor="middle"))
    parts.append("</svg>")
    return "\n".join(parts)


def histogram(title: str, unit: str, values: list[float], bins: int = 20) -> str:
    """Counts of `values` in equal bins from 0 (or the smallest value, if negative) to the largest."""
    height = MARGIN_TOP + PLOT_HEIGHT + MARGIN_BOTTOM
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    parts = [_open(title, height), _text(MARGIN_LEFT, 18, f"{title} ({unit}), {len(values)} values", "title")]
    if not values:
        parts.append(_text(MARGIN_LEFT + plot_width / 2, MARGIN_TOP + PLOT_HEIGHT / 2, "no data", "empty",
                           anchor="middle"))
        parts.append("</svg>")
        return "\n".join(parts)
    x_ticks = nice_ticks(min(0.0, min(values)), max(values) if max(values) > 0 else 1.0, 8)
    low, high = x_ticks[0], x_ticks[-1]
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    y_ticks = nice_ticks(0.0, float(max(counts)), min(4, max(counts)))  # whole counts
    y_top = y_ticks[-1]

    def px(x: float) -> float:
        return MARGIN_LEFT + (x - low) / (high - low) * plot_width

    def py(y: float) -> float:
        return MARGIN_TOP + PLOT_HEIGHT - y / y_top * PLOT_HEIGHT

    for tick in y_ticks:
        y = py(tick)
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(_text(MARGIN_LEFT - 6, y + 4, number(tick), "tick", anchor="end"))
    for tick in x_ticks:
        parts.append(_text(px(tick), MARGIN_TOP + PLOT_HEIGHT + 16, number(tick), "tick", anchor="middle"))
    for index, count in enumerate(counts):
        if count:
            left = px(low + index * width)
            top = py(count)
            parts.append(f'<rect class="bar" x="{left + 0.5:.1f}" y="{top:.1f}" width="{plot_width / bins - 1:.1f}" '
                         f'height="{MARGIN_TOP + PLOT_HEIGHT - top:.1f}"><title>{count} between '
                         f"{number(low + index * width)} and {number(low + (index + 1) * width)} {escape(unit)}"
                         "</title></rect>")
    parts.append(f'<rect class="frame" x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_width}" height="{PLOT_HEIGHT}"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _open(title: str, height: float) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" height="{height:.0f}" '
            f'role="img" aria-label="{escape(title)}">')


def _text(x: float, y: float, text: str, css: str, anchor: str = "start") -> str:
    return f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _runs(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Consecutive points with a value; a None splits the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]
