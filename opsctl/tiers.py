"""Which tiers ``opsctl tenant create|update --tier`` may give: the ones of the tenants policy
(``<policy dir>/tenants.yaml``, ``core.tiers.TenantsPolicy``), checked before anything is written."""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError


def checked_tier(name: str, directory: Path | None = None) -> str:
    """``name`` if the tenants policy defines it; else a ConfigError naming the tiers it has (or
    the policy's own problem, with its file and line)."""
    from core.tiers import TenantsPolicy, check_tier_name
    from opsctl.policy import load, policy_dir

    path = policy_dir(directory) / "tenants.yaml"
    if not path.exists():
        raise ConfigError(f"no tenants policy at {path}: define the tiers there (docs/tenants.md) "
                          "or pass --policy-dir")
    try:
        return check_tier_name(load(TenantsPolicy, "tenants", path), name)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
