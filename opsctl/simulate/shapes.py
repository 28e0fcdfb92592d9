"""What-if traces: ``step``, ``ramp``, ``spike`` and ``diurnal`` demand, one row per ``step`` seconds.

Parameters (work units per second, seconds):

- ``step``: ``base`` until ``at``, then ``peak``;
- ``ramp``: ``base`` until ``at``, rising linearly to ``peak`` over ``rise`` seconds, then ``peak``;
- ``spike``: ``base``, ``peak`` from ``at`` for ``width`` seconds, then ``base`` again;
- ``diurnal``: ``base + (peak - base) * (1 - cos(2π t / period)) / 2``: lowest at t = 0, highest
  half a ``period`` (default a day) later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from opsctl.simulate.model import SimulationError, Trace

SHAPES = ("step", "ramp", "spike", "diurnal")
PARAMETERS: dict[str, tuple[str, ...]] = {
    "step": ("base", "peak", "at", "duration", "step"),
    "ramp": ("base", "peak", "at", "rise", "duration", "step"),
    "spike": ("base", "peak", "at", "width", "duration", "step"),
    "diurnal": ("base", "peak", "period", "duration", "step"),
}
DEFAULTS: dict[str, float] = {"base": 0.0, "at": 60.0, "rise": 300.0, "width": 60.0, "period": 86400.0,
                              "step": 15.0}


def _demand(shape: str, p: Mapping[str, float], t: float) -> float:
    base, peak = p["base"], p["peak"]
    if shape == "step":
        return peak if t >= p["at"] else base
    if shape == "ramp":
        if t < p["at"]:
            return base
        return base + (peak - base) * min(1.0, (t - p["at"]) / p["rise"]) if p["rise"] > 0 else peak
    if shape == "spike":
        return peak if p["at"] <= t < p["at"] + p["width"] else base
    return base + (peak - base) * (1 - math.cos(2 * math.pi * t / p["period"])) / 2


def make(shape: str, params: Mapping[str, float]) -> Trace:
    """The trace of ``shape`` with ``params`` (``peak`` and ``duration`` are required)."""
    if shape not in SHAPES:
        raise SimulationError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")
    allowed = PARAMETERS[shape]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise SimulationError(f"shape {shape} takes {', '.join(allowed)}; not {', '.join(unknown)}")
    p = {**DEFAULTS, **params}
    for needed in ("peak", "duration"):
        if needed not in p:
            raise SimulationError(f"shape {shape} needs {needed}=NUMBER")
    for key, value in p.items():
        if not math.isfinite(value) or value < 0:
            raise SimulationError(f"shape parameter {key} must be a number >= 0, got {value}")
    if p["step"] <= 0 or p["duration"] < p["step"] or p["period"] <= 0:
        raise SimulationError("shape needs step > 0, duration >= step and period > 0")
    count = int(p["duration"] // p["step"])
    times = tuple(i * p["step"] for i in range(count))
    return Trace(times, tuple(_demand(shape, p, t) for t in times), p["step"])


def parse_params(items: list[str]) -> dict[str, float]:
    """``["peak=40", "at=120"]`` → ``{"peak": 40.0, "at": 120.0}``."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SimulationError(f"shape parameter {item!r}: write NAME=NUMBER, e.g. peak=40")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise SimulationError(f"shape parameter {key}: {value!r} is not a number") from None
    return out
