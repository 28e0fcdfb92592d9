"""A recorded run of the real system as a :class:`Run`, and its agreement with a replay.

The closed loop (``bench/closed_loop.py``) records, once a second, the demand it sent and what
Prometheus saw of the service: the replicas the autoscaler set (``desired``), the ready ones
(``ready``) and the backlog. :func:`observed_run` turns those rows into the same :class:`Run` a
replay produces, so one :func:`~opsctl.simulate.summary.summarize` measures both with the same
definitions (replica-minutes of the replicas set, time-to-capacity as the longest stretch with
demand above ``ready * capacity``), and one chart draws both. :func:`agreement` compares two
summaries figure by figure: the relative error ``|simulated - real| / real`` and whether it is
within the tolerance (two zeros agree; a zero against a non-zero does not).

The real system's shortfall is measured, not modelled: :func:`observed_summary` counts a second as
under-provisioned when work waited and the demand was above what the workers served that second
(``served``, the rate of finished jobs), so the real time-to-capacity does not depend on the
model's capacity. :func:`saturated_throughput` gives the real throughput per count of ready
replicas while work waited: the model's capacity is one number per replica, and this shows how far
the machine is from that (on 2 shared cores, more workers do not serve proportionally more).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opsctl.simulate.model import EPSILON, Model, Point, Run, Second, SimulationError
from opsctl.simulate.summary import Summary, longest, summarize

COMPARED = ("replica_minutes", "time_to_capacity_seconds")


@dataclass(frozen=True)
class Row:
    """One second of the real run: ``t`` seconds from its start."""

    t: float
    demand: float
    desired: int
    ready: int
    backlog: float
    served: float | None = None  # work units finished in this second (None: not measured)


def observed_run(rows: Sequence[Row], model: Model, sync: float | None = None) -> Run:
    """The recording as a Run: a Second per row, a Point every ``sync`` seconds (default the model's),
    a scale event at each change of ``desired``. Rows must be one second apart from t = 0."""
    if not rows:
        raise SimulationError("the recording has no rows")
    for i, row in enumerate(rows):
        if abs(row.t - i) > 1e-6:
            raise SimulationError(f"recording row {i} is at t={row.t:g}: rows must be one second apart from 0")
    every = sync if sync is not None else model.sync
    seconds = tuple(Second(r.t, r.demand, r.desired, r.ready, r.backlog, model.latency(r.backlog, r.ready))
                    for r in rows)
    timeline = tuple(Point(r.t, r.demand, r.desired, r.ready, r.backlog, "recorded")
                     for i, r in enumerate(rows) if i % max(1, round(every)) == 0)
    events = tuple((b.t, b.desired - a.desired) for a, b in itertools.pairwise(rows)
                   if b.desired != a.desired)
    return Run(timeline, seconds, (), events)


def observed_summary(rows: Sequence[Row], model: Model, down_window: float) -> Summary:
    """The recording's summary; where every row has ``served``, the shortfall is the measured one:
    work waiting and demand above what was served."""
    summary = summarize(observed_run(rows, model), model, down_window)
    if any(r.served is None for r in rows):
        return summary
    short = [r.backlog > 0 and r.demand > (r.served or 0.0) + EPSILON for r in rows]
    return dataclasses.replace(summary, underprovisioned_seconds=float(sum(short)),
                               time_to_capacity_seconds=longest(short))


def saturated_throughput(rows: Sequence[Row]) -> dict[int, float]:
    """Per count of ready replicas, the median work served per second while work waited."""
    by: dict[int, list[float]] = {}
    for r in rows:
        if r.backlog > 0 and r.ready > 0 and r.served is not None and r.served > 0:
            by.setdefault(r.ready, []).append(r.served)
    return {ready: round(statistics.median(v), 3) for ready, v in sorted(by.items())}


def startup_seconds(rows: Sequence[Row]) -> float | None:
    """The median seconds from each rise of ``desired`` until ``ready`` reached it (None: no rise that
    was reached within the recording)."""
    waits = []
    for before, (i, row) in zip(rows, enumerate(rows[1:], 1), strict=False):
        if row.desired > before.desired:
            reached = next((j for j in range(i, len(rows)) if rows[j].ready >= row.desired), None)
            if reached is not None:
                waits.append(reached - i)
    return float(statistics.median(waits)) if waits else None


@dataclass(frozen=True)
class Figure:
    name: str
    real: float
    simulated: float
    relative_error: float | None  # None: the real figure is 0 and the simulated one is not
    within: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(real: Summary, simulated: Summary, tolerance: float = 0.2,
              figures: Sequence[str] = COMPARED) -> list[Figure]:
    """Each figure of ``real`` against ``simulated``: relative error and whether within ``tolerance``."""
    out = []
    for name in figures:
        a, b = float(getattr(real, name)), float(getattr(simulated, name))
        error = (0.0 if b == 0 else None) if a == 0 else round(abs(b - a) / abs(a), 4)
        out.append(Figure(name, a, b, error, error is not None and error <= tolerance))
    return out
