"""Policies side by side: the service's own, the Kubernetes HPA defaults, another file's.

``hpa-default`` keeps what the HPA takes from the user (min/max replicas, metrics and targets) and
sets what it defaults: tolerance 0.1 both ways (no per-metric tolerance), scale-up
``max(100 %, 4 pods)`` per 15 s with no window, scale-down 100 % per 15 s after a 300 s window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsctl.scaling.policy import Behavior, ServicePolicy, Tolerance
from opsctl.simulate.model import Model, Run, Trace, replay
from opsctl.simulate.summary import Summary, summarize

HPA_DEFAULT = "hpa-default"


def hpa_default(policy: ServicePolicy) -> ServicePolicy:
    """``policy`` with the Kubernetes defaults for everything the HPA defaults."""
    metrics = [m.model_copy(update={"tolerance": None}) for m in policy.metrics]
    return policy.model_copy(update={"tolerance": Tolerance.model_validate({}), "metrics": metrics,
                                     "behavior": Behavior.model_validate({})})


@dataclass(frozen=True)
class Result:
    """One policy's replay: its name (``policy``, ``hpa-default`` or a file), the run, the summary."""

    name: str
    policy: ServicePolicy
    run: Run
    summary: Summary

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "timeline": [p.as_dict() for p in self.run.timeline],
                "summary": self.summary.as_dict()}


def simulate(service: str, name: str, policy: ServicePolicy, trace: Trace, model: Model) -> Result:
    run = replay(service, policy, trace, model)
    return Result(name, policy, run, summarize(run, model, policy.behavior.scaleDown.stabilizationWindowSeconds))


def compare(service: str, policies: list[tuple[str, ServicePolicy]], trace: Trace, model: Model) -> list[Result]:
    """Each named policy through the same trace and model, in order."""
    return [simulate(service, name, policy, trace, model) for name, policy in policies]
