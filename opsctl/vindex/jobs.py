"""The daemon's vector index job: measure recall, rebuild and vacuum where a trigger fired."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings


def job_index_maintenance(settings: Settings, policy_dir: Path) -> str:
    """One `opsctl index maintain --apply`; returns its one-sentence outcome."""
    from opsctl.vindex.service import load_policy, maintain

    return maintain(settings, load_policy(directory=policy_dir), apply=True).sentence()


def job_tenant_indexes(settings: Settings, policy_dir: Path) -> str:
    """One `opsctl index tenants --apply`: own HNSW indexes for the companies the policy names."""
    from opsctl.vindex.service import load_policy
    from opsctl.vindex.tenants_service import ReembedInProgress, tenant_indexes

    try:
        return tenant_indexes(settings, load_policy(directory=policy_dir), apply=True).sentence()
    except ReembedInProgress as exc:  # not a failure: the re-embed's switch carries the indexes; the next night runs
        return f"tenant indexes left as they are until the re-embed's switch: {exc}"
