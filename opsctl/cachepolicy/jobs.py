"""The daemon's cache job: enforce ``policies/cache.yaml`` and say how the hit rate compares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings


def job_cache_policy(settings: Settings, policy_dir: Path) -> str:
    """Apply the cache policy (CONFIG SET, published TTLs; audited ``cache.apply`` when anything
    changed) and report the search hit rate against the target, in one sentence."""
    from opsctl.cachepolicy import ops
    from opsctl.cachepolicy.policy import CachePolicy
    from opsctl.policy import load

    policy = load(CachePolicy, "cache", directory=policy_dir)
    _, sentence = ops.apply(settings, policy, do_apply=True, reason="daemon: cache policy")
    search = ops.status(settings, policy)["search_cache"]
    rate = search["hit_rate"]
    measured = "no lookups" if rate is None else f"{rate:.2f}"
    return (f"{sentence}; search hit rate {measured} ({search['source']}) vs target "
            f"{policy.hitRate.target:.2f}: {search['verdict']}")
