"""Where a search reads: a pure decision over the replicas' last measurement (no I/O here).

Inputs: each replica's last measured health and replay lag (``Measured``), the bound
(``replica_max_lag_seconds``). Output: the replica to try, or the primary, with a reason for
``core_search_reads_total{target, reason}``:

| replicas                                   | target      | reason        |
|--------------------------------------------|-------------|---------------|
| none configured                            | primary     | no_replicas   |
| every one down (last check failed)         | primary     | down          |
| some up, every one at or over the bound    | primary     | lagging       |
| one or more up and under the bound         | the least lagging (then the first listed) | replica | fresh |

The freshness check is the second half (``fresh_enough``): the replica chosen is read in one
snapshot, starting with the company's ``data_version``; below the version the request knows
(read from the primary when it authenticated), the read goes to the primary with reason ``behind``.
A query on the replica cancelled by a recovery conflict is done again on the primary
(``conflict``); a replica that fails is marked down until its next check (``down``).
So a lag under the bound is what makes a replica worth trying; the data version is what makes its
answer acceptable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Target = Literal["primary", "replica"]
Reason = Literal["no_replicas", "down", "lagging", "fresh", "behind", "conflict"]


@dataclass(frozen=True)
class Measured:
    """One replica's last check: reachable or not, and its replay lag in seconds (``inf``: unknown)."""

    name: str
    up: bool
    lag_seconds: float = math.inf


@dataclass(frozen=True)
class Route:
    target: Target
    reason: Reason
    replica: str | None = None  # the replica's name when target is "replica"

    def describe(self) -> str:
        where = self.replica if self.replica else "the primary"
        return f"read from {where} ({self.reason})"


PRIMARY_NO_REPLICAS = Route("primary", "no_replicas")


def replica_names(count: int) -> list[str]:
    """``replica-1`` … in the order of ``database_replica_urls`` (what ``opsctl up`` names its standbys)."""
    return [f"replica-{i}" for i in range(1, count + 1)]


def choose(replicas: list[Measured], max_lag_seconds: float) -> Route:
    """The replica to read from, or the primary and why (the table in the module docstring)."""
    if not replicas:
        return PRIMARY_NO_REPLICAS
    up = [r for r in replicas if r.up]
    if not up:
        return Route("primary", "down")
    under = [(r.lag_seconds, i, r) for i, r in enumerate(up) if r.lag_seconds < max_lag_seconds]
    if not under:
        return Route("primary", "lagging")
    best = min(under, key=lambda t: (t[0], t[1]))[2]
    return Route("replica", "fresh", best.name)


def fresh_enough(replica_version: int | None, required_version: int) -> bool:
    """Whether the replica's snapshot holds the company's data at ``required_version`` or newer
    (``None``: the company is not on the replica yet)."""
    return replica_version is not None and replica_version >= required_version


def replay_lag(primary_lsn: int, replay_lsn: int | None, replay_age_seconds: float | None) -> float:
    """A standby's replay lag in seconds.

    ``primary_lsn`` is the primary's current WAL position, read *before* the standby's
    ``replay_lsn``; ``replay_age_seconds`` is ``now() - pg_last_xact_replay_timestamp()`` on the
    standby. Replayed up to where the primary was: 0, however long ago its last commit was (an idle
    primary is not a lagging standby). Behind: the age of the last transaction it replayed (what
    PostgreSQL's replay timestamp measures; an upper bound of what is missing). Behind with no
    transaction replayed since it started: unknown, ``inf``.
    """
    if replay_lsn is not None and replay_lsn >= primary_lsn:
        return 0.0
    if replay_age_seconds is None:
        return math.inf
    return max(0.0, replay_age_seconds)
