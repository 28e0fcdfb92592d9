"""The daemon's autoscaling job: one acting cycle over every service of the policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import OperationFailed

if TYPE_CHECKING:
    from core.config import Settings


def job_autoscale(settings: Settings, policy_dir: Path) -> str:
    """Decide and apply every service in ``<policy_dir>/autoscaling.yaml``; one sentence back.

    Raises OperationFailed when no service could be decided (a partial failure is in the sentence).
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
    if outcomes and not any(o.decision for o in outcomes):
        raise OperationFailed(sentence)
    return sentence
