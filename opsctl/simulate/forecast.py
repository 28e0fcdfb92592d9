"""A seasonal forecast of demand, for a preview of predictive scaling that never acts.

The forecast for ``t`` is the demand one ``season`` earlier (seasonal naive; with two seasons or
more of history, the mean of the same moment in every earlier season). It exists from ``t =
season`` on, so a trace needs at least one season (a day by default) before it forecasts anything.
Its error is the MAPE over the moments that have both a forecast and a demand above zero.

The preview replays the policy with a floor: at each sync the replicas that would serve the demand
forecast for ``lead`` seconds later (the startup time plus one sync) at the policy's own target
utilization (``ceil(forecast / (capacity * target%))``, or ``forecast / capacity`` without a
Utilization metric). The floor raises a decision and never lowers one: a forecast never scales in
(AWS predictive scaling's rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from opsctl.scaling.policy import ServicePolicy
from opsctl.simulate.model import SimulationError, Trace

DAY = 86400.0


@dataclass(frozen=True)
class Forecast:
    season: float
    mape: float | None  # percent; None when no moment had a forecast and demand > 0
    points: int  # moments with both a forecast and a demand above zero


def predict(trace: Trace, season: float, t: float) -> float | None:
    """The demand forecast for ``t`` from the seasons before it (None before the first season ends)."""
    past = []
    k = 1
    while t - k * season >= trace.times[0] - 1e-9:
        past.append(trace.demand_at(t - k * season))
        k += 1
    return sum(past) / len(past) if past else None


def check_history(trace: Trace, season: float) -> None:
    if not season > 0:
        raise SimulationError(f"the season must be positive, got {season}")
    if trace.duration < season + trace.step:
        raise SimulationError(f"--forecast needs at least one season ({season:.0f} s) of history before the "
                              f"moments it forecasts: the trace lasts {trace.duration:.0f} s")


def evaluate(trace: Trace, season: float = DAY) -> Forecast:
    """The forecast's MAPE over the trace's own rows."""
    check_history(trace, season)
    errors = []
    for t, actual in zip(trace.times, trace.demand, strict=True):
        guess = predict(trace, season, t)
        if guess is not None and actual > 0:
            errors.append(abs(actual - guess) / actual)
    return Forecast(season, round(100 * sum(errors) / len(errors), 2) if errors else None, len(errors))


def target_share(policy: ServicePolicy) -> float:
    """The share of a replica's capacity the policy aims to use (its lowest Utilization target, else 1)."""
    shares = [m.target.amount / 100 for m in policy.metrics if m.target.type == "Utilization"]
    return min(shares) if shares else 1.0


def floor(trace: Trace, policy: ServicePolicy, capacity: float, lead: float,
          season: float = DAY) -> Callable[[float], int]:
    """Replicas a predictive scale-up would have asked for at ``t`` (0 without a forecast)."""
    share = target_share(policy)

    def replicas(t: float) -> int:
        guess = predict(trace, season, t + lead)
        if guess is None:
            return 0
        return math.ceil(guess / (capacity * share) - 1e-9)

    return replicas
