"""The tuner: the cheapest policy (replica-minutes) whose SLO violation is no worse than the current one's.

It searches a grid around the policy: every metric's target times ``TARGET_FACTORS``, the
scale-down stabilization window in ``DOWN_WINDOWS`` (and the current one), and the scale-up rate
policies as they are or twice as fast. Without an SLO the bar is the under-provisioned time. Ties
go to fewer scale events, then to the candidate closest to the current policy (the grid's order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from opsctl.scaling.policy import MAX_REPLICAS, ServicePolicy
from opsctl.simulate.compare import Result, simulate
from opsctl.simulate.model import Model, Trace
from opsctl.simulate.summary import Summary

TARGET_FACTORS = (1.0, 0.75, 1.25, 1.5, 2.0, 0.5)
DOWN_WINDOWS = (0, 60, 120, 300, 600)
UP_SPEEDS = (1, 2)


def _with_target(policy: ServicePolicy, factor: float) -> ServicePolicy:
    metrics = []
    for m in policy.metrics:
        field = m.target.FIELD_OF[m.target.type]
        amount = m.target.amount * factor
        value: float | int = max(1, min(10_000, round(amount))) if m.target.type == "Utilization" else amount
        metrics.append(m.model_copy(update={"target": m.target.model_copy(update={field: value})}))
    return policy.model_copy(update={"metrics": metrics})


def _with_behavior(policy: ServicePolicy, down_window: int, up_speed: int) -> ServicePolicy:
    up, down = policy.behavior.scaleUp, policy.behavior.scaleDown
    if up_speed != 1:
        up = up.model_copy(update={"policies": [p.model_copy(update={"value": min(MAX_REPLICAS, p.value * up_speed)})
                                                for p in up.policies]})
    down = down.model_copy(update={"stabilizationWindowSeconds": down_window})
    return policy.model_copy(update={"behavior": policy.behavior.model_copy(update={"scaleUp": up,
                                                                                   "scaleDown": down})})


def _windows(policy: ServicePolicy) -> tuple[int, ...]:
    """The scale-down windows tried: the current one first, then the others of DOWN_WINDOWS."""
    current = policy.behavior.scaleDown.stabilizationWindowSeconds
    return (current, *(w for w in DOWN_WINDOWS if w != current))


def candidates(policy: ServicePolicy) -> Iterator[ServicePolicy]:
    """The grid, the current policy first."""
    for factor in TARGET_FACTORS:
        targeted = _with_target(policy, factor)
        for window in _windows(policy):
            for speed in UP_SPEEDS:
                yield _with_behavior(targeted, window, speed)


def count(policy: ServicePolicy) -> int:
    """How many candidates the grid holds (the progress bar's total)."""
    return len(TARGET_FACTORS) * len(_windows(policy)) * len(UP_SPEEDS)


def violation(summary: Summary) -> float:
    """What must not get worse: SLO violation, or under-provisioned time without an SLO."""
    return summary.slo_violation_seconds if summary.slo_violation_seconds is not None \
        else summary.underprovisioned_seconds


@dataclass(frozen=True)
class Tuned:
    current: Result
    best: Result
    tried: int

    @property
    def improved(self) -> bool:
        return self.best.summary.replica_minutes < self.current.summary.replica_minutes


def tune(service: str, policy: ServicePolicy, trace: Trace, model: Model,
         progress: Callable[[], None] | None = None) -> Tuned:
    """Search the grid; ``progress`` is called after each candidate."""
    current: Result | None = None
    best: Result | None = None
    tried = 0
    for candidate in candidates(policy):
        result = simulate(service, "tuned", candidate, trace, model)
        tried += 1
        if progress is not None:
            progress()
        if current is None:
            current = Result("policy", policy, result.run, result.summary)
            best = result
            continue
        assert best is not None
        if violation(result.summary) > violation(current.summary):
            continue
        key = (result.summary.replica_minutes, result.summary.scale_events)
        if key < (best.summary.replica_minutes, best.summary.scale_events):
            best = result
    assert current is not None and best is not None
    return Tuned(current, best, tried)
