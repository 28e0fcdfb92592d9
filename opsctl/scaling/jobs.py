"""The daemon's autoscaling job: one acting cycle over every service of the policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import OperationFailed

if TYPE_CHECKING:
    from core.config import Settings


def job_autoscale(settings: Settings, policy_dir: Path) -> str:
    """Decide and apply every service in ``<policy_dir>/autoscaling.yaml``; one sentence back.

    Raises OperationFailed, after acting on every service it could, when a service could not be decided
    or its decision could not be applied. A service whose metrics all failed is not a failed run: its
    fallback decided (hold, or the static count), which is the policy working as written, and the
    sentence says the metrics failed. Metrics that keep failing are what alert
    AutoscalerMetricsUnavailable watches (``opsctl_scale_metric_errors_total``, over a window), so a
    daemon that starts before Prometheus' first scrape does not count a failed job at every start.
    (``opsctl scale`` still exits 1 then: someone asked for a decision from the metrics.)
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
    if any(o.error for o in outcomes):
        raise OperationFailed(sentence)
    return sentence
