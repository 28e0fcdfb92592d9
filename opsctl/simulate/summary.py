"""What a replay cost and how it served: the figures ``scale simulate`` compares policies by.

- ``replica_minutes``: the replicas the autoscaler ran (starting ones too: they are paid), integrated;
- ``underprovisioned_seconds``: time with demand above ready capacity (``ready * capacity``);
- ``slo_violation_seconds``: time with the modelled latency above the SLO (None without an SLO);
- ``max_backlog``: the most work waiting at once;
- ``scale_events``: changes of the replica count; ``flaps``: changes of direction within the
  scale-down stabilization window of the change before;
- ``time_to_capacity_seconds``: the longest stretch under-provisioned, from the moment demand
  exceeded ready capacity until ready capacity caught up (or the trace ended).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opsctl.simulate.model import EPSILON, Model, Run


@dataclass(frozen=True)
class Summary:
    replica_minutes: float
    underprovisioned_seconds: float
    slo_violation_seconds: float | None
    max_backlog: float
    scale_events: int
    flaps: int
    time_to_capacity_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flaps(events: Sequence[tuple[float, int]], window: float) -> int:
    """Direction changes no later than ``window`` seconds after the change before."""
    count = 0
    for (before, a), (at, b) in itertools.pairwise(events):
        if (a > 0) != (b > 0) and at - before <= window:
            count += 1
    return count


def longest(flags: Iterable[bool]) -> float:
    """The longest run of consecutive True flags (seconds, one flag a second)."""
    run = best = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return float(best)


def summarize(run: Run, model: Model, down_window: float) -> Summary:
    """The summary of ``run`` (one entry per second in ``run.seconds``)."""
    secs = run.seconds
    slo = model.slo
    short = [s.demand > s.ready * model.capacity + EPSILON for s in secs]
    return Summary(
        replica_minutes=round(sum(s.current for s in secs) / 60, 4),
        underprovisioned_seconds=float(sum(short)),
        slo_violation_seconds=None if slo is None else float(sum(1 for s in secs if s.latency > slo)),
        max_backlog=round(max((s.backlog for s in secs), default=0.0), 6),
        scale_events=len(run.scale_events),
        flaps=flaps(run.scale_events, down_window),
        time_to_capacity_seconds=longest(short),
    )
