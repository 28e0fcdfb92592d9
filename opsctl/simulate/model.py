"""The service model and the replay: a load trace through ``decide()``, one second at a time.

Each second ``t`` the model knows the demand (work units per second, from the trace), the replicas
(``current``: what the autoscaler set; ``ready``: those that finished starting) and the backlog
(work that arrived and was not served yet, first in first out). At each sync (every ``sync``
seconds from 0) the policy's metrics are read as they stood ``lag`` seconds earlier and passed,
with the history of recommendations and scale events, to :func:`opsctl.scaling.engine.decide`,
the daemon's own decision. A scale-up is ready ``startup`` seconds later; a scale-down removes the
replicas still starting first, then ready ones, at once. Then the second's work flows: arrivals
``demand``, served at most ``ready * capacity`` (never more than there is).

Metrics are modelled by what they measure (:func:`metric_kind`), unless the trace has a column
named like the metric, which then gives its value:

- ``utilization``: ``100 * demand / (ready * capacity)`` per ready pod (request 100, usage the
  percent); pods still starting are unready (usage 0, as a starting process uses next to nothing);
- ``backlog``: the backlog (a total: AverageValue divides it by the replicas);
- ``age``: how long the oldest unserved work has waited;
- ``latency``: the backlog's wait ``backlog / (ready * capacity)`` plus the service time
  ``1 / capacity`` (infinite with work waiting and no ready replica: the metric then fails, as a
  p95 over no completions does);
- ``demand``: the arrival rate.

A metric none of these describes (an error rate) is :class:`Unmodelled` unless the trace gives it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from opsctl.scaling.engine import Decision, decide
from opsctl.scaling.policy import MetricSpec, ServicePolicy
from opsctl.scaling.snapshot import History, MetricSample, PodSample, Snapshot

Kind = Literal["utilization", "backlog", "age", "latency", "demand"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # t = 0 of a trace given in seconds
EPSILON = 1e-9
MAX_TRACE_SECONDS = 31 * 86400  # a month, one tick per second


class SimulationError(ValueError):
    """A simulation that cannot run as asked (the command maps it to exit 2)."""


class Unmodelled(SimulationError):
    """A policy metric the model cannot compute and the trace does not give."""


@dataclass(frozen=True)
class Trace:
    """Demand over time: ``times`` (seconds from the start, sorted) and ``demand`` at each, held until
    the next; ``columns`` give metric values the same way (None: the model's). ``step`` is the
    length of the last row's interval, so the trace lasts ``times[-1] + step`` seconds."""

    times: tuple[float, ...]
    demand: tuple[float, ...]
    step: float
    columns: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)
    start: datetime | None = None  # the moment of t = 0 when the trace had ISO 8601 times

    @property
    def duration(self) -> float:
        return self.times[-1] + self.step

    def index(self, t: float) -> int:
        return max(0, bisect.bisect_right(self.times, t) - 1)

    def demand_at(self, t: float) -> float:
        return self.demand[self.index(t)]


@dataclass(frozen=True)
class Model:
    """The service: how much one ready replica serves, how long a new one takes, how decisions see it."""

    capacity: float  # work units per second per ready replica
    startup: float = 0.0  # seconds from a scale-up to ready replicas
    sync: float = 15.0  # seconds between decisions (the HPA's --horizontal-pod-autoscaler-sync-period)
    lag: float = 0.0  # seconds a metric lags behind the service (scrape interval + query window)
    start_replicas: int | None = None  # default: the policy's minReplicas, at least 1
    slo: float | None = None  # seconds of latency; None: no SLO accounting
    backlog: float = 0.0  # work waiting at t = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity) and self.capacity > 0):
            raise SimulationError(f"capacity must be a positive number of work units per second, got {self.capacity}")
        if not (math.isfinite(self.sync) and self.sync >= 1):
            raise SimulationError(f"sync must be at least 1 second, got {self.sync}")
        for name in ("startup", "lag", "backlog"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SimulationError(f"{name} must be a number >= 0, got {value}")
        if self.slo is not None and not (math.isfinite(self.slo) and self.slo > 0):
            raise SimulationError(f"slo must be a positive number of seconds, got {self.slo}")

    def latency(self, backlog: float, ready: int) -> float:
        """The backlog's wait plus the service time (infinite with work waiting and none ready)."""
        if backlog <= EPSILON:
            return 1 / self.capacity
        if ready == 0:
            return math.inf
        return backlog / (ready * self.capacity) + 1 / self.capacity


_KEYWORDS: tuple[tuple[Kind | None, tuple[str, ...]], ...] = (
    (None, ("error", "5..", "fail")),
    ("age", ("oldest", "age")),
    ("latency", ("latency", "p95", "p99", "p50", "quantile", "_bucket")),
    ("backlog", ("backlog", "queue", "depth", "pending", "in_flight", "lag")),
    ("demand", ("rate(", "rps", "requests", "throughput", "arrival")),
)


def metric_kind(spec: MetricSpec) -> Kind | None:
    """What a policy metric measures, from its type, name and query (None: not modelled)."""
    if spec.target.type == "Utilization":
        return "utilization"
    text = f"{spec.name} {spec.query or ''}".lower()
    for kind, words in _KEYWORDS:
        if any(w in text for w in words):
            return kind
    return None


def check_modelled(policy: ServicePolicy, trace: Trace) -> dict[str, Kind | None]:
    """Each metric's kind; raises Unmodelled for a metric neither the model nor the trace gives."""
    kinds = {spec.name: metric_kind(spec) for spec in policy.metrics}
    missing = [f"{spec.name} ({spec.query or spec.usageQuery})" for spec in policy.metrics
               if kinds[spec.name] is None and spec.name not in trace.columns]
    if missing:
        raise Unmodelled(f"the model cannot compute metric {', '.join(missing)}: add a column named like it "
                         "to the trace")
    return kinds


@dataclass(frozen=True)
class Point:
    """The service at a sync: what ``-o json`` puts in the timeline."""

    t: float
    demand: float
    desired_replicas: int
    ready_replicas: int
    backlog: float
    reason: str = ""

    def as_dict(self) -> dict[str, float | int]:
        return {"t": self.t, "demand": round(self.demand, 6), "desired_replicas": self.desired_replicas,
                "ready_replicas": self.ready_replicas, "backlog": round(self.backlog, 6)}


class Second(NamedTuple):
    """One second of the replay, for the summary: what ran, what was asked, what waited."""

    t: float
    demand: float
    current: int
    ready: int
    backlog: float  # at the start of the second
    latency: float


@dataclass(frozen=True)
class Run:
    timeline: tuple[Point, ...]
    seconds: tuple[Second, ...]
    decisions: tuple[Decision, ...]
    scale_events: tuple[tuple[float, int], ...]  # (t, signed change)


@dataclass
class _Service:
    """The mutable state of one replay (never leaves :func:`replay`)."""

    current: int
    ready: int
    starting: list[float]  # the moments the replicas still starting become ready
    queue: deque[list[float]]  # [arrived at, amount], oldest first
    backlog: float = 0.0  # the sum of the queue's amounts

    def oldest_age(self, t: float) -> float:
        return t - self.queue[0][0] if self.queue else 0.0

    def scale_to(self, desired: int, t: float, startup: float) -> None:
        if desired > self.current:
            self.starting.extend([t + startup] * (desired - self.current))
        else:
            drop = self.current - desired
            keep = max(0, len(self.starting) - drop)
            drop -= len(self.starting) - keep
            self.starting = sorted(self.starting)[:keep]
            self.ready -= drop
        self.current = desired
        self.become_ready(t)

    def become_ready(self, t: float) -> None:
        done = [s for s in self.starting if s <= t + EPSILON]
        if done:
            self.ready += len(done)
            self.starting = [s for s in self.starting if s > t + EPSILON]

    def flow(self, t: float, arrivals: float, capacity: float) -> None:
        """One second: ``arrivals`` join the queue, ``ready * capacity`` is served from its head."""
        if not self.queue and arrivals <= self.ready * capacity:
            return  # all served within the second: nothing waits
        if arrivals > 0:
            self.queue.append([t, arrivals])
            self.backlog += arrivals
        budget = self.ready * capacity
        while self.queue and budget > EPSILON:
            head = self.queue[0]
            served = min(head[1], budget)
            head[1] -= served
            budget -= served
            self.backlog -= served
            if head[1] <= EPSILON:
                self.queue.popleft()
        if not self.queue:
            self.backlog = 0.0


def _metrics(policy: ServicePolicy, kinds: Mapping[str, Kind | None], trace: Trace, model: Model,
             svc: _Service, t: float, demand: float) -> dict[str, MetricSample]:
    """Every policy metric as the model (or the trace's column) has it at ``t``."""
    out: dict[str, MetricSample] = {}
    backlog = svc.backlog
    for spec in policy.metrics:
        given = trace.columns.get(spec.name)
        value = given[trace.index(t)] if given is not None else None
        kind = kinds[spec.name]
        if kind == "utilization":
            percent = value if value is not None else (
                100 * demand / (svc.ready * model.capacity) if svc.ready else 0.0)
            pods = [PodSample(request=100.0, usage=percent, name=f"r{i}") for i in range(svc.ready)]
            pods += [PodSample(request=100.0, usage=0.0, ready=False, name=f"s{i}") for i in range(len(svc.starting))]
            out[spec.name] = MetricSample(pods=tuple(pods))
            continue
        if value is None:
            if kind == "backlog":
                value = backlog
            elif kind == "age":
                value = svc.oldest_age(t)
            elif kind == "latency":
                value = model.latency(backlog, svc.ready)
            elif kind == "demand":
                value = demand
        out[spec.name] = MetricSample(value=value) if value is not None else MetricSample(error="not modelled")
    return out


def _prune(entries: deque[tuple[datetime, int]], cutoff: datetime) -> None:
    while entries and entries[0][0] <= cutoff:
        entries.popleft()


def replay(name: str, policy: ServicePolicy, trace: Trace, model: Model,
           floor: Callable[[float], int] | None = None) -> Run:
    """Replay ``trace`` through ``policy`` with ``model``; ``floor(t)`` (a forecast) may raise a
    decision's replicas, never lower them; it is remembered as the recommendation (as a forecast fed
    to the HPA as a metric is: Crane's EHPA), so the scale-down window holds it too."""
    if trace.duration > MAX_TRACE_SECONDS:
        raise SimulationError(f"the trace lasts {trace.duration:.0f} s: at most {MAX_TRACE_SECONDS} s (31 days)")
    kinds = check_modelled(policy, trace)
    start = trace.start or EPOCH
    first = model.start_replicas if model.start_replicas is not None else max(1, policy.minReplicas)
    svc = _Service(current=first, ready=first, starting=[], queue=deque())
    if model.backlog > 0:
        svc.queue.append([0.0, model.backlog])
        svc.backlog = model.backlog
    recs: deque[tuple[datetime, int]] = deque()
    events: deque[tuple[datetime, int]] = deque()
    keep = timedelta(seconds=max(policy.behavior.scaleUp.stabilizationWindowSeconds,
                                 policy.behavior.scaleDown.stabilizationWindowSeconds,
                                 *(p.periodSeconds for p in policy.behavior.scaleUp.policies),
                                 *(p.periodSeconds for p in policy.behavior.scaleDown.policies), 1))
    failures, last_active = 0, None
    total = math.ceil(trace.duration - EPSILON)
    # decisions at the first second at or after each multiple of ``sync``; each reads the metrics of
    # the second ``lag`` before it
    sync_ticks = sorted({math.ceil(k * model.sync - EPSILON) for k in range(int(total // model.sync) + 2)})
    read_at = {math.floor(tick - model.lag + EPSILON) for tick in sync_ticks}
    due = set(sync_ticks)
    samples: dict[int, dict[str, MetricSample]] = {}
    timeline: list[Point] = []
    seconds: list[Second] = []
    decisions: list[Decision] = []
    changes: list[tuple[float, int]] = []
    row, rows = 0, len(trace.times)
    for tick in range(total):
        t = float(tick)
        if svc.starting:
            svc.become_ready(t)
        while row + 1 < rows and trace.times[row + 1] <= t + EPSILON:
            row += 1
        demand = trace.demand[row]
        if tick in read_at:
            samples[tick] = _metrics(policy, kinds, trace, model, svc, t, demand)
        if tick in due:
            now = start + timedelta(seconds=t)
            seen = t - model.lag
            metrics = samples[math.floor(seen + EPSILON)] if seen >= -EPSILON else {
                spec.name: MetricSample(error="no sample yet (metric lag)") for spec in policy.metrics}
            _prune(recs, now - keep - timedelta(seconds=1))
            _prune(events, now - keep - timedelta(seconds=1))
            snap = Snapshot(now=now, current_replicas=svc.current, ready_replicas=svc.ready, metrics=metrics,
                            history=History(tuple(recs), tuple(events), failures, last_active))
            decision = decide(name, policy, snap, now)
            desired, recommendation = decision.desired_replicas, decision.recommendation
            if floor is not None:  # a forecast raises the decision, never lowers it (never scales in), and is
                predicted = min(floor(t), policy.maxReplicas)  # remembered like a metric's recommendation
                desired = max(desired, predicted)
                recommendation = None if recommendation is None else max(recommendation, predicted)
            if decision.seeded:
                recs.append((now, svc.current))
            if recommendation is not None:
                recs.append((now, recommendation))
            failures = decision.consecutive_failures
            if decision.active:
                last_active = now
            if desired != svc.current:
                events.append((now, desired - svc.current))
                changes.append((t, desired - svc.current))
                svc.scale_to(desired, t, model.startup)
            decisions.append(decision)
            timeline.append(Point(t, demand, svc.current, svc.ready, svc.backlog, decision.reason))
        backlog = svc.backlog
        seconds.append(Second(t, demand, svc.current, svc.ready, backlog, model.latency(backlog, svc.ready)))
        svc.flow(t, demand, model.capacity)
    return Run(tuple(timeline), tuple(seconds), tuple(decisions), tuple(changes))
