"""Charts of a simulation: replicas and demand over time, as terminal text and as SVG/HTML.

Demand is drawn in replicas (``demand / capacity``: the ready replicas that would just serve it),
so it shares the axis with each policy's replicas. Both renderers are pure text; the command
writes the file.
"""

from __future__ import annotations

import bisect
import html
import math
from collections.abc import Sequence

from opsctl.simulate.compare import Result

MARKERS = "PHABCDEFG"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
NEEDED = "needed (demand / capacity)"


def _series(results: Sequence[Result], capacity: float) -> list[tuple[str, list[tuple[float, float]]]]:
    first = results[0].run.timeline
    out = [(NEEDED, [(p.t, p.demand / capacity) for p in first])]
    out += [(r.name, [(p.t, float(p.desired_replicas)) for p in r.run.timeline]) for r in results]
    return out


def _at(points: Sequence[tuple[float, float]], t: float) -> float:
    """The value of the step line ``points`` (sorted by time) at ``t``: the last point at or before it."""
    return points[max(0, bisect.bisect_right(points, t, key=lambda p: p[0]) - 1)][1]


def terminal(results: Sequence[Result], capacity: float, width: int = 72, height: int = 12) -> str:
    """A text chart: ``.`` the replicas the demand needs, a letter per policy (legend below)."""
    series = _series(results, capacity)
    end = max(p.t for p in results[0].run.timeline) or 1.0
    top = max(1.0, max(v for _, pts in series for _, v in pts))
    grid = [[" "] * width for _ in range(height)]
    for index, (_, pts) in enumerate(series):
        mark = "." if index == 0 else MARKERS[(index - 1) % len(MARKERS)]
        for col in range(width):
            v = _at(pts, end * col / max(1, width - 1))
            row = height - 1 - min(height - 1, round(v / top * (height - 1)))
            grid[row][col] = mark
    label = len(f"{top:g}")
    lines = [f"{(f'{top:g}' if i == 0 else '0' if i == height - 1 else ''):>{label}} │" + "".join(r)
             for i, r in enumerate(grid)]
    lines.append(" " * label + " └" + "─" * width)
    lines.append(" " * label + f"  0 s{f'{end:g} s':>{width - 3}}")
    legend = [". " + NEEDED] + [f"{MARKERS[i % len(MARKERS)]} {r.name} (replicas)" for i, r in enumerate(results)]
    lines.append(" " * label + "  " + "   ".join(legend))
    return "\n".join(lines)


def svg(results: Sequence[Result], capacity: float, service: str, width: int = 900, height: int = 360) -> str:
    """An SVG chart: step lines of each policy's replicas and of the replicas the demand needs."""
    left, right, top_pad, bottom = 50, 20, 30, 40
    series = _series(results, capacity)
    end = max(p.t for p in results[0].run.timeline) or 1.0
    top = max(1.0, max(v for _, pts in series for _, v in pts))
    top = math.ceil(top * 1.1)

    def x(t: float) -> float:
        return left + (width - left - right) * t / end

    def y(v: float) -> float:
        return height - bottom - (height - bottom - top_pad) * v / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<text x="{left}" y="18">{html.escape(service)}: replicas and demand over time</text>',
             f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="#444"/>',
             f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{y(top)}" stroke="#444"/>']
    for i in range(5):
        v = top * i / 4
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        t = end * i / 4
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{t:g} s</text>')
    for index, (name, pts) in enumerate(series):
        coords: list[str] = []
        for j, (t, v) in enumerate(pts):
            if j:
                coords.append(f"{x(t):.1f},{y(pts[j - 1][1]):.1f}")
            coords.append(f"{x(t):.1f},{y(v):.1f}")
        coords.append(f"{x(end):.1f},{y(pts[-1][1]):.1f}")
        color = "#999" if index == 0 else COLORS[(index - 1) % len(COLORS)]
        dash = ' stroke-dasharray="4 3"' if index == 0 else ""
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{" ".join(coords)}"/>')
        ly = top_pad + 14 * index
        parts.append(f'<line x1="{width - right - 230}" y1="{ly}" x2="{width - right - 210}" y2="{ly}" '
                     f'stroke="{color}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{width - right - 205}" y="{ly + 4}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def html_page(results: Sequence[Result], capacity: float, service: str) -> str:
    """A self-contained HTML page: the SVG chart and each policy's summary."""
    keys = list(results[0].summary.as_dict())
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["policy", *keys])
    rows = "".join("<tr>" + f"<td>{html.escape(r.name)}</td>" + "".join(
        f"<td>{'' if v is None else v}</td>" for v in r.summary.as_dict().values()) + "</tr>" for r in results)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>opsctl scale simulate "
            f"{html.escape(service)}</title></head><body>\n{svg(results, capacity, service)}\n"
            f"<table border=\"1\" cellpadding=\"4\"><tr>{head}</tr>{rows}</table>\n</body></html>\n")
