"""``policies/slow-queries.yaml`` (kind ``slow-queries``): what the database logs as slow.

Example::

    kind: slow-queries
    thresholdMs: 250          # log_min_duration_statement: statements taking longer are logged
    parameterMaxLength: 64    # log_parameter_max_length: bytes of each bound parameter logged
                              # (the company of `company_id = $1` is read from them)
    apply: alter-system       # how opsctl sets them: ALTER SYSTEM + pg_reload_conf(); or external:
                              # the platform sets them (CloudNativePG's Cluster parameters, an RDS
                              # parameter group) and opsctl only reports a drift
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from opsctl.policy import PolicyModel, load

MAX_THRESHOLD_MS = 3_600_000


class SlowQueriesPolicy(PolicyModel):
    """``policies/slow-queries.yaml``; ``enabled: false`` turns the logging off (-1)."""

    enabled: bool = True
    threshold_ms: int = Field(250, alias="thresholdMs", ge=0, le=MAX_THRESHOLD_MS,
                              description="log_min_duration_statement, in milliseconds (0: every statement)")
    parameter_max_length: int = Field(64, alias="parameterMaxLength", ge=-1, le=1_000_000,
                                      description="log_parameter_max_length: bytes of each parameter logged "
                                      "(-1: whole, 0: none)")
    apply: Literal["alter-system", "external"] = Field(
        "alter-system", description="alter-system: opsctl sets the settings (ALTER SYSTEM, reload); external: "
        "the platform does (CloudNativePG's Cluster parameters), opsctl reports a drift only")

    def settings(self) -> dict[str, str]:
        """The server settings this policy wants, as ``pg_settings`` shows them (milliseconds, bytes)."""
        return {"log_min_duration_statement": str(self.threshold_ms if self.enabled else -1),
                "log_parameter_max_length": str(self.parameter_max_length),
                "log_timezone": "UTC"}  # the log's times, as opsctl reads them


def policy_path(path: Path | None = None, directory: Path | None = None) -> Path:
    from opsctl.policy import policy_dir

    return path or policy_dir(directory) / "slow-queries.yaml"


def load_policy(path: Path | None = None, directory: Path | None = None) -> SlowQueriesPolicy:
    """The policy of ``path``, else ``<policy dir>/slow-queries.yaml`` (a PolicyError when missing or invalid)."""
    return load(SlowQueriesPolicy, "slow-queries", policy_path(path, directory))
