"""Demand from recorded history: the arrivals that, through the model, reproduce what Prometheus recorded.

Given samples every ``step`` seconds of the ready replicas ``R`` and one of:

- a **demand series** (``--demand-query``, e.g. the rate of an arrivals counter): taken as it is;
- a **backlog** (the policy's queue metric): over each interval the queue grew by arrivals minus
  what the ready replicas served, so ``demand = (B[i+1] - B[i]) / step + R[i] * capacity`` while work
  waits at the end of the interval. When the queue is empty at its end the arrivals were anything up
  to what the replicas could serve, and the smallest value that empties it is taken:
  ``max(0, (B[i+1] - B[i]) / step)``... i.e. 0 from an empty queue. Replaying that demand with the same replicas
  gives back the recorded backlog; it can understate an idle-looking service's load (a demand series
  cannot);
- a **utilization** (percent of the requests, the policy's Utilization metric): ``demand = U/100 * R * capacity``.

``capacity_from`` measures one replica's capacity from the same history: the median of
``throughput / R`` over the samples where work waited (the replicas were saturated).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from opsctl.simulate.model import SimulationError


def from_backlog(backlog: Sequence[float], ready: Sequence[float], capacity: float, step: float) -> list[float]:
    """One demand per interval (``len(backlog) - 1`` of them, the last repeated to keep the length)."""
    out = []
    for i in range(len(backlog) - 1):
        if backlog[i + 1] > 0:
            out.append(max(0.0, (backlog[i + 1] - backlog[i]) / step + ready[i] * capacity))
        else:
            out.append(0.0)
    out.append(out[-1] if out else 0.0)
    return out


def from_utilization(percent: Sequence[float], ready: Sequence[float], capacity: float) -> list[float]:
    return [u / 100 * r * capacity for u, r in zip(percent, ready, strict=True)]


def capacity_from(throughput: Sequence[float], backlog: Sequence[float], ready: Sequence[float]) -> float:
    """Work units per second one ready replica served while saturated (the median over such samples)."""
    rates = [x / r for x, b, r in zip(throughput, backlog, ready, strict=True) if b > 0 and r > 0 and x > 0]
    if not rates:
        raise SimulationError("the history has no moment with work waiting and replicas serving it, so it "
                              "cannot measure a replica's capacity: give --capacity")
    return statistics.median(rates)
