"""The chart of a simulation: one layout (axes, ticks, each series' step line in pixels, legend) drawn
as SVG and as PNG; each policy's ready replicas solid and the replicas it set dashed; drawn from
timelines as `scale simulate -o json` gives them, so a kept report is drawn again (closed loop --replot)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from PIL import Image, ImageColor

from opsctl.simulate import chart
from opsctl.simulate.model import SimulationError


def timeline(name: str, rows: list[tuple[float, float, int, int]]) -> dict[str, Any]:
    """A policy as `-o json` gives it, from (t, demand, desired, ready) rows."""
    return {"name": name, "timeline": [{"t": t, "demand": d, "desired_replicas": s, "ready_replicas": r, "backlog": 0.0}
                                       for t, d, s, r in rows],
            "summary": {"replica_minutes": 1.5, "time_to_capacity_seconds": 30.0}}


# policy: asks for 4 at t=60, they are ready at t=120; other: asks for 6 at t=60, ready at t=180.
# demand 50/s at capacity 10/s per replica from t=60: 5 replicas needed (the need is the first policy's demand)
POLICY = timeline("policy", [(0, 10, 1, 1), (30, 10, 1, 1), (60, 50, 4, 1), (90, 50, 4, 1), (120, 50, 4, 4),
                             (150, 50, 4, 4), (180, 50, 4, 4), (210, 50, 4, 4), (240, 50, 4, 4), (270, 50, 4, 4),
                             (300, 50, 4, 4)])
OTHER = timeline("other", [(0, 10, 1, 1), (30, 10, 1, 1), (60, 40, 6, 1), (90, 40, 6, 1), (120, 40, 6, 1),
                           (150, 40, 6, 1), (180, 40, 6, 6), (210, 40, 6, 6), (240, 40, 6, 6), (270, 40, 6, 6),
                           (300, 40, 6, 6)])
BOTH = [POLICY, OTHER]


def rgb(image: Image.Image, x: float, y: float) -> tuple[int, ...]:
    pixel = image.getpixel((round(x), round(y)))
    assert isinstance(pixel, tuple)
    return pixel


@pytest.mark.parametrize("span, step", [(1, 0.2), (4.2, 1), (10, 2), (300, 100), (301, 100), (1800, 500),
                                        (6.3, 2), (25, 5)])
def test_nice_steps(span: float, step: float) -> None:
    assert chart.nice_step(span) == pytest.approx(step)


@pytest.mark.parametrize("end, unit", [(300, "s"), (599, "s"), (600, "min"), (1800, "min"), (4 * 3600, "h"),
                                       (86400, "h")])
def test_time_units(end: float, unit: str) -> None:
    assert chart.time_unit(end)[0] == unit


def test_the_layout_puts_each_step_where_its_timeline_says() -> None:
    lay = chart.layout(BOTH, 10.0, "core-worker")
    assert lay.x_range == (0.0, 300.0) and lay.y_range == (0.0, 8.0)  # 6 * 1.05 rounded up to the step (2)
    lines = {line.label: line for line in lay.lines}
    assert list(lines) == [chart.NEEDED, "policy: replicas set", "policy: ready replicas", "other: replicas set",
                           "other: ready replicas"]
    x, y = lay.x, lay.y
    # a vertex only where the value changes: 1 until 60 (set) or 120 (ready), then 4 to the end
    assert lines["policy: replicas set"].points == ((x(0), y(1)), (x(60), y(1)), (x(60), y(4)), (x(300), y(4)))
    assert lines["policy: ready replicas"].points == ((x(0), y(1)), (x(120), y(1)), (x(120), y(4)), (x(300), y(4)))
    assert lines[chart.NEEDED].points == ((x(0), y(1)), (x(60), y(1)), (x(60), y(5)), (x(300), y(5)))
    # ready solid and thick, set thin and dashed, both in the policy's colour; the need grey and dashed
    ready, asked = lines["policy: ready replicas"].stroke, lines["policy: replicas set"].stroke
    assert ready.color == asked.color == chart.COLORS[0]
    assert lines["other: ready replicas"].stroke.color == chart.COLORS[1]
    assert (ready.dash, ready.width) == (None, 2) and asked.dash is not None and asked.width == 1
    assert lines[chart.NEEDED].stroke.color == chart.NEEDED_COLOR and lines[chart.NEEDED].stroke.dash is not None
    texts = [t.text for t in lay.texts]
    assert texts[0].startswith("core-worker: ready replicas, replicas set and demand")
    assert {"0 s", "100 s", "200 s", "300 s", "0", "2", "8"} <= set(texts)
    assert [e.text.text for e in lay.legend] == [chart.NEEDED, "policy: ready replicas", "policy: replicas set",
                                                 "other: ready replicas", "other: replicas set"]
    left, top, right, bottom = lay.plot
    assert all(left <= px <= right and top <= py <= bottom for line in lay.lines for px, py in line.points)
    assert all(e.swatch.points[0][1] > bottom for e in lay.legend)  # the legend is under the plot


@pytest.mark.parametrize("points, dash, pieces", [
    ([(0, 0), (10, 0)], None, [[(0, 0), (10, 0)]]),
    ([(0, 0), (10, 0)], (4, 2), [[(0, 0), (4, 0)], [(6, 0), (10, 0)]]),
    # the pattern runs on round a corner
    ([(0, 0), (3, 0), (3, 5)], (4, 2), [[(0, 0), (3, 0), (3, 1)], [(3, 3), (3, 5)]]),
    ([(0, 0), (0, 2)], (4, 2), [[(0, 0), (0, 2)]]),
])
def test_dashes(points: list[tuple[float, float]], dash: tuple[int, int] | None,
                pieces: list[list[tuple[float, float]]]) -> None:
    assert list(chart.dashes(points, dash)) == pieces


def test_the_png_draws_the_layout() -> None:
    data = chart.png(BOTH, 10.0, "core-worker", width=800, height=400)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (800, 400)
    image = image.convert("RGB")
    lay = chart.layout(BOTH, 10.0, "core-worker", width=800, height=400)
    x, y = lay.x, lay.y
    blue, red, grey = (ImageColor.getrgb(c) for c in (chart.COLORS[0], chart.COLORS[1], chart.NEEDED_COLOR))
    white, grid = (255, 255, 255), ImageColor.getrgb(chart.GRID_COLOR)  # a dash's gap shows the grid
    # each ready line solid where no other line is: policy's at 4 after 120 s, other's at 1 until 180 s
    # after policy's rose, and at 6 after 180 s
    assert rgb(image, x(200), y(4)) == blue
    assert rgb(image, x(150), y(1)) == red and rgb(image, x(250), y(6)) == red
    # the replicas set, dashed: policy's at 4 from 60 to 120 s (its ready line still at 1), other's at 6 from 60
    # to 180 s; along the stretch only the line's colour and, in the gaps, the background
    for color, (t0, t1, v) in ((blue, (60, 120, 4)), (red, (60, 180, 6))):
        seen = {rgb(image, x(t0) + i, y(v)) for i in range(2, round(x(t1) - x(t0)) - 1)}
        assert color in seen and seen <= {color, white, grid}
    # the need, dashed grey, at 5 replicas from 60 s, where no policy is (other's ready rise at 180 s crosses it)
    seen = {rgb(image, x(60) + i, y(5)) for i in range(2, round(x(180) - x(60)) - 1)}
    assert grey in seen and seen <= {grey, white, grid}
    for entry in lay.legend:
        x0, y0 = entry.swatch.points[0]
        assert rgb(image, x0 + 1, y0) == ImageColor.getrgb(entry.swatch.stroke.color)
    # text is drawn: dark pixels where the title is
    assert any(sum(rgb(image, lay.texts[0].x + i, lay.texts[0].y - 4)) < 300 for i in range(60))


def test_svg_draws_the_same_layout() -> None:
    lay = chart.layout(BOTH, 10.0, "core-worker")
    svg = chart.svg(BOTH, 10.0, "core-worker")
    assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"  # well-formed
    assert f'width="{lay.width}" height="{lay.height}"' in svg
    for line in lay.lines:
        points = " ".join(f"{px:g},{py:g}" for px, py in line.points)
        assert f'points="{points}"><title>{line.label}</title>' in svg
    assert svg.count('stroke-dasharray="6 3"') == 2 + 2  # two set lines, two legend swatches
    for text in lay.texts:
        assert f">{text.text}</text>" in svg


def test_the_terminal_shows_ready_and_set() -> None:
    text = chart.terminal(BOTH, 10.0, width=61, height=7)
    lines = text.splitlines()
    assert lines[0].startswith("6 │")
    # other set 6 from 60 s (col 12) while its ready stay at 1 until 180 s (col 36): "h" on the top row
    top = lines[0][len("6 │"):]
    assert set(top[12:36]) == {"h"} and set(top[37:]) == {"H"}
    assert "P policy: ready replicas (p: set)" in text and "H other: ready replicas (h: set)" in text


@pytest.mark.parametrize("suffix, start", [(".png", b"\x89PNG"), (".PNG", b"\x89PNG"), (".svg", b"<svg"),
                                           (".html", b"<!doctype html>"), (".htm", b"<!doctype html>")])
def test_the_suffix_picks_the_format(suffix: str, start: bytes) -> None:
    assert chart.render(suffix, BOTH, 10.0, "core-worker").startswith(start)


def test_unknown_formats_and_bad_timelines_are_refused() -> None:
    with pytest.raises(chart.UnknownFormat, match=r"\.png, \.svg, \.html, \.htm, not '\.pdf'"):
        chart.render(".pdf", BOTH, 10.0, "x")
    with pytest.raises(SimulationError, match="non-empty timeline"):
        chart.svg([{"name": "a", "timeline": []}], 10.0, "x")
    with pytest.raises(SimulationError, match=r"'a'.*needs t, demand, desired_replicas and ready_replicas"):
        chart.svg([{"name": "a", "timeline": [{"t": 0, "demand": 1, "desired_replicas": 1}]}], 10.0, "x")


def test_the_closed_loop_draws_its_chart_again_from_its_report(tmp_path: Path) -> None:
    from bench import closed_loop

    report = tmp_path / "closed_loop.json"
    report.write_text(json.dumps({"model": {"capacity": 10.0}, "policies": BOTH}))
    for name in ("closed-loop.svg", "closed-loop.png"):
        out = tmp_path / name
        assert closed_loop.main(["--replot", "--out", str(report), "--chart", str(out)]) == 0
        assert out.read_bytes() == chart.render(out.suffix, BOTH, 10.0, closed_loop.TITLE)
