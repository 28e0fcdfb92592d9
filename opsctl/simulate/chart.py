"""Charts of a simulation: ready replicas, the replicas set, and demand over time, in the terminal
and as SVG, HTML or PNG.

Charts are drawn from timelines as ``scale simulate -o json`` gives them (``{"name", "timeline":
[{"t", "demand", "desired_replicas", "ready_replicas", ...}], "summary"}``), so a report kept as
JSON is drawn again without a new run (``python -m bench.closed_loop --replot``). Demand is drawn in
replicas (``demand / capacity``: the ready replicas that would just serve it), so it shares the
axis with the replicas. Each policy's ready replicas are its solid line; the replicas it set
(``desired_replicas``) a thin dashed line of the same colour: where they part, replicas are starting.

:func:`layout` computes the picture once (axis ranges and ticks, each series' step line in pixels,
colours, dashes, legend, title); :func:`svg` and :func:`png` only draw it. Nothing here writes a
file: :func:`render` returns the bytes of the format a file's suffix names and the caller writes them.
"""

from __future__ import annotations

import bisect
import dataclasses
import html
import io
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from opsctl.simulate.model import SimulationError

Timeline = Mapping[str, Any]  # one policy as `scale simulate -o json` gives it: name, timeline, summary
Anchor = Literal["start", "middle", "end"]

MARKERS = "PHABCDEFG"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
NEEDED = "needed (demand / capacity)"
NEEDED_COLOR = "#999999"
AXIS_COLOR = "#444444"
GRID_COLOR = "#e6e6e6"
TEXT_COLOR = "#000000"


class UnknownFormat(SimulationError):
    """A chart file whose suffix names no format this module draws."""


@dataclass(frozen=True)
class Stroke:
    color: str  # "#rrggbb"
    width: int  # pixels
    dash: tuple[int, int] | None = None  # pixels drawn, pixels skipped; None: solid


@dataclass(frozen=True)
class Polyline:
    label: str
    stroke: Stroke
    points: tuple[tuple[float, float], ...]  # pixels, y down


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # the baseline
    text: str
    anchor: Anchor = "start"


@dataclass(frozen=True)
class LegendEntry:
    swatch: Polyline
    text: Text


@dataclass(frozen=True)
class Layout:
    """The whole picture in pixels: what both renderers draw, in this order (axes and grid, series,
    legend swatches, texts)."""

    width: int
    height: int
    font_size: int
    x_range: tuple[float, float]  # seconds
    y_range: tuple[float, float]  # replicas
    plot: tuple[float, float, float, float]  # left, top, right, bottom of the plotting area
    axes: tuple[Polyline, ...]
    lines: tuple[Polyline, ...]
    legend: tuple[LegendEntry, ...]
    texts: tuple[Text, ...]  # the title, the ticks' labels, the legend's

    def x(self, t: float) -> float:
        left, _, right, _ = self.plot
        return round(left + (right - left) * (t - self.x_range[0]) / (self.x_range[1] - self.x_range[0]), 1)

    def y(self, v: float) -> float:
        _, top, _, bottom = self.plot
        return round(bottom - (bottom - top) * (v - self.y_range[0]) / (self.y_range[1] - self.y_range[0]), 1)


# --- the series, from the timelines ----------------------------------------------------------------

Points = list[tuple[float, float]]


class AsDict(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def timelines(results: Sequence[AsDict]) -> list[dict[str, Any]]:
    """Results (:class:`~opsctl.simulate.compare.Result`) as the charts take them: ``-o json``'s policies."""
    return [r.as_dict() for r in results]


def _points(policy: Timeline, key: str, scale: float = 1.0) -> Points:
    try:
        return [(float(p["t"]), float(p[key]) / scale) for p in policy["timeline"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SimulationError(f"timeline of {policy.get('name', '?')!r}: each point needs t, demand, "
                              f"desired_replicas and ready_replicas ({exc!r})") from exc


def _checked(policies: Sequence[Timeline]) -> Sequence[Timeline]:
    if not policies or not all(p.get("timeline") for p in policies):
        raise SimulationError("a chart needs at least one policy with a non-empty timeline")
    return policies


def _end(policies: Sequence[Timeline]) -> float:
    return max(float(p["t"]) for pol in policies for p in pol["timeline"]) or 1.0


def _at(points: Sequence[tuple[float, float]], t: float) -> float:
    """The value of the step line ``points`` (sorted by time) at ``t``: the last point at or before it."""
    return points[max(0, bisect.bisect_right(points, t, key=lambda p: p[0]) - 1)][1]


# --- the terminal ----------------------------------------------------------------------------------


def terminal(policies: Sequence[Timeline], capacity: float, width: int = 72, height: int = 12) -> str:
    """A text chart: ``.`` the replicas the demand needs; per policy an upper-case letter its ready
    replicas and the lower-case one the replicas it set where they differ (legend below)."""
    _checked(policies)
    needed = _points(policies[0], "demand", capacity)
    marked = [(MARKERS[i % len(MARKERS)], p) for i, p in enumerate(policies)]
    # the set replicas first, the ready ones over them: a lower-case letter shows only where they part
    series = [(".", needed)] + [(m.lower(), _points(p, "desired_replicas")) for m, p in marked]
    series += [(m, _points(p, "ready_replicas")) for m, p in marked]
    end = _end(policies)
    top = max(1.0, max(v for _, pts in series for _, v in pts))
    grid = [[" "] * width for _ in range(height)]
    for mark, pts in series:
        for col in range(width):
            v = _at(pts, end * col / max(1, width - 1))
            row = height - 1 - min(height - 1, round(v / top * (height - 1)))
            grid[row][col] = mark
    label = len(f"{top:g}")
    lines = [f"{(f'{top:g}' if i == 0 else '0' if i == height - 1 else ''):>{label}} │" + "".join(r)
             for i, r in enumerate(grid)]
    lines.append(" " * label + " └" + "─" * width)
    lines.append(" " * label + f"  0 s{f'{end:g} s':>{width - 3}}")
    legend = [". " + NEEDED] + [f"{m} {p['name']}: ready replicas ({m.lower()}: set)" for m, p in marked]
    lines.append(" " * label + "  " + "   ".join(legend))
    return "\n".join(lines)


# --- the layout ------------------------------------------------------------------------------------


def nice_step(span: float, count: int = 5) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving at most about ``count`` steps over ``span``."""
    raw = max(span, 1e-9) / count
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw - 1e-12)


def time_unit(end: float) -> tuple[str, float]:
    """The unit the time axis is labelled in: hours from 4 h, minutes from 10 min, else seconds."""
    return ("h", 3600.0) if end >= 4 * 3600 else ("min", 60.0) if end >= 600 else ("s", 1.0)


def step_pixels(points: Points, end: float, x: Callable[[float], float],
                y: Callable[[float], float]) -> tuple[tuple[float, float], ...]:
    """The step line through ``points`` (each value held until the next point, the last until ``end``)
    in pixels, with a vertex only where the value changes."""
    out = [(x(points[0][0]), y(points[0][1]))]
    for (_, before), (t, v) in itertools.pairwise(points):
        if v != before:
            out += [(x(t), y(before)), (x(t), y(v))]
    out.append((x(end), y(points[-1][1])))
    return tuple(out)


def _series(policies: Sequence[Timeline], capacity: float) -> list[tuple[str, Stroke, Points]]:
    """Every line in drawing order: the need, then per policy the replicas set (under) and the ready ones."""
    out = [(NEEDED, Stroke(NEEDED_COLOR, 2, (4, 3)), _points(policies[0], "demand", capacity))]
    for i, p in enumerate(policies):
        color = COLORS[i % len(COLORS)]
        out.append((f"{p['name']}: replicas set", Stroke(color, 1, (6, 3)), _points(p, "desired_replicas")))
        out.append((f"{p['name']}: ready replicas", Stroke(color, 2), _points(p, "ready_replicas")))
    return out


def layout(policies: Sequence[Timeline], capacity: float, title: str, width: int = 900, height: int = 380,
           font_size: int = 12) -> Layout:
    """The chart of ``policies`` (the first one's demand is the need) as pixels, ``width`` x ``height``."""
    _checked(policies)
    series = _series(policies, capacity)
    end = _end(policies)
    peak = max(v for _, _, pts in series for _, v in pts)
    y_step = max(1.0, nice_step(peak * 1.05 or 1.0))
    y_top = y_step * max(1, math.ceil(peak * 1.05 / y_step))
    unit, seconds = time_unit(end)
    x_step = nice_step(end / seconds)

    # the legend under the plot: the need, then a row per policy (its ready replicas, the replicas it set)
    cells = [(0, 0, series[0])] + [(1 + i // 2, (i + 1) % 2, s) for i, s in enumerate(series[1:])]
    swatch = 24
    left, right, top = 50.0, float(width - 20), 30.0
    rows = 1 + len(policies)
    row_height = font_size + 5
    bottom = float(height - 12 - rows * row_height - 22)
    if bottom - top < 4 * font_size:
        raise SimulationError(f"a chart of {width}x{height} pixels leaves no room to plot {len(policies)} policies")
    frame = Layout(width, height, font_size, (0.0, end), (0.0, y_top), (left, top, right, bottom),
                   (), (), (), ())  # its scales place what follows

    axes: list[Polyline] = []
    texts = [Text(left, 18.0, f"{title}: ready replicas, replicas set and demand over time")]
    for k in range(round(y_top / y_step) + 1):
        v = k * y_step
        axes.append(Polyline("grid", Stroke(GRID_COLOR, 1), ((left, frame.y(v)), (right, frame.y(v)))))
        texts.append(Text(left - 6, frame.y(v) + font_size / 3, f"{v:g}", "end"))
    for k in range(int(end / seconds / x_step + 1e-9) + 1):
        t = k * x_step * seconds
        axes.append(Polyline("tick", Stroke(AXIS_COLOR, 1), ((frame.x(t), bottom), (frame.x(t), bottom + 4))))
        texts.append(Text(frame.x(t), bottom + 4 + font_size + 2, f"{round(k * x_step, 9):g} {unit}", "middle"))
    axes.append(Polyline("axes", Stroke(AXIS_COLOR, 1), ((left, top), (left, bottom), (right, bottom))))

    lines = tuple(Polyline(label, stroke, step_pixels(pts, end, frame.x, frame.y)) for label, stroke, pts in series)
    legend = []
    for row, column, (label, stroke, _) in sorted(cells, key=lambda c: c[:2]):
        lx = left + (right - left) / 2 * column
        ly = bottom + 22 + 12 + row_height * row
        mid = ly - font_size / 3  # the swatch at the middle of the text's lower-case letters
        legend.append(LegendEntry(Polyline(label, stroke, ((lx, mid), (lx + swatch, mid))),
                                  Text(lx + swatch + 6, ly, label)))
    texts += [e.text for e in legend]
    return dataclasses.replace(frame, axes=tuple(axes), lines=lines, legend=tuple(legend), texts=tuple(texts))


# --- the renderers ---------------------------------------------------------------------------------


SVG_ANCHORS = {"start": "", "middle": ' text-anchor="middle"', "end": ' text-anchor="end"'}


def svg(policies: Sequence[Timeline], capacity: float, title: str, width: int = 900, height: int = 380) -> str:
    """The chart as an SVG document."""
    lay = layout(policies, capacity, title, width, height)

    def polyline(line: Polyline, named: bool) -> str:
        s = line.stroke
        dash = f' stroke-dasharray="{s.dash[0]} {s.dash[1]}"' if s.dash else ""
        pts = " ".join(f"{x:g},{y:g}" for x, y in line.points)
        name = f"<title>{html.escape(line.label)}</title>" if named else ""
        return (f'<polyline fill="none" stroke="{s.color}" stroke-width="{s.width}"{dash} points="{pts}">'
                f"{name}</polyline>")

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
             f'viewBox="0 0 {lay.width} {lay.height}" font-family="sans-serif" font-size="{lay.font_size}">',
             f'<rect width="{lay.width}" height="{lay.height}" fill="#ffffff"/>']
    parts += [polyline(a, False) for a in lay.axes]
    parts += [polyline(line, True) for line in lay.lines]
    parts += [polyline(e.swatch, False) for e in lay.legend]
    parts += [f'<text x="{t.x:g}" y="{t.y:g}"{SVG_ANCHORS[t.anchor]} fill="{TEXT_COLOR}">{html.escape(t.text)}</text>'
              for t in lay.texts]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def dashes(points: Sequence[tuple[float, float]], dash: tuple[int, int] | None) -> Iterator[list[tuple[float, float]]]:
    """The pieces of the polyline ``points`` a dash pattern draws (on, off pixels along its length,
    restarting at its first point); the whole polyline when solid."""
    if dash is None:
        yield list(points)
        return
    on, off = dash
    drawing, left = True, float(on)  # in the current phase, pixels left
    piece = [points[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length = math.hypot(x1 - x0, y1 - y0)
        done = 0.0
        while length - done > left:
            done += left
            at = (x0 + (x1 - x0) * done / length, y0 + (y1 - y0) * done / length)
            if drawing:
                yield [*piece, at]
            piece = [at]
            drawing = not drawing
            left = float(on if drawing else off)
        left -= length - done
        if drawing:
            piece.append((x1, y1))
    if drawing and len(piece) > 1:
        yield piece


PIL_ANCHORS = {"start": "ls", "middle": "ms", "end": "rs"}  # left/middle/right at the baseline, as SVG's


def png(policies: Sequence[Timeline], capacity: float, title: str, width: int = 900, height: int = 380) -> bytes:
    """The chart as PNG bytes (Pillow)."""
    from PIL import Image, ImageDraw, ImageFont

    lay = layout(policies, capacity, title, width, height)
    image = Image.new("RGB", (lay.width, lay.height), "#ffffff")
    draw = ImageDraw.Draw(image)
    for line in (*lay.axes, *lay.lines, *(e.swatch for e in lay.legend)):
        for piece in dashes(line.points, line.stroke.dash):
            draw.line([(round(x), round(y)) for x, y in piece], fill=line.stroke.color, width=line.stroke.width,
                      joint="curve" if line.stroke.width > 1 else None)
    font = ImageFont.load_default(size=lay.font_size)
    for t in lay.texts:
        draw.text((t.x, t.y), t.text, fill=TEXT_COLOR, font=font, anchor=PIL_ANCHORS[t.anchor])
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def html_page(policies: Sequence[Timeline], capacity: float, title: str) -> str:
    """A self-contained HTML page: the SVG chart and each policy's summary."""
    keys = list(policies[0].get("summary") or {})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["policy", *keys])
    rows = "".join("<tr>" + f"<td>{html.escape(str(p['name']))}</td>" + "".join(
        f"<td>{'' if (v := (p.get('summary') or {}).get(k)) is None else v}</td>" for k in keys) + "</tr>"
        for p in policies)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>opsctl scale simulate "
            f"{html.escape(title)}</title></head><body>\n{svg(policies, capacity, title)}"
            f"<table border=\"1\" cellpadding=\"4\"><tr>{head}</tr>{rows}</table>\n</body></html>\n")


FORMATS: dict[str, Callable[[Sequence[Timeline], float, str], str | bytes]] = {
    ".png": png, ".svg": svg, ".html": html_page, ".htm": html_page}


def check_format(suffix: str) -> None:
    """Raises :class:`UnknownFormat` unless ``suffix`` (``.png``, ...) names a format drawn here."""
    if suffix.lower() not in FORMATS:
        raise UnknownFormat(f"a chart file ends in {', '.join(FORMATS)}, not {suffix or '(no suffix)'!r}")


def render(suffix: str, policies: Sequence[Timeline], capacity: float, title: str) -> bytes:
    """The chart in the format ``suffix`` names, as the bytes of the file."""
    check_format(suffix)
    out = FORMATS[suffix.lower()](policies, capacity, title)
    return out if isinstance(out, bytes) else out.encode("utf-8")
