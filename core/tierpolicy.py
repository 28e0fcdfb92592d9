"""The tenants policy a process runs with: ``settings.tenants_policy`` read and checked, else the
built-in single tier. The API reads it for rate limits and quotas, the ingest workers for the fair
claim's weights; both read it once, at start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import ConfigError
from core.tiers import TenantsPolicy, builtin_policy, parse_policy

if TYPE_CHECKING:
    from core.config import Settings


def tenants_policy(settings: Settings) -> TenantsPolicy:
    """The tiers of ``settings.tenants_policy``, else the built-in single tier (a ConfigError names
    the file and line of a problem: the process does not start on a bad policy)."""
    if settings.tenants_policy is None:
        return builtin_policy(settings.rate_limit_per_second, settings.rate_limit_burst, settings.search_max_k)
    try:
        text = settings.tenants_policy.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{settings.tenants_policy}: cannot read the tenants policy: {exc}") from None
    return parse_policy(text, str(settings.tenants_policy))
