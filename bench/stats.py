"""Small pure helpers: latency summaries and ratios."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Client-side latency of one load run (milliseconds) and its throughput."""

    n: int
    concurrency: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    qps: float


def summarize(seconds: Sequence[float], wall_seconds: float, concurrency: int) -> Latency:
    if not seconds:
        raise ValueError("no samples to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return Latency(
        n=len(ms),
        concurrency=concurrency,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        qps=len(ms) / wall_seconds if wall_seconds > 0 else float("nan"),
    )


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else float("nan")
