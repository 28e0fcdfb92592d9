"""The scaling decision: a pure function of a policy, a snapshot and the clock. No I/O.

The math is the Kubernetes HPA's (``pkg/controller/podautoscaler``), step by step:

1. each metric proposes a replica count (``replica_calculator.go``): a usage ratio against the
   target, a tolerance band around 1 (per direction), ``ceil``; for Utilization the treatment of
   unready, pending, failed and missing-metric pods. A reading that cannot be right (negative,
   NaN, ±Inf: a broken query or exporter) is an error of that metric, never a proposal, except a
   pod's usage: that pod is one without a metric, as the HPA treats a pod it has no sample for
   (one broken pod must not hold a spike on the fallback); a huge reading proposes at most
   :data:`MAX_REPLICAS`;
2. the largest proposal wins; a failed metric blocks a scale-down but never a scale-up; when
   every metric failed, the ``fallback`` decides (hold, or static replicas after N failures);
3. stabilization over past recommendations, then the rate policies over the scale events inside
   ``periodSeconds``, then the min/max clamp (``horizontal.go``);
4. KEDA-style scale to zero around it: activation, cooldown, and scale-from-zero.

Every step that changed the outcome is named in ``Decision.limited_by`` and ``Decision.reason``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opsctl.scaling.policy import MAX_REPLICAS, AutoscalingPolicy, MetricSpec, ScalingRules, ServicePolicy, Tolerance
from opsctl.scaling.snapshot import MetricSample, PodSample, Snapshot


@dataclass(frozen=True)
class MetricResult:
    name: str
    type: str
    target: float
    value: float | None = None  # Value: the value; AverageValue: the total; Utilization: percent of request
    ratio: float | None = None
    proposal: int | None = None
    error: str | None = None
    held: str | None = None  # why the proposal is the current count although the ratio is not 1

    def as_dict(self) -> dict[str, Any]:
        finite = self.ratio is not None and not math.isinf(self.ratio)
        return {"name": self.name, "type": self.type, "value": self.value, "target": self.target,
                "ratio": round(self.ratio, 4) if finite and self.ratio is not None else None, "proposal": self.proposal,
                "error": self.error}


@dataclass(frozen=True)
class Decision:
    service: str
    desired_replicas: int
    current_replicas: int
    metrics: tuple[MetricResult, ...]
    limited_by: tuple[str, ...]
    reason: str
    recommendation: int | None = None  # the unstabilized recommendation to remember (None: nothing)
    consecutive_failures: int = 0  # the count after this decision
    active: bool | None = None  # scale to zero: whether the service is active now (None: not applicable)
    seeded: bool = False  # the history had no recommendation: remember the current count at ``now`` too

    @property
    def change(self) -> int:
        return self.desired_replicas - self.current_replicas

    @property
    def metrics_failed(self) -> bool:
        """Every metric failed, so the fallback decided (a live read that got no usable metric)."""
        return self.limited_by == ("fallback",)

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "current_replicas": self.current_replicas,
                "desired_replicas": self.desired_replicas, "metrics": [m.as_dict() for m in self.metrics],
                "limited_by": list(self.limited_by), "reason": self.reason,
                "recommendation": self.recommendation, "consecutive_failures": self.consecutive_failures,
                "active": self.active, "seeded": self.seeded}


# --- numbers in sentences -------------------------------------------------------------------------


def num(x: float) -> str:
    """450 → "450", 2.4 → "2.4", 0.0123 → "0.0123", 1234567 → "1234567", 1e300 → "1e+300"."""
    if not math.isfinite(x) or abs(x) >= 1e15:
        return f"{x:.3g}"
    if x == int(x):
        return str(int(x))
    if abs(x) >= 0.01:
        return f"{x:.2f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


# --- step 1: one metric's proposal (replica_calculator.go) ----------------------------------------


def impossible(x: float, what: str = "value") -> str | None:
    """Why a reading (a count, a rate, a usage: never below 0) cannot be right, or None if it can."""
    if math.isnan(x):
        return f"{what} is NaN"
    if math.isinf(x):
        return f"{what} is {'+' if x > 0 else '-'}Inf"
    if x < 0:
        return f"{what} {num(x)} is negative"
    return None


def _ceil(x: float) -> int:
    """``ceil`` of a replica count, at most MAX_REPLICAS (a huge reading must not overflow)."""
    return MAX_REPLICAS if not x < MAX_REPLICAS else math.ceil(x)


def _utilization(usage: Mapping[int, float], requests: Mapping[int, float], target: float) -> tuple[float, int]:
    """(ratio, utilization %) as GetResourceUtilizationRatio: the percent is truncated to an integer
    (and capped, so that usages near the float limit cannot overflow)."""
    total = sum(usage.values())
    requested = sum(requests[i] for i in usage)
    share = total * 100 / requested
    utilization = int(share) if share < 100 * MAX_REPLICAS else 100 * MAX_REPLICAS
    return utilization / target, utilization


def _pods_proposal(spec: MetricSpec, pods: tuple[PodSample, ...], current: int, tol: Tolerance) -> MetricResult:
    target = spec.target.amount
    base = MetricResult(spec.name, "Utilization", target)
    if not pods:
        return _error(base, "no pods to measure")
    for i, pod in enumerate(pods):
        wrong = pod.request is not None and impossible(pod.request, "request")
        if wrong:
            return _error(base, f"pod {pod.name or i}: {wrong}")
    if any(p.request is None or p.request <= 0 for p in pods):
        return _error(base, "a pod has no resource request: Utilization needs requests on every pod")
    requests = {i: float(p.request or 0) for i, p in enumerate(pods)}
    usage: dict[int, float] = {}
    ready_count, unready, missing = 0, [], []
    for i, pod in enumerate(pods):
        if pod.deleting or pod.phase == "Failed":
            continue  # ignored
        if pod.phase == "Pending":
            unready.append(i)
            continue
        if pod.usage is None or impossible(pod.usage):  # a broken sample: a pod without a metric, as the HPA has it
            missing.append(i)
            continue
        if not pod.ready:
            unready.append(i)
            continue
        usage[i] = pod.usage
        ready_count += 1
    if not usage:
        return _error(base, "no metrics for the pods (they might be unready)")
    ratio, utilization = _utilization(usage, requests, target)
    base = MetricResult(spec.name, "Utilization", target, float(utilization), ratio)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if tol.within(ratio):
            return _held(base, current, "tolerance")
        return _proposed(base, _ceil(ratio * ready_count))
    if missing:
        if ratio < 1.0:  # scale-down: missing pods use 100 % of their request (or the target, if higher)
            fill = max(100.0, target) / 100
            usage.update({i: requests[i] * fill for i in missing})
        elif ratio > 1.0:  # scale-up: missing pods use nothing
            usage.update(dict.fromkeys(missing, 0.0))
    if scale_up_with_unready:
        usage.update(dict.fromkeys(unready, 0.0))
    new_ratio, _ = _utilization(usage, requests, target)
    if tol.within(new_ratio):
        return _held(base, current, "tolerance")
    if (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return _held(base, current, "counting pods without metrics flips the direction")
    new_replicas = _ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and new_replicas > current) or (new_ratio > 1.0 and new_replicas < current):
        return _held(base, current, "counting pods without metrics flips the direction")
    return _proposed(base, new_replicas)


def _error(base: MetricResult, message: str) -> MetricResult:
    return MetricResult(base.name, base.type, base.target, base.value, base.ratio, None, message)


def _held(base: MetricResult, current: int, why: str) -> MetricResult:
    return MetricResult(base.name, base.type, base.target, base.value, base.ratio, current, None, why)


def _proposed(base: MetricResult, replicas: int) -> MetricResult:
    return MetricResult(base.name, base.type, base.target, base.value, base.ratio, replicas)


def metric_proposal(spec: MetricSpec, sample: MetricSample | None, current: int, ready: int,
                    tol: Tolerance) -> MetricResult:
    """One metric's replica proposal, as the replica calculator computes it."""
    kind, target = spec.target.type, spec.target.amount
    base = MetricResult(spec.name, kind, target)
    if sample is None:
        return _error(base, "no reading")
    if sample.error is not None:
        return _error(base, sample.error)
    if kind == "Utilization":
        if sample.pods is None:
            return _error(base, "Utilization needs per-pod usage and request")
        if current == 0:
            return _error(base, "no pods to measure (scaled to zero)")
        return _pods_proposal(spec, sample.pods, current, tol)
    if sample.value is None:
        return _error(base, f"{kind} needs a value")
    value = sample.value
    wrong = impossible(value)
    if wrong:
        return _error(base, wrong)
    if kind == "AverageValue":  # GetExternalPerPodMetricReplicas
        if current == 0:
            return _proposed(MetricResult(spec.name, kind, target, value, math.inf if value else 0.0),
                             _ceil(value / target))
        ratio = value / (target * current)
        base = MetricResult(spec.name, kind, target, value, ratio)
        if tol.within(ratio):
            return _held(base, current, "tolerance")
        return _proposed(base, _ceil(value / target))
    ratio = value / target  # Value: getUsageRatioReplicaCount
    base = MetricResult(spec.name, kind, target, value, ratio)
    if current == 0:
        return _proposed(base, _ceil(ratio))
    if tol.within(ratio):
        return _held(base, current, "tolerance")
    if ready == 0:
        return _error(base, "no ready pods to scale from")
    return _proposed(base, _ceil(ratio * ready))


# --- step 3: stabilization and rate policies (horizontal.go) --------------------------------------


def stabilize(current: int, proposal: int, recommendations: tuple[tuple[datetime, int], ...],
              up_window: int, down_window: int, now: datetime) -> tuple[int, int, int]:
    """(stabilized, up recommendation, down recommendation) as stabilizeRecommendationWithBehaviors."""
    up_cutoff = now - timedelta(seconds=up_window)
    down_cutoff = now - timedelta(seconds=down_window)
    up = down = proposal
    for at, replicas in recommendations:
        if at > up_cutoff:
            up = min(up, replicas)
        if at > down_cutoff:
            down = max(down, replicas)
    result = current
    if result < up:
        result = up
    if result > down:
        result = down
    return result, up, down


def _changed_in_period(period: int, events: tuple[tuple[datetime, int], ...], now: datetime,
                       up: bool) -> int:
    cutoff = now - timedelta(seconds=period)
    return sum(abs(c) for at, c in events if at > cutoff and (c > 0) == up and c != 0)


def rate_limit(current: int, rules: ScalingRules, events: tuple[tuple[datetime, int], ...], now: datetime,
               up: bool) -> tuple[int, str]:
    """(limit, the policy that set it) as calculateScaleUpLimitWithScalingRules / ScaleDownLimit."""
    direction = "scaleUp" if up else "scaleDown"
    if rules.selectPolicy == "Disabled":
        return current, f"{direction} selectPolicy Disabled"
    # Max picks the biggest change (highest limit up, lowest limit down); Min the smallest
    pick_high = (rules.selectPolicy == "Max") == up
    best: tuple[int, str] | None = None
    for policy in rules.policies:
        added = _changed_in_period(policy.periodSeconds, events, now, up=True)
        removed = _changed_in_period(policy.periodSeconds, events, now, up=False)
        start = current - added + removed
        if policy.type == "Pods":
            proposed = start + policy.value if up else start - policy.value
        elif up:
            proposed = math.ceil(start * (1 + policy.value / 100))
        else:
            proposed = int(start * (1 - policy.value / 100))
        if best is None or (proposed > best[0] if pick_high else proposed < best[0]):
            best = (proposed, policy.describe(direction))
    assert best is not None
    return best


# --- the decision ----------------------------------------------------------------------------------


def _describe(m: MetricResult, current: int) -> str:
    if m.error is not None:
        return f"{m.name} failed ({m.error})"
    assert m.value is not None
    ratio = "" if m.ratio is None or math.isinf(m.ratio) else f" (ratio {m.ratio:.2f})"
    if m.type == "Utilization":
        return f"{m.name} {num(m.value)}% of request vs {num(m.target)}% target{ratio}"
    if m.type == "AverageValue":
        per = f" = {num(m.value / current)}/replica" if current else ""
        return f"{m.name} {num(m.value)}{per} vs {num(m.target)}/replica target{ratio}"
    return f"{m.name} {num(m.value)} vs {num(m.target)} target{ratio}"


def _sentence(current: int, desired: int, why: str, limits: list[str]) -> str:
    if desired > current:
        head = f"scale up {current} → {desired}"
    elif desired < current:
        head = f"scale down {current} → {desired}"
    else:
        head = f"keep {current}"
    tail = f", limited by {', '.join(limits)}" if limits else ""
    return f"{head}: {why}{tail}"


def _is_active(policy: ServicePolicy, results: list[MetricResult]) -> bool:
    """KEDA activation: the activation metric above its threshold; by default any metric above 0.

    A metric that failed counts as active: an outage must never look like an idle service."""
    if policy.activation is not None:
        chosen = next(r for r in results if r.name == policy.activation.metric)
        return chosen.error is not None or (chosen.value or 0.0) > policy.activation.threshold
    return any(r.error is not None or (r.value or 0.0) > 0 for r in results)


def decide(name: str, policy: ServicePolicy, snapshot: Snapshot, now: datetime) -> Decision:
    """The replica count ``name`` should run now, and why (one sentence)."""
    current, hist = snapshot.current_replicas, snapshot.history
    results = [metric_proposal(spec, snapshot.metrics.get(spec.name), current, snapshot.ready_replicas,
                               policy.tolerance_for(spec)) for spec in policy.metrics]
    metrics = tuple(results)
    ok = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]

    def done(desired: int, why: str, limits: list[str], *, recommendation: int | None = None,
             failures: int = 0, active: bool | None = None, sentence_limits: list[str] | None = None,
             seeded: bool = False) -> Decision:
        return Decision(name, desired, current, metrics, tuple(limits),
                        _sentence(current, desired, why, sentence_limits if sentence_limits is not None else limits),
                        recommendation, failures, active, seeded)

    if policy.paused or hist.paused:
        where = "in the policy" if policy.paused else "by `opsctl scale pause`"
        return done(current, f"autoscaling is paused {where}", ["paused"], failures=hist.consecutive_failures)

    if not ok:  # every metric failed: the fallback decides, never a scale-down read from missing data
        failures = hist.consecutive_failures + 1
        fb = policy.fallback
        first = f"all {len(failed)} metric(s) failed ({failed[0].name}: {failed[0].error})"
        if fb.behavior == "static" and failures >= fb.failureThreshold:
            assert fb.replicas is not None
            return done(fb.replicas, f"{first} {failures} time(s) in a row", ["fallback"],
                        failures=failures, sentence_limits=[f"fallback static {fb.replicas} replicas"])
        if fb.behavior == "static":
            why = f"{first}; {failures}/{fb.failureThreshold} failures before the static fallback"
        else:
            why = f"{first} {failures} time(s) in a row"
        return done(current, why, ["fallback"], failures=failures, sentence_limits=["fallback hold"])

    # scale to zero (KEDA): activation decides 0 ↔ 1, the HPA math decides the rest
    active: bool | None = None
    floor = policy.minReplicas
    what = cooldown_note = ""
    if policy.minReplicas == 0:
        active = _is_active(policy, results)
        what = (f"{policy.activation.metric} <= {num(policy.activation.threshold)}" if policy.activation
                else "every metric is 0")
        if not active and current == 0:
            return done(0, f"inactive ({what})", ["activation"], active=False)
        if active:
            floor = 1
        elif hist.last_active is not None and now - hist.last_active < timedelta(seconds=policy.cooldownPeriod):
            floor = 1
            left = policy.cooldownPeriod - (now - hist.last_active).total_seconds()
            cooldown_note = f"cooldownPeriod {policy.cooldownPeriod}s ({num(left)}s left)"
        else:
            floor = 0

    # the HPA's own guards before any metric (reconcileAutoscaler)
    if current > policy.maxReplicas:
        return done(policy.maxReplicas, f"{current} replicas is above maxReplicas", ["max"], active=active,
                    sentence_limits=[f"maxReplicas {policy.maxReplicas}"])
    if 0 < current < floor:
        return done(floor, f"{current} replicas is below minReplicas", ["min"], active=active,
                    sentence_limits=[f"minReplicas {floor}"])
    if current == 0 and policy.minReplicas > 0:
        return done(0, "scaled to zero by hand while minReplicas > 0: autoscaling is off until it is scaled "
                       "up, as the HPA does", ["min"], active=active)

    driver = max(ok, key=lambda r: (r.proposal or 0))
    proposal = driver.proposal
    assert proposal is not None
    if active is False:
        proposal = 0 if floor == 0 else proposal  # inactive: the metrics' proposals do not keep it up
    limits: list[str] = []
    words: list[str] = []
    why = _describe(driver, current)
    if active is False and floor == 0:
        why = f"inactive ({what}) for longer than cooldownPeriod {policy.cooldownPeriod}s"

    if failed and proposal < current:  # computeReplicasForMetrics: an invalid metric blocks a scale-down
        return done(current, f"would scale down to {proposal} but {_describe(failed[0], current)}",
                    ["failed metric"], active=active)

    if proposal == current and driver.held:
        limits.append("tolerance")
        tol = policy.tolerance_for(_spec(policy, driver.name))
        words.append(f"tolerance {tol.describe()}" if driver.held == "tolerance" else driver.held)

    # maybeInitScaleDownStabilizationWindow: a service seen for the first time starts its window
    # with the current count, so a first run (or a fresh history) never scales down at once
    seeded = not hist.recommendations
    recommendations = ((now, current),) if seeded else hist.recommendations
    stabilized, up_rec, down_rec = stabilize(current, proposal, recommendations,
                                             policy.behavior.scaleUp.stabilizationWindowSeconds,
                                             policy.behavior.scaleDown.stabilizationWindowSeconds, now)
    if stabilized > proposal:
        limits.append("stabilization")
        words.append(f"scaleDown stabilization window {policy.behavior.scaleDown.stabilizationWindowSeconds}s "
                     f"(highest recent recommendation {down_rec})")
    elif stabilized < proposal:
        limits.append("stabilization")
        words.append(f"scaleUp stabilization window {policy.behavior.scaleUp.stabilizationWindowSeconds}s "
                     f"(lowest recent recommendation {up_rec})")

    desired = stabilized
    if stabilized > current:  # convertDesiredReplicasWithBehaviorRate, scale-up branch
        limit, rule = rate_limit(current, policy.behavior.scaleUp, hist.scale_events, now, up=True)
        limit = max(limit, current, 1 if current == 0 else 0)
        if policy.maxReplicas > limit:
            allowed, label, word = limit, rule, rule
        else:
            allowed, label, word = policy.maxReplicas, "max", f"maxReplicas {policy.maxReplicas}"
        if stabilized > allowed:
            desired = allowed
            limits.append(label)
            words.append(word)
    elif stabilized < current:  # scale-down branch
        limit, rule = rate_limit(current, policy.behavior.scaleDown, hist.scale_events, now, up=False)
        limit = min(limit, current)
        if floor < limit:
            allowed, label, word = limit, rule, rule
        elif active is False and floor == 1:
            allowed, label, word = 1, "cooldown", cooldown_note
        elif floor != policy.minReplicas:
            allowed, label, word = floor, "activation", "active, so at least 1 replica"
        else:
            allowed, label, word = floor, "min", f"minReplicas {floor}"
        if stabilized < allowed:
            desired = allowed
            limits.append(label)
            words.append(word)

    if current == 0 and desired > 0:
        why = f"active, scaling from zero: {why}"
    return done(desired, why, limits, recommendation=proposal, active=active, sentence_limits=words,
                seeded=seeded)


def _spec(policy: ServicePolicy, name: str) -> MetricSpec:
    return next(m for m in policy.metrics if m.name == name)


def decide_all(policy: AutoscalingPolicy, snapshots: Mapping[str, Snapshot], now: datetime) -> list[Decision]:
    """One decision per service that has a snapshot, in the policy's order."""
    return [decide(name, svc, snapshots[name], now) for name, svc in policy.services.items() if name in snapshots]
