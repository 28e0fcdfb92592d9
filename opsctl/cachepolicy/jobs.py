"""The daemon's cache job: enforce ``policies/cache.yaml`` and say how the hit rate compares."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.cachepolicy.policy import CachePolicy


def job_cache_policy(settings: Settings, policy_dir: Path) -> str:
    """Apply the cache policy (CONFIG SET, published TTLs; audited ``cache.apply`` when anything
    changed) and report the search hit rate against the target, in one sentence."""
    from opsctl.cachepolicy.policy import CachePolicy
    from opsctl.policy import load

    return cache_policy_cycle(settings, load(CachePolicy, "cache", directory=policy_dir), datetime.now(UTC))


def cache_policy_cycle(settings: Settings, policy: CachePolicy, now: datetime) -> str:
    """One run of the job at ``now``: the hit rate is the one `status` and `cache status` show."""
    from opsctl.cachepolicy import hitrate, ops

    _, sentence = ops.apply(settings, policy, do_apply=True, reason="daemon: cache policy")
    return f"{sentence}; search hit rate {hitrate.report(settings, policy, now)['text']}"
