"""``opsctl scale simulate``: read the trace (file, shape or Prometheus), replay, compare, tune, forecast.

The command parses its options into a :class:`Request` and prints what :func:`run` returns.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from opsctl.scaling.policy import AutoscalingPolicy, ServicePolicy
from opsctl.simulate import forecast as forecasting
from opsctl.simulate import shapes, trace
from opsctl.simulate.compare import HPA_DEFAULT, Result, compare, hpa_default
from opsctl.simulate.history import Window
from opsctl.simulate.model import Model, SimulationError, Trace, metric_kind
from opsctl.simulate.tune import Tuned, tune


@dataclass(frozen=True)
class Request:
    service: str
    trace_file: Path | None = None
    shape: str | None = None
    shape_params: dict[str, float] = field(default_factory=dict)
    window: Window | None = None
    prometheus_url: str | None = None
    demand_query: str | None = None
    replicas_query: str | None = None
    throughput_query: str | None = None
    capacity: float | None = None
    startup: float = 0.0
    sync: float = 15.0
    lag: float = 0.0
    start_replicas: int | None = None
    slo: float | None = None
    against: tuple[str, ...] = ()
    tune: bool = False
    forecast: bool = False
    season: float = forecasting.DAY


@dataclass(frozen=True)
class Outcome:
    service: str
    results: list[Result]
    model: Model
    source: str
    tuned: Tuned | None = None
    forecast: forecasting.Forecast | None = None
    predicted: Result | None = None

    @property
    def shown(self) -> list[Result]:
        """The results the table and the chart file show: each policy's, then the forecast's preview."""
        return [*self.results, *([self.predicted] if self.predicted is not None else [])]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": self.service, "policies": [r.as_dict() for r in self.results]}
        if self.forecast is not None and self.predicted is not None:
            out["forecast"] = {"season_seconds": self.forecast.season, "mape": self.forecast.mape,
                               "points": self.forecast.points, "never_scales_in": True,
                               **self.predicted.as_dict()}
        if self.tuned is not None:
            out["tuned"] = {"tried": self.tuned.tried, "improved": self.tuned.improved,
                            "summary": self.tuned.best.summary.as_dict(), "diff": tuned_diff(self.service, self.tuned)}
        return out


def policy_slo(policy: ServicePolicy) -> float | None:
    """The policy's latency bound: the smallest Value target of its latency or waiting-time metrics."""
    bounds = [m.target.amount for m in policy.metrics
              if m.target.type == "Value" and metric_kind(m) in ("latency", "age")]
    return min(bounds) if bounds else None


def _policy_file(path: Path, service: str) -> ServicePolicy:
    from opsctl.policy import load

    other = load(AutoscalingPolicy, "autoscaling", path)
    if service in other.services:
        return other.services[service]
    if len(other.services) == 1:
        return next(iter(other.services.values()))
    raise ConfigError(f"{path} has no policy for {service} (it has: {', '.join(other.services)})")


def _capacity(req: Request, policy: ServicePolicy, policy_dir: Path | None) -> tuple[float, str]:
    if req.capacity is not None:
        return req.capacity, "--capacity"
    if req.throughput_query is not None:
        if req.window is None or not req.prometheus_url:
            raise ConfigError("--throughput-query measures capacity from Prometheus history: give --from/--to")
        from opsctl.simulate.history import measure_capacity

        measured = measure_capacity(req.prometheus_url, policy, req.window, req.throughput_query,
                                    replicas_query=req.replicas_query)
        return measured, f"measured from {req.throughput_query} while work waited"
    if policy_dir is not None:
        from opsctl.simulate.capacity import calibrated

        found = calibrated(policy_dir, req.service)
        if found is not None:
            return found[0], f"the calibration's {found[1]}"
    raise ConfigError(f"no capacity for {req.service}: give --capacity (work units per second one ready replica "
                      "serves), or --throughput-query with --from/--to, or measure a calibration (make calibrate)")


def _one_source(req: Request) -> None:
    given = [x for x in (req.trace_file, req.shape, req.window) if x is not None]
    if len(given) != 1:
        raise ConfigError("give one of --trace FILE, --shape NAME or --from/--to (Prometheus history)")


def _trace(req: Request, policy: ServicePolicy, capacity: float) -> tuple[Trace, str]:
    if req.trace_file is not None:
        return trace.read(req.trace_file, [m.name for m in policy.metrics]), f"trace {req.trace_file}"
    if req.shape is not None:
        return shapes.make(req.shape, req.shape_params), f"shape {req.shape}"
    assert req.window is not None
    if not req.prometheus_url:
        raise ConfigError("no Prometheus: set prometheus.url in the policy or OPSCTL_PROMETHEUS_URL")
    from opsctl.simulate.history import read_trace

    return read_trace(req.prometheus_url, policy, req.window, capacity, demand_query=req.demand_query,
                      replicas_query=req.replicas_query)


def run(policy: AutoscalingPolicy, req: Request, policy_dir: Path | None = None,
        progress: Callable[[int], Callable[[], None]] | None = None) -> Outcome:
    """Simulate ``req``; ``progress(total)`` returns the callback the tuner ticks."""
    svc = policy.select([req.service])[req.service]
    _one_source(req)
    try:
        capacity, where = _capacity(req, svc, policy_dir)
        tr, source = _trace(req, svc, capacity)
        model = Model(capacity=capacity, startup=req.startup, sync=req.sync, lag=req.lag,
                      start_replicas=req.start_replicas, slo=req.slo if req.slo is not None else policy_slo(svc))
        policies = [("policy", svc)]
        for other in req.against:
            policies.append((HPA_DEFAULT, hpa_default(svc)) if other == HPA_DEFAULT
                            else (other, _policy_file(Path(other), req.service)))
        results = compare(req.service, policies, tr, model)
        fc = predicted = None
        if req.forecast:
            fc = forecasting.evaluate(tr, req.season)
            from opsctl.simulate.model import replay
            from opsctl.simulate.summary import summarize

            floor = forecasting.floor(tr, svc, capacity, req.startup + req.sync, req.season)
            run_ = replay(req.service, svc, tr, model, floor)
            predicted = Result("policy+forecast", svc, run_,
                               summarize(run_, model, svc.behavior.scaleDown.stabilizationWindowSeconds))
        tuned = None
        if req.tune:
            from opsctl.simulate.tune import count

            tick = progress(count(svc)) if progress is not None else None
            tuned = tune(req.service, svc, tr, model, tick)
    except SimulationError as exc:
        raise ConfigError(str(exc)) from exc
    return Outcome(req.service, results, model, f"{source}; capacity {capacity:g}/s per replica ({where})",
                   tuned, fc, predicted)


def tuned_diff(service: str, tuned: Tuned) -> str:
    """The tuned policy as a unified diff of the service's YAML (empty when nothing cheaper was found)."""
    import yaml

    if not tuned.improved:
        return ""

    def text(p: ServicePolicy) -> list[str]:
        dumped = yaml.safe_dump({"services": {service: p.model_dump(mode="json", exclude_none=True)}},
                                sort_keys=False)
        return dumped.splitlines(keepends=True)

    return "".join(difflib.unified_diff(text(tuned.current.policy), text(tuned.best.policy),
                                        "autoscaling.yaml (current)", "autoscaling.yaml (tuned)"))
