"""The simulator's pure parts, by tables: the model through the daemon's own decide(), the summary,
the comparison with HPA defaults, the tuner, the forecast, demand reconstruction, shapes, charts."""

from __future__ import annotations

import math
from typing import Any

import pytest

from opsctl.scaling.policy import ServicePolicy
from opsctl.simulate import chart, forecast, reconstruct, shapes
from opsctl.simulate.compare import HPA_DEFAULT, compare, hpa_default, simulate
from opsctl.simulate.model import Model, SimulationError, Trace, Unmodelled, metric_kind, replay
from opsctl.simulate.summary import flaps
from opsctl.simulate.tune import candidates, count, tune, violation


def policy(metrics: list[dict[str, Any]] | None = None, **fields: Any) -> ServicePolicy:
    data: dict[str, Any] = {"target": {"kind": "local"}, "minReplicas": 1, "maxReplicas": 50,
                            "metrics": metrics or [BACKLOG], **fields}
    return ServicePolicy.model_validate(data)


BACKLOG = {"name": "backlog", "query": "max(core_ingest_queue_depth)", "target": {"type": "AverageValue",
                                                                                  "averageValue": 100}}
CPU = {"name": "cpu", "usageQuery": "u", "requestQuery": "r", "target": {"type": "Utilization",
                                                                          "averageUtilization": 50}}


def flat(demand: float, seconds: float) -> Trace:
    return Trace((0.0,), (demand,), seconds)


# --- the model through decide() ------------------------------------------------------------------


@pytest.mark.parametrize("metric, trace", [
    (CPU, flat(10.0, 60)),  # 10/s needs 20 replicas at 50 % of 1/s each
    (BACKLOG, Trace((0.0,), (0.0,), 60.0, {"backlog": (2000.0,)})),  # a backlog of 2000 at 100 per replica
])
def test_a_step_through_hpa_defaults_from_one_replica_gives_5_10_20(metric: dict[str, Any], trace: Trace) -> None:
    pol = hpa_default(policy([metric]))
    run = replay("w", pol, trace, Model(capacity=1.0, start_replicas=1))
    assert [p.desired_replicas for p in run.timeline[:4]] == [5, 10, 20, 20]
    assert [p.ready_replicas for p in run.timeline[:3]] == [5, 10, 20]  # instant readiness
    assert "limited by scaleUp Pods policy 4/15s" in run.timeline[0].reason
    assert "scaleUp Percent policy 100%/15s" in run.timeline[1].reason


@pytest.mark.parametrize("ready, capacity, backlog, expected", [
    (2, 10.0, 1000.0, [1000.0, 700.0, 400.0, 100.0, 0.0]),
    (1, 3.5, 200.0, [200.0, 147.5, 95.0, 42.5, 0.0]),
    (4, 0.5, 100.0, [100.0, 70.0, 40.0, 10.0, 0.0]),
])
def test_a_queue_drains_at_exactly_ready_times_capacity(ready: int, capacity: float, backlog: float,
                                                         expected: list[float]) -> None:
    pinned = policy(minReplicas=ready, maxReplicas=ready)
    run = replay("w", pinned, flat(0.0, 75), Model(capacity=capacity, backlog=backlog))
    assert [p.backlog for p in run.timeline] == pytest.approx(expected)
    assert {p.ready_replicas for p in run.timeline} == {ready}


def test_arrivals_above_capacity_build_the_backlog_by_the_difference() -> None:
    pinned = policy(minReplicas=2, maxReplicas=2)
    run = replay("w", pinned, flat(25.0, 45), Model(capacity=10.0))
    assert [p.backlog for p in run.timeline] == pytest.approx([0.0, 75.0, 150.0])  # (25 - 20) per second


def test_startup_delays_readiness_and_replicas_starting_are_paid() -> None:
    pol = hpa_default(policy([CPU]))
    run = replay("w", pol, flat(10.0, 60), Model(capacity=1.0, startup=20.0))
    first, second, third = run.timeline[:3]
    assert (first.desired_replicas, first.ready_replicas) == (5, 1)
    # at 15 s the 4 new replicas are still starting: the HPA counts them at 0 % (1000 % / 5 pods → 10)
    assert (second.desired_replicas, second.ready_replicas) == (10, 1)
    # at 30 s 5 are ready (200 % each) and 5 starting (0 %): 100 % of 10 → 20, within 10 + 100 %
    assert (third.desired_replicas, third.ready_replicas) == (20, 5)
    assert run.seconds[19].ready == 1 and run.seconds[20].ready == 5
    assert run.seconds[0].current == 5


def test_metric_lag_shows_decisions_the_past() -> None:
    pol = hpa_default(policy([CPU]))
    run = replay("w", pol, Trace((0.0, 30.0), (1.0, 10.0), 45.0), Model(capacity=1.0, lag=20.0))
    # t=0 and t=15: no sample yet → fallback hold; t=30 sees t=10 (demand 1, 100 % of 1 replica → 2);
    # t=45 sees t=25 (1/s on 2 replicas: 50 %, keep); t=60 sees t=40 (10/s: 500 % → 20, limited to 2 + 4)
    assert [p.desired_replicas for p in run.timeline] == [1, 1, 2, 2, 6]
    assert "no sample yet" in run.timeline[0].reason


@pytest.mark.parametrize("sync, lag, times", [
    (15.0, 0.0, [0, 15, 30, 45]),
    (10.5, 0.0, [0, 11, 21, 32, 42, 53]),  # the first second at or after each multiple
    (20.0, 7.5, [0, 20, 40]),
])
def test_decisions_come_at_each_sync_and_read_the_second_lag_before(sync: float, lag: float,
                                                                      times: list[int]) -> None:
    run = replay("w", policy([CPU]), flat(1.0, 60), Model(capacity=1.0, sync=sync, lag=lag))
    assert [p.t for p in run.timeline] == times
    assert ("no sample yet" in run.timeline[0].reason) == (lag > 0)


def test_scale_down_removes_starting_replicas_first() -> None:
    pol = policy([CPU], behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    # 40/s needs 80 at 50 %: capped at 50; then demand drops to nothing
    run = replay("w", pol, Trace((0.0, 15.0), (40.0, 0.1), 15.0), Model(capacity=1.0, startup=100.0))
    assert (run.timeline[0].desired_replicas, run.timeline[0].ready_replicas) == (5, 1)
    assert (run.timeline[1].desired_replicas, run.timeline[1].ready_replicas) == (1, 1)


def test_trace_columns_override_the_model() -> None:
    pol = hpa_default(policy([BACKLOG]))
    tr = Trace((0.0, 15.0), (0.0, 0.0), 15.0, {"backlog": (None, 900.0)})
    run = replay("w", pol, tr, Model(capacity=1.0))
    assert [p.desired_replicas for p in run.timeline] == [1, 5]  # 900 / 100 = 9, limited to 5


@pytest.mark.parametrize("metric, kind", [
    (BACKLOG, "backlog"),
    (CPU, "utilization"),
    ({"name": "oldest-pending", "query": "max(core_ingest_oldest_pending_seconds)",
      "target": {"type": "Value", "value": 600}}, "age"),
    ({"name": "p95-latency", "query": "histogram_quantile(0.95, ...)", "target": {"type": "Value", "value": 2}},
     "latency"),
    ({"name": "requests-per-replica", "query": "sum(rate(core_http_request_duration_seconds_count[2m]))",
      "target": {"type": "AverageValue", "averageValue": 50}}, "demand"),
    ({"name": "error-rate", "query": "sum(rate(x{status=~\"5..\"}[2m]))", "target": {"type": "Value", "value": 0.01}},
     None),
])
def test_metric_kinds(metric: dict[str, Any], kind: str | None) -> None:
    assert metric_kind(policy([metric]).metrics[0]) == kind


def test_an_unmodelled_metric_is_refused_unless_the_trace_gives_it() -> None:
    errors = {"name": "error-rate", "query": "errors", "target": {"type": "Value", "value": 0.01}}
    pol = policy([BACKLOG, errors])
    with pytest.raises(Unmodelled, match="error-rate"):
        replay("w", pol, flat(1.0, 30), Model(capacity=1.0))
    given = Trace((0.0,), (1.0,), 30.0, {"error-rate": (0.0,)})
    assert replay("w", pol, given, Model(capacity=1.0)).timeline


@pytest.mark.parametrize("fields, reason", [
    ({"capacity": 0}, "capacity"), ({"capacity": 1, "sync": 0.5}, "sync"),
    ({"capacity": 1, "startup": -1}, "startup"), ({"capacity": 1, "slo": 0}, "slo"),
    ({"capacity": math.nan}, "capacity"),
])
def test_a_model_refuses_impossible_numbers(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(SimulationError, match=reason):
        Model(**fields)


# --- the summary -----------------------------------------------------------------------------------


def test_summary_of_a_step() -> None:
    result = simulate("w", "policy", hpa_default(policy([CPU])), flat(10.0, 60), Model(capacity=1.0, slo=5.0))
    s = result.summary
    # 5 replicas for 15 s, 10 for 15 s, 20 for 30 s
    assert s.replica_minutes == pytest.approx((5 * 15 + 10 * 15 + 20 * 30) / 60)
    assert s.underprovisioned_seconds == 15  # 5 ready serve 5 of the 10/s for the first sync only
    assert s.time_to_capacity_seconds == 15
    assert s.max_backlog == pytest.approx(75.0)  # 5/s short for 15 s, then 10 ready serve it
    assert s.scale_events == 3 and s.flaps == 0
    assert s.slo_violation_seconds is not None and s.slo_violation_seconds > 0


@pytest.mark.parametrize("events, window, expected", [
    ([], 300, 0),
    ([(0, 3), (15, 2)], 300, 0),
    ([(0, 3), (100, -2)], 300, 1),
    ([(0, 3), (400, -2)], 300, 0),
    ([(0, 3), (100, -2), (150, 4), (900, -1)], 300, 2),
])
def test_flaps_are_direction_changes_within_the_window(events: list[tuple[float, int]], window: float,
                                                        expected: int) -> None:
    assert flaps(events, window) == expected


# --- compare ---------------------------------------------------------------------------------------


def test_hpa_default_keeps_what_the_user_gives_and_defaults_the_rest() -> None:
    own = policy([{**BACKLOG, "tolerance": {"scaleUp": 0, "scaleDown": 0.5}}], tolerance=0.3, minReplicas=2,
                 behavior={"scaleDown": {"stabilizationWindowSeconds": 30,
                                         "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    hpa = hpa_default(own)
    assert (hpa.minReplicas, hpa.maxReplicas, hpa.metrics[0].target) == (2, 50, own.metrics[0].target)
    assert hpa.metrics[0].tolerance is None and (hpa.tolerance.scaleUp, hpa.tolerance.scaleDown) == (0.1, 0.1)
    assert hpa.behavior.scaleDown.stabilizationWindowSeconds == 300
    assert [(p.type, p.value, p.periodSeconds) for p in hpa.behavior.scaleDown.policies] == [("Percent", 100, 15)]
    assert [(p.type, p.value) for p in hpa.behavior.scaleUp.policies] == [("Pods", 4), ("Percent", 100)]


def test_compare_a_slow_scale_down_with_hpa_defaults_on_a_spike() -> None:
    own = policy([CPU], behavior={"scaleDown": {"stabilizationWindowSeconds": 600,
                                                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    spike = shapes.make("spike", {"base": 1, "peak": 10, "at": 60, "width": 120, "duration": 1800})
    mine, hpa = compare("w", [("policy", own), (HPA_DEFAULT, hpa_default(own))], spike, Model(capacity=1.0))
    assert (mine.name, hpa.name) == ("policy", HPA_DEFAULT)
    assert mine.summary.underprovisioned_seconds == hpa.summary.underprovisioned_seconds  # same scale-up
    assert hpa.summary.replica_minutes < mine.summary.replica_minutes  # 300 s window, 100 %/15 s down
    at = {p.t: p.desired_replicas for p in mine.run.timeline}, {p.t: p.desired_replicas for p in hpa.run.timeline}
    assert at[0][300.0] == at[1][300.0] == 20  # both hold the peak through their windows
    assert at[0][600.0] > at[1][600.0] == 2  # the HPA's 300 s window is over, the policy's 600 s one is not
    assert set(mine.as_dict()) == {"name", "timeline", "summary"}
    assert set(mine.as_dict()["timeline"][0]) == {"t", "demand", "desired_replicas", "ready_replicas", "backlog"}


# --- the tuner -------------------------------------------------------------------------------------


def test_candidates_start_with_the_current_policy_and_cover_the_grid() -> None:
    own = policy([CPU])
    grid = list(candidates(own))
    assert grid[0] == own
    assert len(grid) == count(own) == 6 * 5 * 2
    assert {c.metrics[0].target.averageUtilization for c in grid} == {25, 38, 50, 62, 75, 100}
    assert {c.behavior.scaleDown.stabilizationWindowSeconds for c in grid} == {0, 60, 120, 300, 600}


def test_the_tuner_finds_a_cheaper_policy_with_no_worse_slo() -> None:
    wasteful = policy([CPU], behavior={"scaleDown": {"stabilizationWindowSeconds": 600}})
    trace = shapes.make("spike", {"base": 2, "peak": 10, "at": 60, "width": 300, "duration": 1800})
    model = Model(capacity=1.0, startup=10.0, slo=30.0)
    ticks: list[int] = []
    tuned = tune("w", wasteful, trace, model, lambda: ticks.append(1))
    assert len(ticks) == tuned.tried == count(wasteful)
    assert tuned.improved
    assert tuned.best.summary.replica_minutes < tuned.current.summary.replica_minutes
    assert violation(tuned.best.summary) <= violation(tuned.current.summary)
    assert tuned.best.policy != wasteful


def test_the_tuner_keeps_a_policy_nothing_beats() -> None:
    # one replica is all the demand needs and min is 1: nothing can be cheaper
    own = policy([CPU], maxReplicas=1)
    tuned = tune("w", own, flat(0.1, 600), Model(capacity=1.0, slo=30.0))
    assert not tuned.improved and tuned.best.policy == own


# --- forecast ----------------------------------------------------------------------------------------


def test_a_seasonal_forecast_of_a_repeating_day_has_no_error() -> None:
    two_days = shapes.make("diurnal", {"base": 1, "peak": 20, "period": 86400, "duration": 2 * 86400, "step": 300})
    fc = forecast.evaluate(two_days)
    assert fc.mape == 0.0 and fc.points == 288
    assert forecast.predict(two_days, 86400, 86400 + 600) == two_days.demand_at(600)
    assert forecast.predict(two_days, 86400, 600) is None


def test_the_forecast_needs_a_season_of_history() -> None:
    with pytest.raises(SimulationError, match="at least one season"):
        forecast.evaluate(flat(1.0, 3600))


def test_a_forecast_raises_decisions_and_never_lowers_them() -> None:
    pol = hpa_default(policy([CPU]))
    model = Model(capacity=1.0)
    trace = flat(1.0, 120)
    plain = replay("w", pol, trace, model)
    assert replay("w", pol, trace, model, floor=lambda t: 0).timeline == plain.timeline
    raised = replay("w", pol, trace, model, floor=lambda t: 8 if t < 30 else 0)
    assert [p.desired_replicas for p in raised.timeline[:3]] == [8, 8, 8]  # then stabilization holds it
    assert all(p.desired_replicas >= q.desired_replicas for p, q in zip(raised.timeline, plain.timeline, strict=True))


def test_a_predictive_preview_shortens_the_shortfall_of_a_repeating_day() -> None:
    pol = policy([CPU])
    # two "days" of an hour each (the season): 30/s for the middle 20 minutes, 1/s otherwise
    times = tuple(60.0 * i for i in range(2 * 60))
    days = Trace(times, tuple(30.0 if 1200 <= t % 3600 < 2400 else 1.0 for t in times), 60.0)
    model = Model(capacity=1.0, startup=300.0)
    reactive = simulate("w", "policy", pol, days, model).summary
    floor = forecast.floor(days, pol, 1.0, lead=model.startup + model.sync, season=3600)
    from opsctl.simulate.summary import summarize

    predicted = summarize(replay("w", pol, days, model, floor), model, 300)
    assert predicted.underprovisioned_seconds < reactive.underprovisioned_seconds


# --- reconstruction ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backlog, ready, capacity, step, demand", [
    # 30/s against 2 x 10/s for 60 s, then nothing: the queue grows by 10/s, then drains at 20/s
    ([0, 150, 300, 450, 600, 300, 0, 0], [2] * 8, 10.0, 15.0, [30, 30, 30, 30, 0, 0, 0, 0]),
    ([0, 0, 0], [1, 1, 1], 5.0, 15.0, [0, 0, 0]),  # an empty queue: the smallest demand that keeps it empty
])
def test_demand_from_a_backlog(backlog: list[float], ready: list[float], capacity: float, step: float,
                               demand: list[float]) -> None:
    assert reconstruct.from_backlog(backlog, ready, capacity, step) == pytest.approx(demand)


def test_reconstructed_demand_replays_to_the_recorded_backlog() -> None:
    recorded = [0, 150, 300, 450, 600, 300, 0, 0]
    demand = reconstruct.from_backlog(recorded, [2] * 8, 10.0, 15.0)
    trace = Trace(tuple(15.0 * i for i in range(8)), tuple(demand), 15.0)
    run = replay("w", policy(minReplicas=2, maxReplicas=2), trace, Model(capacity=10.0))
    assert [p.backlog for p in run.timeline] == pytest.approx(recorded)


def test_demand_from_utilization_and_capacity_from_saturated_history() -> None:
    assert reconstruct.from_utilization([50, 100, 150], [2, 2, 4], 10.0) == [10.0, 20.0, 60.0]
    assert reconstruct.capacity_from([20, 30, 45, 5], [10, 50, 80, 0], [2, 3, 3, 1]) == 10.0
    with pytest.raises(SimulationError, match="--capacity"):
        reconstruct.capacity_from([5, 5], [0, 0], [1, 1])


# --- shapes and charts ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, params, expected", [
    ("step", {"base": 1, "peak": 5, "at": 30, "duration": 60}, [1, 1, 5, 5]),
    ("ramp", {"base": 0, "peak": 4, "at": 15, "rise": 30, "duration": 75}, [0, 0, 2, 4, 4]),
    ("spike", {"base": 1, "peak": 9, "at": 15, "width": 15, "duration": 60}, [1, 9, 1, 1]),
    ("diurnal", {"base": 0, "peak": 10, "period": 60, "duration": 60}, [0, 5, 10, 5]),
])
def test_shapes(shape: str, params: dict[str, float], expected: list[float]) -> None:
    made = shapes.make(shape, params)
    assert made.times == (0, 15, 30, 45, 60, 75)[:len(expected)]
    assert list(made.demand) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("shape, params, message", [
    ("wave", {"peak": 1, "duration": 60}, "unknown shape"),
    ("step", {"duration": 60}, "needs peak"),
    ("step", {"peak": 1, "duration": 60, "width": 5}, "not width"),
    ("spike", {"peak": -1, "duration": 60}, ">= 0"),
])
def test_bad_shapes(shape: str, params: dict[str, float], message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        shapes.make(shape, params)


def test_charts_draw_every_policy_and_the_demand() -> None:
    own = policy([CPU])
    results = compare("w", [("policy", own), (HPA_DEFAULT, hpa_default(own))],
                      shapes.make("step", {"base": 1, "peak": 10, "at": 60, "duration": 600}), Model(capacity=1.0))
    drawn = chart.timelines(results)
    text = chart.terminal(drawn, 1.0, width=40, height=8)
    assert "P policy" in text and "H hpa-default" in text and "." in text
    lines = text.splitlines()
    assert lines[0].startswith("20 │") and any(line.startswith(" 0 │") for line in lines)
    svg = chart.svg(drawn, 1.0, "core-worker")
    assert svg.count("<title>") == 1 + 2 * 2 and "<title>hpa-default: ready replicas</title>" in svg
    page = chart.html_page(drawn, 1.0, "core-worker")
    assert page.startswith("<!doctype html>") and "<svg" in page and "replica_minutes" in page


# --- where history's demand comes from -------------------------------------------------------------


@pytest.mark.parametrize("metrics, demand_query, expected", [
    ([], "sum(rate(arrivals[1m]))", ("demand", "sum(rate(arrivals[1m]))")),
    ([{"name": "backlog", "query": "max(depth)", "target": {"type": "AverageValue", "averageValue": 10}},
      {"name": "cpu", "usageQuery": "u", "requestQuery": "r", "target": {"type": "Utilization",
                                                                     "averageUtilization": 70}}],
     None, ("backlog", "max(depth)")),
    ([{"name": "cpu", "usageQuery": "u", "requestQuery": "r", "target": {"type": "Utilization",
                                                                     "averageUtilization": 70}}],
     None, ("utilization", "100 * sum(u) / sum(r)")),
])
def test_history_demand_source(metrics: list[dict[str, Any]], demand_query: str | None,
                               expected: tuple[str, str]) -> None:
    from opsctl.simulate.history import demand_source

    assert demand_source(policy(metrics or None), demand_query) == expected


def test_history_without_a_demand_source_is_refused_before_prometheus_is_asked() -> None:
    from datetime import UTC, datetime, timedelta

    from core.errors import ConfigError
    from opsctl.simulate.history import Window, read_trace

    errors = policy([{"name": "errors", "query": "sum(rate(http_5xx[1m]))", "target": {"type": "Value", "value": 1}}])
    start = datetime(2026, 11, 20, tzinfo=UTC)
    with pytest.raises(ConfigError, match="give --demand-query"):  # not 'cannot reach' the closed port
        read_trace("http://127.0.0.1:9", errors, Window(start, start + timedelta(minutes=5), 15.0), 1.0)
