"""A trace from Prometheus history: range queries (``GET /api/v1/query_range``) over ``--from/--to/--step``.

Reads the ready replicas (``replicas_query``) and the demand: ``demand_query`` when given, else
reconstructed (:mod:`opsctl.simulate.reconstruct`) from the policy's backlog metric, else from its
Utilization metric. Each query must answer one series with a value at every step: a step without
one is a gap in the history, refused like a gap in a trace file. Prometheus unreachable or
refusing a query is an OperationFailed (exit 1); a query answering several series, or none, is a
ConfigError (exit 2: the query needs aggregating).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.errors import ConfigError, OperationFailed
from opsctl.scaling.policy import ServicePolicy
from opsctl.scaling.snapshot import iso
from opsctl.simulate import reconstruct
from opsctl.simulate.model import MAX_TRACE_SECONDS, Trace, metric_kind

MAX_POINTS = 11_000  # Prometheus' own limit on the points of one series in a range query


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    step: float

    def __post_init__(self) -> None:
        if not self.step >= 1:
            raise ConfigError(f"--step must be at least 1 second, got {self.step:g}")
        if self.end <= self.start:
            raise ConfigError(f"--to ({iso(self.end)}) must be after --from ({iso(self.start)})")
        span = (self.end - self.start).total_seconds()
        if span > MAX_TRACE_SECONDS:
            raise ConfigError(f"--from..--to spans {span:.0f} s: at most {MAX_TRACE_SECONDS} s (31 days)")
        if span / self.step + 1 > MAX_POINTS:
            raise ConfigError(f"--from..--to at --step {self.step:g} is {span / self.step + 1:.0f} points: "
                              f"Prometheus answers at most {MAX_POINTS}; raise --step")

    @property
    def count(self) -> int:
        return int((self.end - self.start).total_seconds() // self.step) + 1

    def times(self) -> list[float]:
        return [i * self.step for i in range(self.count)]


def query_range(url: str, query: str, window: Window, timeout: float = 30.0) -> list[float]:
    """The query's one series, one value per step of ``window``."""
    import httpx

    params = {"query": query, "start": iso(window.start), "end": iso(window.start + timedelta(
        seconds=(window.count - 1) * window.step)), "step": f"{window.step:g}s"}
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/query_range", params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise OperationFailed(f"prometheus: cannot reach {url}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        raise OperationFailed(f"prometheus: HTTP {response.status_code}, not a JSON answer") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise ConfigError(f"prometheus refused {query!r}: {body.get('error') or response.status_code}")
    series = body["data"]["result"]
    if len(series) != 1:
        raise ConfigError(f"{query!r} answered {len(series)} series between {params['start']} and {params['end']}: "
                          "it must answer exactly one (aggregate it, e.g. sum(...))")
    values: dict[int, float] = {}
    for at, text in series[0]["values"]:
        index = round((float(at) - window.start.timestamp()) / window.step)
        value = float(text)
        if math.isfinite(value):
            values[index] = value
    missing = [i for i in range(window.count) if i not in values]
    if missing:
        at = window.start + timedelta(seconds=missing[0] * window.step)
        raise ConfigError(f"{query!r} has no value at {iso(at)} ({len(missing)} of {window.count} steps "
                          "missing): a gap in the history; choose --from/--to where it was recorded")
    return [values[i] for i in range(window.count)]


def default_replicas_query(policy: ServicePolicy) -> str:
    """Ready replicas of the target: the local pool's gauge, or kube-state-metrics' for a workload."""
    t = policy.target
    if t.kind == "local":
        return 'max(core_workers{state="running"})'
    kind = "deployment" if t.kind == "Deployment" else "statefulset"
    return f'max(kube_{kind}_status_replicas_ready{{namespace="{t.namespace}", {kind}="{t.name}"}})'


def demand_source(policy: ServicePolicy, demand_query: str | None) -> tuple[str, str]:
    """(``demand``, ``backlog`` or ``utilization``; the query to read): where the history's demand comes
    from, decided before anything is read. ConfigError when the policy gives nothing to reconstruct from."""
    if demand_query is not None:
        return "demand", demand_query
    backlog = next((m for m in policy.metrics if metric_kind(m) == "backlog" and m.query), None)
    if backlog is not None and backlog.query is not None:
        return "backlog", backlog.query
    util = next((m for m in policy.metrics if metric_kind(m) == "utilization"), None)
    if util is not None:
        return "utilization", f"100 * sum({util.usageQuery}) / sum({util.requestQuery})"
    raise ConfigError("the policy has no backlog or Utilization metric to reconstruct demand from: "
                      "give --demand-query (work units per second, e.g. the rate of an arrivals counter)")


def read_trace(url: str, policy: ServicePolicy, window: Window, capacity: float, *,
               demand_query: str | None = None, replicas_query: str | None = None,
               timeout: float = 30.0) -> tuple[Trace, str]:
    """The trace of ``window`` and one sentence saying how its demand was found."""
    kind, query = demand_source(policy, demand_query)
    series = query_range(url, query, window, timeout)
    if kind == "demand":
        demand, how = series, f"demand = {query}"
    else:
        ready_query = replicas_query or default_replicas_query(policy)
        ready = query_range(url, ready_query, window, timeout)
        if kind == "backlog":
            demand = reconstruct.from_backlog(series, ready, capacity, window.step)
            how = (f"demand reconstructed from the backlog ({query}) and the ready replicas "
                   f"({ready_query}) at {capacity:g}/s per replica")
        else:
            demand = reconstruct.from_utilization(series, ready, capacity)
            how = f"demand reconstructed from utilization ({query}) * ready replicas ({ready_query}) * {capacity:g}/s"
    return Trace(tuple(window.times()), tuple(max(0.0, d) for d in demand), window.step, {}, window.start), how


def measure_capacity(url: str, policy: ServicePolicy, window: Window, throughput_query: str, *,
                     replicas_query: str | None = None, timeout: float = 30.0) -> float:
    """One replica's capacity from history: ``throughput / ready`` while work waited."""
    backlog = next((m for m in policy.metrics if metric_kind(m) == "backlog" and m.query), None)
    if backlog is None or backlog.query is None:
        raise ConfigError("measuring capacity needs the policy's backlog metric (to know when replicas were saturated)")
    ready = query_range(url, replicas_query or default_replicas_query(policy), window, timeout)
    return reconstruct.capacity_from(query_range(url, throughput_query, window, timeout),
                                     query_range(url, backlog.query, window, timeout), ready)
