"""Which companies have their own HNSW index: the pure plan of ``opsctl index tenants`` and the daemon.

A company holding at least ``min_rows`` chunks and at most ``max_share`` of all chunks gets its
own partial index; a larger share is served as well by the shared graph (its filter keeps most
rows), a smaller company is searched exactly. Hysteresis: an index once built is kept until the
company falls under ``min_rows·(1 - h)`` or rises over ``max_share·(1 + h)``, so a company near
either line does not make the daemon build and drop its index on alternate nights. An index
left incomplete (an interrupted build, a partition missing its piece) is completed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from opsctl.vindex.policy import TenantIndexes


class Action(StrEnum):
    build = "build"
    complete = "complete"
    drop = "drop"


@dataclass(frozen=True)
class OwnIndex:
    """A company's own index as the catalog has it: ``valid`` when every partition has its piece."""

    company_id: int
    valid: bool


@dataclass(frozen=True)
class Move:
    action: Action
    company_id: int
    rows: int
    share: float
    reason: str


def _wanted(rows: int, share: float, has: bool, policy: TenantIndexes) -> tuple[bool, str]:
    """Whether the company should have its own index, and why (the line it is on the side of)."""
    low = policy.min_rows * (1 - policy.hysteresis) if has else policy.min_rows
    high = min(1.0, policy.max_share * (1 + policy.hysteresis)) if has else policy.max_share
    if not policy.enabled:
        return False, "tenant indexes disabled by the policy"
    if rows < low:
        return False, f"{rows} chunks < {low:g}" + (" (min_rows less the hysteresis)" if has else " (min_rows)")
    if share > high:
        return False, f"share {share:.1%} > {high:.1%}" + (" (max_share plus the hysteresis)" if has
                                                            else " (max_share): the shared graph serves it")
    return True, f"{rows} chunks >= {low:g}, share {share:.1%} <= {high:.1%}"


def plan_tenant_indexes(rows: Mapping[int, int], current: Mapping[int, OwnIndex],
                        policy: TenantIndexes) -> list[Move]:
    """The moves that bring the own indexes in line with ``policy``: drops first (they free work for
    the writes), then completions, then builds, largest company first, at most ``max_builds``
    builds and completions together (pure)."""
    total = sum(rows.values())
    drops: list[Move] = []
    builds: list[Move] = []
    for company in sorted(set(rows) | set(current)):
        n = rows.get(company, 0)
        share = n / total if total else 0.0
        own = current.get(company)
        wanted, why = _wanted(n, share, own is not None, policy)
        if own is not None and not wanted:
            drops.append(Move(Action.drop, company, n, share, why))
        elif own is not None and not own.valid:
            builds.append(Move(Action.complete, company, n, share, "incomplete: a partition lacks its piece"))
        elif own is None and wanted:
            builds.append(Move(Action.build, company, n, share, why))
    builds.sort(key=lambda m: (m.action is not Action.complete, -m.rows, m.company_id))
    return drops + builds[:policy.max_builds]


def sentence(moves: list[Move], applied: bool) -> str:
    """One sentence for the daemon's log and the CLI."""
    if not moves:
        return "tenant indexes in line with the policy: nothing to do"
    done = {Action.build: "built", Action.complete: "completed", Action.drop: "dropped"}
    return "; ".join(f"{done[m.action] if applied else 'would ' + m.action.value} company {m.company_id}'s "
                     f"index ({m.reason})" for m in moves)
