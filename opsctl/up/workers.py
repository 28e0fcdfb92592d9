"""How many ingest workers ``opsctl up`` starts with: a pure decision, tested by table.

``--workers N`` when given. Otherwise the count the pool had at the autoscaler's last word on it
(its last ``scale.decide`` or ``scale.set`` for the policy's ``local`` service, read by
``opsctl.up.resume``): a restart then resumes where the autoscaler had brought the pool instead
of going back to the default and waiting out a scale-down window to get there again. Only when
that word is recent (:data:`RESUME_WITHIN`: a count from an earlier day says little about today's
load) and within the policy's ``minReplicas..maxReplicas`` as it is now; else the default (2).
Either way the autoscaler goes on deciding from the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_WORKERS = 2
RESUME_WITHIN = timedelta(hours=24)


@dataclass(frozen=True)
class LastCount:
    """The pool's count at the autoscaler's last word: what it set (an applied change), else what it saw."""

    service: str
    replicas: int
    at: datetime


@dataclass(frozen=True)
class Workers:
    count: int
    why: str  # shown next to the count when opsctl up starts


def _ago(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def initial_workers(requested: int | None, last: LastCount | None, bounds: tuple[int, int] | None, now: datetime,
                    default: int = DEFAULT_WORKERS, within: timedelta = RESUME_WITHIN) -> Workers:
    """The count to start with, and why (pure). ``bounds``: the local service's (minReplicas, maxReplicas)."""
    if requested is not None:
        return Workers(requested, "--workers")
    if last is None or bounds is None:
        return Workers(default, "the default; --workers N to choose")
    age = now - last.at
    if age > within:
        return Workers(default, f"the default: the autoscaler's last count ({last.replicas}, {_ago(age)}) is older "
                                f"than {within.total_seconds() / 3600:g} h")
    low, high = bounds
    if not low <= last.replicas <= high:
        return Workers(default, f"the default: the autoscaler's last count ({last.replicas}) is outside "
                                f"{last.service}'s minReplicas..maxReplicas ({low}..{high})")
    return Workers(last.replicas, f"as the autoscaler left {last.service} {_ago(age)}; --workers N to choose")
