"""``opsctl scale simulate SERVICE``: replay a load trace through the autoscaling policy (thin: parse, run, print)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def moment(text: str, now: datetime) -> datetime:
    """``2026-11-20T09:00:00Z``, ``now`` or ``-6h`` (``s``, ``m``, ``h``, ``d`` before now)."""
    from core.errors import ConfigError
    from opsctl.simulate.trace import utc_time

    if text == "now":
        return now
    try:
        if text.startswith("-") and text[-1:] in _UNITS:
            try:
                return now - timedelta(seconds=float(text[1:-1]) * _UNITS[text[-1]])
            except ValueError:
                pass
        return utc_time(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a time: ISO 8601 (2026-11-20T09:00:00Z), now, "
                          "or -6h / -30m / -2d") from None
    except OverflowError:
        raise ConfigError(f"{text!r} is out of range: a time between the years 1 and 9999") from None


def _shape(text: str) -> tuple[str, dict[str, float]]:
    from core.errors import ConfigError
    from opsctl.simulate.model import SimulationError
    from opsctl.simulate.shapes import parse_params

    name, _, params = text.partition(":")
    try:
        return name, parse_params([p for p in params.split(",") if p])
    except SimulationError as exc:
        raise ConfigError(str(exc)) from exc


def _rows(outcome: Any) -> list[dict[str, Any]]:
    rows = []
    for r in outcome.shown:
        s = r.summary
        rows.append({"policy": r.name, "replica_minutes": f"{s.replica_minutes:.1f}",
                     "underprovisioned": f"{s.underprovisioned_seconds:g} s",
                     "slo_violation": "" if s.slo_violation_seconds is None else f"{s.slo_violation_seconds:g} s",
                     "max_backlog": f"{s.max_backlog:.6g}", "scale_events": s.scale_events, "flaps": s.flaps,
                     "time_to_capacity": f"{s.time_to_capacity_seconds:g} s"})
    return rows


def simulate(
    service: str = typer.Argument(..., help="service of the autoscaling policy"),
    policy: Path | None = typer.Option(None, "--policy", "-p", help="autoscaling policy file "
                                       "(default: <policy dir>/autoscaling.yaml; OPSCTL_POLICY_DIR)"),
    trace_file: Path | None = typer.Option(None, "--trace", help="CSV: time (seconds or ISO 8601), demand "
                                           "(work units/s), optional columns named like the policy's metrics"),
    shape: str | None = typer.Option(None, "--shape", help="what-if demand: step|ramp|spike|diurnal with "
                                     "NAME=NUMBER parameters, e.g. step:base=2,peak=40,at=60,duration=1800"),
    since: str | None = typer.Option(None, "--from", help="Prometheus history from (ISO 8601, now, -6h)"),
    until: str = typer.Option("now", "--to", help="Prometheus history to"),
    step: float = typer.Option(15.0, "--step", help="seconds between history samples"),
    demand_query: str | None = typer.Option(None, "--demand-query", help="PromQL of the demand (work units/s); "
                                            "default: reconstructed from the policy's backlog or Utilization"),
    replicas_query: str | None = typer.Option(None, "--replicas-query", help="PromQL of the ready replicas "
                                              "(default: the target's gauge)"),
    throughput_query: str | None = typer.Option(None, "--throughput-query", help="PromQL of the work served per "
                                                "second: measures --capacity from the history"),
    capacity: float | None = typer.Option(None, "--capacity", help="work units/s one ready replica serves "
                                          "(default: the calibration, OPSCTL_CAPACITY_FILE or "
                                          "<policy dir>/capacity.json)"),
    startup: float = typer.Option(0.0, "--startup", help="seconds from a scale-up to a ready replica"),
    sync: float = typer.Option(15.0, "--sync", help="seconds between decisions (the HPA's 15)"),
    lag: float = typer.Option(0.0, "--lag", help="seconds the metrics lag (scrape interval, query window)"),
    replicas: int | None = typer.Option(None, "--replicas", min=0, help="replicas at the start "
                                        "(default: minReplicas, at least 1)"),
    slo: float | None = typer.Option(None, "--slo", help="latency SLO in seconds (default: the policy's "
                                     "latency or waiting-time Value target)"),
    against: list[str] | None = typer.Option(None, "--against", help="compare with hpa-default or another "
                                             "policy FILE (repeatable)"),
    tune_: bool = typer.Option(False, "--tune", help="search target and behaviour for the cheapest policy "
                               "whose SLO violation is no worse; print the YAML diff"),
    forecast: bool = typer.Option(False, "--forecast", help="preview a seasonal predictive scale-up (needs a "
                                  "season of history; never scales in) and its MAPE"),
    season: float = typer.Option(86400.0, "--season", help="seconds of the forecast's season"),
    plot: Path | None = typer.Option(None, "--plot", help="write the chart to FILE.png, FILE.svg or FILE.html"),
    chart: bool = typer.Option(True, "--chart/--no-chart", help="draw the chart in the terminal (table output)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Replay a load trace through the policy's own decide(), tick by tick: cost, shortfall, SLO, flaps.

    Demand comes from --trace FILE, --shape, or the service's Prometheus history (--from/--to).
    Nothing is read from or done to the running system except Prometheus with --from. Exit 2 for a
    bad trace (file:line), policy or option.

    Example: opsctl scale simulate core-worker --capacity 40 --shape step:peak=600,duration=1800 --against hpa-default
    """
    from core.errors import ConfigError
    from opsctl.context import settings
    from opsctl.output import counted_progress
    from opsctl.policy import policy_dir
    from opsctl.simulate import chart as charts
    from opsctl.simulate.history import Window
    from opsctl.simulate.service import Request, run, tuned_diff

    if plot is not None:
        try:
            charts.check_format(plot.suffix)
        except charts.UnknownFormat as exc:
            raise ConfigError(f"--plot {plot}: {exc}") from exc
    from opsctl.commands.scale import _policy

    pol = _policy(policy)
    s = settings()
    window = None
    if since is not None:
        now = datetime.now(UTC)
        window = Window(moment(since, now), moment(until, now), step)
    shape_name, params = _shape(shape) if shape is not None else (None, {})
    req = Request(service=service, trace_file=trace_file, shape=shape_name, shape_params=params, window=window,
                  prometheus_url=pol.prometheus.url or s.prometheus_url, demand_query=demand_query,
                  replicas_query=replicas_query, throughput_query=throughput_query, capacity=capacity,
                  startup=startup, sync=sync, lag=lag, start_replicas=replicas, slo=slo,
                  against=tuple(against or ()), tune=tune_, forecast=forecast, season=season)
    with counted_progress() as bar:
        def progress(total: int) -> Callable[[], None]:
            task = bar.add_task("tuning", total=total)
            return lambda: bar.advance(task)

        outcome = run(pol, req, policy_dir(), progress)
    if plot is not None:
        plot.write_bytes(charts.render(plot.suffix, charts.timelines(outcome.shown), outcome.model.capacity, service))
        info(f"chart written to {plot}")
    if output is not Output.table:
        emit(outcome.as_dict(), output)
        return
    info(outcome.source)
    emit(_rows(outcome), output, columns=[
        ("policy", "POLICY"), ("replica_minutes", "REPLICA-MINUTES"), ("underprovisioned", "UNDER-PROVISIONED"),
        ("slo_violation", "SLO VIOLATION"), ("max_backlog", "MAX BACKLOG"), ("scale_events", "SCALE EVENTS"),
        ("flaps", "FLAPS"), ("time_to_capacity", "TIME TO CAPACITY")])
    if chart:
        typer.echo(charts.terminal(charts.timelines(outcome.results), outcome.model.capacity))
    if outcome.forecast is not None:
        mape = "n/a" if outcome.forecast.mape is None else f"{outcome.forecast.mape:g} %"
        typer.echo(f"forecast (season {outcome.forecast.season:g} s): MAPE {mape} over "
                   f"{outcome.forecast.points} points; preview only, never scales in")
    if outcome.tuned is not None:
        diff = tuned_diff(service, outcome.tuned)
        if diff:
            best, was = outcome.tuned.best.summary, outcome.tuned.current.summary
            typer.echo(f"tuned ({outcome.tuned.tried} policies tried): {best.replica_minutes:.1f} replica-minutes "
                       f"instead of {was.replica_minutes:.1f}, SLO violation no worse; under-provisioned "
                       f"{best.underprovisioned_seconds:g} s instead of {was.underprovisioned_seconds:g} s, "
                       f"max backlog {best.max_backlog:.6g} instead of {was.max_backlog:.6g}")
            typer.echo(diff, nl=False)
        else:
            typer.echo(f"tuned ({outcome.tuned.tried} policies tried): the current policy is the cheapest "
                       "with its SLO violation")

