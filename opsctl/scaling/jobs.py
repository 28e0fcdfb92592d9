"""The daemon's autoscaling job: one acting cycle over every service of the policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import OperationFailed

if TYPE_CHECKING:
    from core.config import Settings


def job_autoscale(settings: Settings, policy_dir: Path) -> str:
    """Decide and apply every service in ``<policy_dir>/autoscaling.yaml``; one sentence back.

    Raises OperationFailed, after acting on every service it could, when any service failed (it could
    not be decided or applied, or every one of its metrics failed and its fallback decided): the same
    rule as ``opsctl scale``'s exit code 1, so a blind autoscaler shows as a failing job.
    """
    from opsctl.policy import load
    from opsctl.scaling import service
    from opsctl.scaling.policy import AutoscalingPolicy

    policy = load(AutoscalingPolicy, "autoscaling", directory=policy_dir)
    outcomes = service.run(settings, policy, apply=True)
    parts = []
    for o in outcomes:
        if o.decision is None:
            parts.append(f"{o.service}: could not decide: {o.error}")
        elif o.error:
            parts.append(f"{o.service}: {o.decision.reason} (not applied: {o.error})")
        else:
            verb = "" if o.applied or not o.decision.change else " (not applied)"
            parts.append(f"{o.service}: {o.decision.reason}{verb}")
    sentence = "; ".join(parts) or "no services in the autoscaling policy"
    if any(o.failure for o in outcomes):
        raise OperationFailed(sentence)
    return sentence
