"""The scaling engine: tables of policy + snapshot → decision, with the HPA's and KEDA's math."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsctl.scaling.engine import decide, decide_all, metric_proposal, rate_limit, stabilize
from opsctl.scaling.policy import MAX_REPLICAS, AutoscalingPolicy, MetricSpec, ScalingRules, ServicePolicy, Tolerance
from opsctl.scaling.snapshot import MetricSample, PodSample, parse

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def service(metrics: list[dict[str, Any]] | None = None, **fields: Any) -> ServicePolicy:
    data: dict[str, Any] = {"target": {"kind": "local"}, "minReplicas": 1, "maxReplicas": 20,
                            "metrics": metrics or [backlog()]}
    data.update(fields)
    return ServicePolicy.model_validate(data)


def backlog(target: float = 100) -> dict[str, Any]:
    return {"name": "backlog", "query": "sum(q)", "target": {"type": "AverageValue", "averageValue": target}}


def value_metric(name: str, target: float) -> dict[str, Any]:
    return {"name": name, "query": f"{name}_q", "target": {"type": "Value", "value": target}}


def cpu(target: int = 50) -> dict[str, Any]:
    return {"name": "cpu", "usageQuery": "u", "requestQuery": "r",
            "target": {"type": "Utilization", "averageUtilization": target}}


def snapshot(current: int, metrics: dict[str, Any], ready: int | None = None, **history: Any) -> Any:
    data: dict[str, Any] = {"now": ago(0), "current_replicas": current, "metrics": metrics, "history": history}
    if ready is not None:
        data["ready_replicas"] = ready
    return parse(data)


def run(policy: ServicePolicy, snap: Any) -> Any:
    return decide("svc", policy, snap, NOW)


# --- the replica calculator, metric by metric ------------------------------------------------------

def pods(levels: list[int | None], requests: int | list[int] = 1000, ready: list[bool] | None = None,
         phase: list[str] | None = None, deleting: list[bool] | None = None, count: int | None = None) -> MetricSample:
    n = count or len(levels)
    reqs = requests if isinstance(requests, list) else [requests] * n
    return MetricSample(pods=tuple(
        PodSample(request=reqs[i], usage=levels[i] if i < len(levels) else None,
                  ready=ready[i] if ready else True, phase=phase[i] if phase else "Running",
                  deleting=deleting[i] if deleting else False)
        for i in range(n)))


# Cases from Kubernetes' pkg/controller/podautoscaler/replica_calculator_test.go (name, current,
# sample, target utilization, expected replicas, expected utilization): CPU levels in millicores,
# requests of 1.0 CPU unless given.
F, T = False, True
UTILIZATION_CASES = [
    ("ScaleUp", 3, pods([300, 500, 700]), 30, 5, 50),
    ("ScaleUpUnreadyLessScale", 3, pods([300, 500, 700], ready=[F, T, T]), 30, 4, 60),
    ("ScaleUpUnreadyNoScale", 3, pods([400, 500, 700], ready=[T, F, F]), 30, 3, 40),
    ("ScaleUpIgnoresFailedPods", 2, pods([500, 700], ready=[T, T, F, F],
                                         phase=["Running", "Running", "Failed", "Failed"], count=4), 30, 4, 60),
    ("ScaleUpIgnoresDeletionPods", 2, pods([500, 700], ready=[T, T, F, F], deleting=[F, F, T, T], count=4),
     30, 4, 60),
    ("ScaleDown", 5, pods([100, 300, 500, 250, 250]), 50, 3, 28),
    ("ScaleDownIncludeUnreadyPods", 5, pods([100, 300, 500, 250, 250], ready=[T, T, T, F, F]), 50, 2, 30),
    ("ScaleDownExcludeUnscheduledPods", 5, pods([100], ready=[T, F, F, F, F],
                                                phase=["Running"] + ["Pending"] * 4, count=5), 50, 1, 10),
    ("ScaleDownIgnoresFailedPods", 5, pods([100, 300, 500, 250, 250], ready=[T, T, T, T, T, F, F],
                                           phase=["Running"] * 5 + ["Failed"] * 2, count=7), 50, 3, 28),
    ("ScaleDownIgnoresDeletionPods", 5, pods([100, 300, 500, 250, 250], ready=[T, T, T, T, T, F, F],
                                             deleting=[F] * 5 + [T] * 2, count=7), 50, 3, 28),
    ("Tolerance", 3, pods([1010, 1030, 1020], requests=[900, 1000, 1100]), 100, 3, 102),
    ("MissingMetrics", 4, pods([400, 95], count=4), 100, 3, 24),
    ("MissingMetricsNoChangeEq", 2, pods([1000], count=2), 100, 2, 100),
    ("MissingMetricsNoChangeGt", 2, pods([1900], count=2), 100, 2, 190),
    ("MissingMetricsNoChangeLt", 2, pods([600], count=2), 100, 2, 60),
    ("MissingMetricsUnreadyChange", 3, pods([100, 450], ready=[F, T, T], count=3), 50, 3, 45),
    ("MissingMetricsUnreadyScaleUp", 3, pods([100, 2000], ready=[F, T, T], count=3), 50, 4, 200),
    ("MissingMetricsUnreadyScaleDown", 4, pods([100, 100, 100], ready=[F, T, T, T], count=4), 50, 3, 10),
    ("DuringRollingUpdateWithMaxSurge", 2, pods([100, 100], count=3), 50, 2, 10),
]


@pytest.mark.parametrize(("case", "current", "sample", "target", "expected", "utilization"), UTILIZATION_CASES,
                         ids=[c[0] for c in UTILIZATION_CASES])
def test_utilization_matches_the_kubernetes_replica_calculator(case: str, current: int, sample: MetricSample,
                                                               target: int, expected: int, utilization: int) -> None:
    result = metric_proposal(MetricSpec.model_validate(cpu(target)), sample, current, current, Tolerance())
    assert (result.proposal, result.value, result.error) == (expected, utilization, None)


# (name, type, value, target, current, ready, expected): object/external metrics of the same file
VALUE_CASES = [
    ("ScaleUpCMObject", "Value", 20000, 15000, 3, 3, 4),
    ("ScaleUpCMObjectIgnoresUnreadyPods", "Value", 50000, 10000, 3, 1, 5),
    ("ScaleUpCMExternalIgnoresUnreadyPods", "Value", 8600, 4400, 3, 1, 2),
    ("ScaleDownCMObject", "Value", 12000, 20000, 5, 5, 3),
    ("ScaleDownCMExternal", "Value", 8600, 14334, 5, 5, 3),
    ("ToleranceCMObject", "Value", 20666, 20000, 3, 3, 3),
    ("ToleranceCMExternal", "Value", 8600, 8888, 3, 3, 3),
    ("ScaleUpCMPerPodObject", "AverageValue", 20000, 5000, 3, 3, 4),
    ("ScaleUpPerPodCMExternal", "AverageValue", 8600, 2150, 3, 3, 4),
    ("ScaleDownPerPodCMObject", "AverageValue", 6000, 2000, 5, 5, 3),
    ("ScaleDownPerPodCMExternal", "AverageValue", 8600, 2867, 5, 5, 3),
    ("TolerancePerPodCMObject", "AverageValue", 20166, 5000, 4, 4, 4),
    ("TolerancePerPodCMExternal", "AverageValue", 8600, 2900, 3, 3, 3),
    # scale from zero: ceil(ratio), no tolerance
    ("FromZeroValue", "Value", 1.05, 1, 0, 0, 2),
    ("FromZeroAverageValue", "AverageValue", 250, 100, 0, 0, 3),
    ("AverageValueUsesTotalNotReady", "AverageValue", 900, 100, 3, 1, 9),
]


@pytest.mark.parametrize(("case", "kind", "value", "target", "current", "ready", "expected"), VALUE_CASES,
                         ids=[c[0] for c in VALUE_CASES])
def test_value_and_average_value_match_the_replica_calculator(case: str, kind: str, value: float, target: float,
                                                              current: int, ready: int, expected: int) -> None:
    field = "value" if kind == "Value" else "averageValue"
    spec = MetricSpec.model_validate({"name": "qps", "query": "q", "target": {"type": kind, field: target}})
    result = metric_proposal(spec, MetricSample(value=value), current, ready, Tolerance())
    assert (result.proposal, result.error) == (expected, None)


@pytest.mark.parametrize(("pod_list", "error"), [
    (pods([200], requests=[0]), "no resource request"),
    (pods([None, None]), "no metrics for the pods"),
    (pods([100], ready=[F]), "no metrics for the pods"),
    (MetricSample(pods=()), "no pods"),
    (MetricSample(error="prometheus: no data"), "prometheus: no data"),
    (MetricSample(value=3.0), "needs per-pod usage and request"),
])
def test_utilization_errors(pod_list: MetricSample, error: str) -> None:
    result = metric_proposal(MetricSpec.model_validate(cpu()), pod_list, 2, 2, Tolerance())
    assert result.proposal is None and result.error is not None and error in result.error


# --- per-direction tolerance (kubernetes#116984) ---------------------------------------------------

@pytest.mark.parametrize(("tolerance", "value", "expected"), [
    (0.1, 1090, 10),  # ratio 1.09 inside ±10 %
    (0.1, 1110, 12),  # ratio 1.11 outside: ceil(11.1)
    ({"scaleUp": 0.02}, 1030, 11),  # 3 % over a 2 % scale-up band: scale up
    ({"scaleUp": 0.02}, 920, 10),  # scaleDown omitted → 0.1: 8 % under stays
    ({"scaleUp": 0.02, "scaleDown": 0.05}, 940, 10),  # 6 % under a 5 % band, but ceil(9.4) = 10
    ({"scaleUp": 0.02, "scaleDown": 0.05}, 890, 9),
    ({"scaleUp": 0.0, "scaleDown": 0.5}, 1001, 11),  # any increase scales up
    ({"scaleUp": 0.0, "scaleDown": 0.5}, 510, 10),  # down only below half
    ({"scaleUp": 0.0, "scaleDown": 0.5}, 490, 5),
])
def test_per_direction_tolerance(tolerance: Any, value: float, expected: int) -> None:
    policy = service([backlog(100)], tolerance=tolerance, behavior={
        "scaleDown": {"stabilizationWindowSeconds": 0}, "scaleUp": {"policies": [{"type": "Pods", "value": 100,
                                                                                  "periodSeconds": 15}]}})
    decision = run(policy, snapshot(10, {"backlog": {"value": value}}))
    assert decision.desired_replicas == expected
    held = decision.metrics[0].held == "tolerance"
    assert held == (value in (1090, 920, 510))
    assert ("tolerance" in decision.limited_by) == held


def test_per_metric_tolerance_encodes_and_for_scale_down() -> None:
    """CPU target 70 with a scale-down band to 30 %, memory 80 down to 50 %: down only when both are low."""
    policy = service([
        {**cpu(70), "tolerance": {"scaleUp": 0.0, "scaleDown": 1 - 30 / 70}},
        {"name": "memory", "usageQuery": "u", "requestQuery": "r", "tolerance": {"scaleUp": 0, "scaleDown": 0.375},
         "target": {"type": "Utilization", "averageUtilization": 80}},
    ], behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})

    def at(cpu_pct: int, mem_pct: int) -> int:
        snap = snapshot(4, {"cpu": {"pods": [{"usage": cpu_pct * 10, "request": 1000}] * 4},
                            "memory": {"pods": [{"usage": mem_pct * 10, "request": 1000}] * 4}})
        return int(run(policy, snap).desired_replicas)

    assert at(25, 60) == 4  # CPU low, memory not: keep
    assert at(40, 40) == 4  # memory low, CPU not: keep
    assert at(25, 40) == 2  # both low: scale down (CPU proposes ceil(0.357*4) = 2, memory ceil(0.5*4) = 2)
    assert at(75, 40) == 5  # CPU > 70 %: up
    assert at(50, 85) == 5  # memory > 80 %: up


# --- the max over metrics and failed metrics (KEDA#3065) -------------------------------------------

def test_largest_proposal_wins_and_is_named() -> None:
    policy = service([backlog(100), value_metric("p95", 2)])
    decision = run(policy, snapshot(4, {"backlog": {"value": 200}, "p95": {"value": 3.0}}))
    assert decision.desired_replicas == 6  # p95 ratio 1.5 → ceil(6); backlog would keep 2
    assert decision.reason == "scale up 4 → 6: p95 3 vs 2 target (ratio 1.50)"
    assert [m.proposal for m in decision.metrics] == [2, 6]


def test_a_failed_metric_blocks_a_scale_down() -> None:
    policy = service([backlog(100), value_metric("p95", 2)],
                     behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    decision = run(policy, snapshot(6, {"backlog": {"value": 10}, "p95": {"error": "prometheus: no data"}}))
    assert decision.desired_replicas == 6
    assert decision.limited_by == ("failed metric",)
    assert decision.reason == ("keep 6: would scale down to 1 but p95 failed (prometheus: no data), "
                               "limited by failed metric")
    assert decision.recommendation is None


def test_a_failed_metric_never_blocks_a_scale_up() -> None:
    policy = service([backlog(100), value_metric("p95", 2)])
    decision = run(policy, snapshot(2, {"backlog": {"value": 500}, "p95": {"error": "timeout"}}))
    assert decision.desired_replicas == 5 and decision.limited_by == ()


def test_metrics_vanished_never_scale_down_keda_3065() -> None:
    """Prometheus down at peak: every metric fails → hold the current count, count the failure."""
    policy = service([backlog(100), value_metric("p95", 2)], minReplicas=1)
    decision = run(policy, snapshot(12, {"backlog": {"error": "connection refused"},
                                         "p95": {"error": "connection refused"}}, consecutive_failures=4))
    assert (decision.desired_replicas, decision.limited_by, decision.consecutive_failures) == (12, ("fallback",), 5)
    assert decision.reason.startswith(
        "keep 12: all 2 metric(s) failed (backlog: connection refused) 5 time(s) in a row")


@pytest.mark.parametrize(("failures_before", "expected", "failures_after"),
                         [(0, 7, 1), (1, 7, 2), (2, 3, 3), (9, 3, 10)])
def test_static_fallback_after_failure_threshold(failures_before: int, expected: int, failures_after: int) -> None:
    policy = service(fallback={"failureThreshold": 3, "behavior": "static", "replicas": 3})
    decision = run(policy, snapshot(7, {"backlog": {"error": "no data"}}, consecutive_failures=failures_before))
    assert (decision.desired_replicas, decision.consecutive_failures) == (expected, failures_after)
    assert decision.limited_by == ("fallback",)


def test_a_metric_missing_from_the_snapshot_is_an_error() -> None:
    decision = run(service(), snapshot(3, {}))
    assert decision.desired_replicas == 3 and decision.metrics[0].error == "no reading"


# --- values that cannot be right are metric errors: the fallback decides, never a scale-down -------

NAN, INF = float("nan"), float("inf")

# (name, current, reading of the only metric `backlog` (AverageValue 100), error)
IMPOSSIBLE_CASES = [
    ("negative backlog", 3, -450, "value -450 is negative"),
    ("prometheus answering -5 (was 4 → 1)", 4, -5, "value -5 is negative"),
    ("a tiny negative", 2, -1e-9, "value -1e-09 is negative"),
    ("NaN", 4, NAN, "value is NaN"),
    ("+Inf", 4, INF, "value is +Inf"),
    ("-Inf", 4, -INF, "value is -Inf"),
]


@pytest.mark.parametrize(("case", "current", "value", "error"), IMPOSSIBLE_CASES, ids=[c[0] for c in IMPOSSIBLE_CASES])
def test_an_impossible_value_is_a_metric_error_and_the_fallback_holds(case: str, current: int, value: float,
                                                                     error: str) -> None:
    policy = service(behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    snap = snapshot(current, {}, recommendations=[{"at": ago(600), "replicas": current}])
    snap = replace(snap, metrics={"backlog": MetricSample(value=value)})
    decision = run(policy, snap)
    assert (decision.desired_replicas, decision.limited_by) == (current, ("fallback",)), decision.reason
    assert (decision.metrics[0].error, decision.metrics[0].proposal) == (error, None)
    assert decision.consecutive_failures == 1 and decision.recommendation is None
    assert decision.reason == (f"keep {current}: all 1 metric(s) failed (backlog: {error}) 1 time(s) in a row, "
                               "limited by fallback hold")


@pytest.mark.parametrize(("other", "expected", "limited_by"), [
    (1.0, 8, ("failed metric",)),  # p95 alone would scale 8 → 4: the impossible backlog blocks it
    (4.0, 16, ()),  # p95 asks for more: a failed metric never blocks a scale-up
])
def test_an_impossible_value_next_to_a_good_metric(other: float, expected: int, limited_by: tuple[str, ...]) -> None:
    policy = service([backlog(100), value_metric("p95", 2)], behavior={"scaleDown": {"stabilizationWindowSeconds": 0},
                     "scaleUp": {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}})
    decision = run(policy, snapshot(8, {"backlog": {"value": -450}, "p95": {"value": other}}))
    assert (decision.desired_replicas, decision.limited_by) == (expected, limited_by), decision.reason
    assert decision.metrics[0].error == "value -450 is negative"


def test_an_impossible_value_keeps_a_scaled_to_zero_service_active() -> None:
    decision = run(zero_policy(), snapshot(2, {"backlog": {"value": -1}}, last_active=ago(3600)))
    assert (decision.desired_replicas, decision.limited_by) == (2, ("fallback",))


@pytest.mark.parametrize(("kind", "value"), [("Value", -3.0), ("Value", NAN), ("AverageValue", -3.0)])
def test_impossible_values_from_zero_replicas_are_errors_too(kind: str, value: float) -> None:
    field = "value" if kind == "Value" else "averageValue"
    spec = MetricSpec.model_validate({"name": "q", "query": "q", "target": {"type": kind, field: 1}})
    result = metric_proposal(spec, MetricSample(value=value), 0, 0, Tolerance())
    assert result.proposal is None and result.error is not None and result.error.startswith("value ")


@pytest.mark.parametrize(("pod_list", "error"), [
    (pods([300, 300], requests=[1000, INF]), "pod 1: request is +Inf"),
    (pods([300, 300], requests=[1000, -5]), "pod 1: request -5 is negative"),
    (pods([300, 300], requests=[NAN, 1000]), "pod 0: request is NaN"),
    (pods([NAN, -1, INF]), "no metrics for the pods (they might be unready)"),  # every usage impossible
])
def test_impossible_pod_requests_are_utilization_errors(pod_list: MetricSample, error: str) -> None:
    result = metric_proposal(MetricSpec.model_validate(cpu()), pod_list, 3, 3, Tolerance())
    assert (result.proposal, result.error) == (None, error)


# A pod whose usage cannot be right (negative, NaN, ±Inf: a broken exporter or a counter reset) is a pod
# without a metric, as the HPA treats a pod metrics-server has no sample for: the other pods decide, and
# the missing-pod rules apply. (name, current, levels, target, expected, utilization, the same with None)
IMPOSSIBLE_USAGE_CASES = [
    ("MissingMetrics, one NaN and one negative", 4, [400, 95, NAN, -5], 100, 3, 24),
    ("a spike with one NaN pod scales up", 3, [900, 900, NAN], 50, 4, 90),
    ("a spike with one negative pod scales up", 3, [900, -900, 900], 50, 4, 90),
    ("+Inf and -Inf usage", 4, [INF, 400, -INF, 95], 100, 3, 24),
    ("scale-down with a negative pod counts it at 100 % of its request", 4, [100, 100, 100, -1e-9], 50, 3, 10),
    ("MissingMetricsNoChangeGt with NaN", 2, [1900, NAN], 100, 2, 190),
]


@pytest.mark.parametrize(("case", "current", "levels", "target", "expected", "utilization"), IMPOSSIBLE_USAGE_CASES,
                         ids=[c[0] for c in IMPOSSIBLE_USAGE_CASES])
def test_an_impossible_pod_usage_is_a_pod_without_a_metric(case: str, current: int, levels: list[float],
                                                           target: int, expected: int, utilization: int) -> None:
    spec = MetricSpec.model_validate(cpu(target))
    result = metric_proposal(spec, pods(levels), current, current, Tolerance())
    assert (result.proposal, result.value, result.error) == (expected, utilization, None)
    missing = [None if x < 0 or x != x or x == INF else x for x in levels]
    assert result == metric_proposal(spec, pods(missing), current, current, Tolerance())


def test_one_nan_pod_no_longer_holds_a_spike_on_the_fallback() -> None:
    policy = service([cpu(50)], behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 10,
                                                                      "periodSeconds": 15}]}})
    snap = replace(snapshot(3, {}), metrics={"cpu": pods([900, 900, NAN])})
    decision = run(policy, snap)
    assert (decision.desired_replicas, decision.limited_by, decision.metrics[0].error) == (4, (), None), \
        decision.reason


@pytest.mark.parametrize(("kind", "value", "current"), [
    ("Value", 1e308, 3), ("AverageValue", 1e308, 3), ("AverageValue", 1e308, 0), ("Value", 1e300, 0)])
def test_huge_values_propose_the_replica_ceiling_not_an_overflow(kind: str, value: float, current: int) -> None:
    field = "value" if kind == "Value" else "averageValue"
    spec = {"name": "q", "query": "q", "target": {"type": kind, field: 0.001}}
    result = metric_proposal(MetricSpec.model_validate(spec), MetricSample(value=value), current, current, Tolerance())
    assert (result.proposal, result.error) == (MAX_REPLICAS, None)
    decision = run(service([spec], minReplicas=0, maxReplicas=50), replace(snapshot(current, {}),
                                                                            metrics={"q": MetricSample(value=value)}))
    assert decision.desired_replicas == (7 if current else 4) and decision.recommendation == MAX_REPLICAS


# --- in-flight work counts (KEDA#1663) --------------------------------------------------------------

def test_backlog_counts_in_flight_jobs() -> None:
    """Queue empty but 8 jobs in flight on 2 workers with 2 per worker: scale up, not down."""
    policy = service([{"name": "backlog", "query": "sum(core_ingest_queue_depth) + sum(core_ingest_jobs_in_flight)",
                       "target": {"type": "AverageValue", "averageValue": 2}}])
    queued, in_flight = 0, 8
    decision = run(policy, snapshot(2, {"backlog": {"value": queued + in_flight}}))
    assert decision.desired_replicas == 4


# --- stabilization and rate policies (horizontal.go) ------------------------------------------------

@pytest.mark.parametrize(("current", "proposal", "recs", "up_window", "down_window", "expected"), [
    (5, 3, [(60, 4), (200, 6)], 0, 300, 5),  # highest recent (6) clamps to current
    (5, 3, [(60, 4)], 0, 300, 4),  # scale down only to the highest recent recommendation
    (5, 3, [(400, 8)], 0, 300, 3),  # outside the window: forgotten
    (5, 3, [(300, 8)], 0, 300, 3),  # exactly at the cutoff: outside (After is strict)
    (5, 8, [(30, 6), (90, 9)], 60, 300, 6),  # scale-up window: lowest recent
    (5, 8, [(30, 4)], 60, 300, 5),  # lowest recent below current: stay
    (5, 8, [(30, 4)], 0, 300, 8),  # no scale-up window
])
def test_stabilize(current: int, proposal: int, recs: list[tuple[int, int]], up_window: int, down_window: int,
                   expected: int) -> None:
    history = tuple((NOW - timedelta(seconds=s), n) for s, n in recs)
    assert stabilize(current, proposal, history, up_window, down_window, NOW)[0] == expected


def rules(select: str, *policies: tuple[str, int, int], window: int = 0) -> ScalingRules:
    return ScalingRules.model_validate({"stabilizationWindowSeconds": window, "selectPolicy": select, "policies": [
        {"type": t, "value": v, "periodSeconds": p} for t, v, p in policies]})


@pytest.mark.parametrize(("current", "rule", "events", "up", "expected"), [
    (3, rules("Max", ("Pods", 4, 15), ("Percent", 100, 15)), [], True, 7),
    (10, rules("Max", ("Pods", 4, 15), ("Percent", 100, 15)), [], True, 20),
    (10, rules("Min", ("Pods", 4, 15), ("Percent", 100, 15)), [], True, 14),
    (5, rules("Max", ("Pods", 4, 60)), [(30, 3)], True, 6),  # started the period at 2: 2 + 4
    (5, rules("Max", ("Pods", 4, 60)), [(90, 3)], True, 9),  # that event is outside the period
    (3, rules("Max", ("Percent", 50, 15)), [], True, 5),  # ceil(4.5)
    (10, rules("Max", ("Percent", 50, 60)), [], False, 5),
    (9, rules("Max", ("Percent", 50, 60)), [], False, 4),  # int(4.5)
    (10, rules("Max", ("Pods", 2, 60), ("Percent", 50, 60)), [], False, 5),  # Max change: lowest
    (10, rules("Min", ("Pods", 2, 60), ("Percent", 50, 60)), [], False, 8),  # Min change: highest
    (8, rules("Max", ("Pods", 2, 60)), [(20, -2)], False, 8),  # removed 2 already: start 10 - 2
    (8, rules("Max", ("Pods", 2, 60)), [(20, -2), (10, 1)], False, 7),
    (4, rules("Disabled"), [], True, 4),
])
def test_rate_limit(current: int, rule: ScalingRules, events: list[tuple[int, int]], up: bool, expected: int) -> None:
    history = tuple((NOW - timedelta(seconds=s), n) for s, n in events)
    assert rate_limit(current, rule, history, NOW, up)[0] == expected


@pytest.mark.parametrize(("current", "value", "history", "behavior", "bounds", "expected", "limited_by", "reason"), [
    (3, 450, {}, {}, (1, 20), 5, (), "scale up 3 → 5: backlog 450 = 150/replica vs 100/replica target (ratio 1.50)"),
    (3, 2000, {}, {}, (1, 20), 7, ("scaleUp Pods policy 4/15s",),
     "scale up 3 → 7: backlog 2000 = 666.67/replica vs 100/replica target (ratio 6.67), limited by scaleUp Pods "
     "policy 4/15s"),
    (3, 2000, {}, {}, (1, 6), 6, ("max",), None),
    (3, 2000, {"scale_events": [{"at": ago(10), "change": 2}]}, {}, (1, 20), 5, ("scaleUp Pods policy 4/15s",), None),
    (3, 2000, {"scale_events": [{"at": ago(10), "change": 4}]}, {}, (1, 20), 3, ("scaleUp Pods policy 4/15s",), None),
    # a first decision seeds the window with the current count (maybeInitScaleDownStabilizationWindow)
    (8, 100, {}, {}, (1, 20), 8, ("stabilization",), None),
    (8, 100, {"recommendations": [{"at": ago(400), "replicas": 8}]}, {}, (1, 20), 1, (), None),
    (8, 100, {"recommendations": [{"at": ago(100), "replicas": 5}]}, {}, (1, 20), 5, ("stabilization",), None),
    (8, 100, {}, {"scaleDown": {"stabilizationWindowSeconds": 0}}, (2, 20), 2, ("min",),
     "scale down 8 → 2: backlog 100 = 12.5/replica vs 100/replica target (ratio 0.12), limited by minReplicas 2"),
    (8, 100, {}, {"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60}]}}, (1, 20), 7, ("scaleDown Pods policy 1/60s",), None),
    (8, 100, {}, {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}}, (1, 20), 8,
     ("scaleDown selectPolicy Disabled",), None),
    (25, 2500, {}, {}, (1, 20), 20, ("max",), "scale down 25 → 20: 25 replicas is above maxReplicas, "
                                               "limited by maxReplicas 20"),
    (1, 100, {}, {}, (2, 20), 2, ("min",), None),
    (3, 300, {}, {}, (1, 20), 3, ("tolerance",), "keep 3: backlog 300 = 100/replica vs 100/replica target "
                                                 "(ratio 1.00), limited by tolerance ±0.1"),
    (3, 320, {}, {}, (1, 20), 3, ("tolerance",), None),
])
def test_decide_behaviors(current: int, value: float, history: dict[str, Any], behavior: dict[str, Any],
                          bounds: tuple[int, int], expected: int, limited_by: tuple[str, ...],
                          reason: str | None) -> None:
    policy = service(behavior=behavior, minReplicas=bounds[0], maxReplicas=bounds[1])
    decision = run(policy, snapshot(current, {"backlog": {"value": value}}, **history))
    assert (decision.desired_replicas, decision.limited_by) == (expected, limited_by), decision.reason
    if reason is not None:
        assert decision.reason == reason


def test_exactly_at_target_is_not_limited_by_tolerance_wording() -> None:
    decision = run(service(), snapshot(3, {"backlog": {"value": 300}}))
    assert decision.recommendation == 3 and decision.change == 0


# --- scale to zero (KEDA) ----------------------------------------------------------------------------

def zero_policy(**fields: Any) -> ServicePolicy:
    base: dict[str, Any] = {"minReplicas": 0, "cooldownPeriod": 300,
                            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}
    base.update(fields)
    return service([backlog(100)], **base)


@pytest.mark.parametrize(("current", "value", "history", "expected", "limited_by", "active"), [
    (0, 0, {}, 0, ("activation",), False),  # idle stays at zero
    (0, 1, {}, 1, (), True),  # from zero: ceil(1/100) = 1
    (0, 250, {}, 3, (), True),  # from zero: ceil(ratio), no tolerance
    (0, 2500, {}, 4, ("scaleUp Pods policy 4/15s",), True),  # and through the scale-up rate policy
    (2, 0, {"last_active": ago(100)}, 2, ("stabilization",), False),  # recent recommendations keep 2...
    (2, 0, {"last_active": ago(100), "recommendations": [{"at": ago(120), "replicas": 2}]}, 1, ("cooldown",), False),
    (1, 0, {"last_active": ago(100), "recommendations": [{"at": ago(120), "replicas": 0}]}, 1, ("cooldown",),
     False),  # ...and the cooldown keeps 1
    (1, 0, {"last_active": ago(400), "recommendations": [{"at": ago(120), "replicas": 0}]}, 0, (), False),
    (1, 0, {"recommendations": [{"at": ago(120), "replicas": 0}]}, 0, (), False),  # never active: no cooldown
    (1, 0, {"last_active": ago(400), "recommendations": [{"at": ago(30), "replicas": 1}]}, 1,
     ("stabilization",), False),  # KEDA#7770: the scale-down window still applies on the way to zero
    (1, 40, {"last_active": ago(400)}, 1, (), True),  # active: never below 1
])
def test_scale_to_zero(current: int, value: float, history: dict[str, Any], expected: int,
                       limited_by: tuple[str, ...], active: bool) -> None:
    decision = run(zero_policy(), snapshot(current, {"backlog": {"value": value}}, **history))
    assert (decision.desired_replicas, decision.limited_by, decision.active) == (expected, limited_by, active), \
        decision.reason


def test_scale_to_zero_goes_through_the_scale_down_rate_policy() -> None:
    policy = zero_policy(behavior={"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    snap = snapshot(3, {"backlog": {"value": 0}}, last_active=ago(400),
                    recommendations=[{"at": ago(100), "replicas": 0}], scale_events=[{"at": ago(5), "change": -1}])
    decision = run(policy, snap)
    assert (decision.desired_replicas, decision.limited_by) == (3, ("scaleDown Pods policy 1/60s",))
    later = run(policy, snapshot(3, {"backlog": {"value": 0}}, last_active=ago(400),
                                 recommendations=[{"at": ago(100), "replicas": 0}]))
    assert later.desired_replicas == 2


def test_first_decision_seeds_the_window() -> None:
    decision = run(service(), snapshot(6, {"backlog": {"value": 100}}))
    assert (decision.desired_replicas, decision.seeded, decision.recommendation) == (6, True, 1)
    assert "scaleDown stabilization window 300s (highest recent recommendation 6)" in decision.reason


def test_activation_metric_and_threshold() -> None:
    policy = service([backlog(100), value_metric("p95", 2)], minReplicas=0, activation={"metric": "backlog",
                                                                                         "threshold": 5})
    below = run(policy, snapshot(0, {"backlog": {"value": 5}, "p95": {"value": 9}}))
    assert (below.desired_replicas, below.active) == (0, False)
    assert below.reason == "keep 0: inactive (backlog <= 5), limited by activation"
    above = run(policy, snapshot(0, {"backlog": {"value": 6}, "p95": {"value": 0}}))
    assert (above.desired_replicas, above.active) == (1, True)
    assert above.reason.startswith("scale up 0 → 1: active, scaling from zero")


def test_a_failed_activation_metric_counts_as_active() -> None:
    policy = zero_policy()
    decision = run(policy, snapshot(2, {"backlog": {"error": "no data"}}, last_active=ago(3600)))
    assert decision.desired_replicas == 2 and decision.limited_by == ("fallback",)


def test_scaled_to_zero_by_hand_with_min_above_zero_is_left_alone() -> None:
    decision = run(service(), snapshot(0, {"backlog": {"value": 900}}))
    assert decision.desired_replicas == 0 and decision.limited_by == ("min",)


# --- paused ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("in_policy", "in_history", "where"), [(True, False, "in the policy"),
                                                                (False, True, "by `opsctl scale pause`")])
def test_paused_changes_nothing(in_policy: bool, in_history: bool, where: str) -> None:
    decision = run(service(paused=in_policy), snapshot(3, {"backlog": {"value": 5000}}, paused=in_history))
    assert (decision.desired_replicas, decision.limited_by) == (3, ("paused",))
    assert decision.reason == f"keep 3: autoscaling is paused {where}, limited by paused"
    assert decision.metrics[0].proposal == 20 or decision.metrics[0].proposal == 50


# --- decide_all and speed ----------------------------------------------------------------------------

def test_decide_all_in_policy_order_for_services_with_snapshots() -> None:
    policy = AutoscalingPolicy.model_validate({"services": {
        "b": service().model_dump(), "a": service().model_dump(), "c": service().model_dump()}})
    snaps = {"a": snapshot(1, {"backlog": {"value": 300}}), "b": snapshot(1, {"backlog": {"value": 0}})}
    decisions = decide_all(policy, snaps, NOW)
    assert [(d.service, d.desired_replicas) for d in decisions] == [("b", 1), ("a", 3)]


def test_decide_is_pure_and_repeatable() -> None:
    policy, snap = service(), snapshot(3, {"backlog": {"value": 450}}, recommendations=[{"at": ago(5), "replicas": 4}])
    first = run(policy, snap)
    time.sleep(0.01)
    assert run(policy, snap) == first
