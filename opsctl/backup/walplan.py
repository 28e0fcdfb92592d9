"""Pure decisions of the WAL pusher: what to push next to each remote repository, and how far behind
each repository is (its push lag: the RPO that a lost host would cost).

Inputs: the spool listing (name, size, mtime: the time ``archive_command`` wrote it), the names each
remote repository holds *verified* (uploaded, then its size read back) and the clock. No I/O here;
:mod:`opsctl.backup.walpush` acts.

Rules:
- Files to push: WAL segments, ``.partial`` segments, ``.backup`` and timeline ``.history`` files;
  nothing else (``archive_command``'s ``*.tmp`` files are half-written).
- Oldest first (by the time they were archived, then by name), at most ``batch`` per repository.
- Lag of a repository: the age of its oldest file that is not verified there (0 when none waits).
- The spool is the local repository's WAL directory: the pusher removes nothing from it; that
  repository's prune removes WAL, held back by :func:`hold_unpushed` until every remote repository
  holds it verified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsctl.backup.plan import PrunePlan

_ARCHIVABLE = re.compile(r"^(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$")


def archivable(name: str) -> bool:
    """Whether ``name`` is a file PostgreSQL archives (segment, partial segment, backup label, history)."""
    return bool(_ARCHIVABLE.match(name))


def wal_order(name: str) -> tuple[str, str, str]:
    """A sort key putting archived files in WAL order: by segment (log and segment number), then by
    timeline, then by name; a ``.history`` file before every segment (it is needed to switch)."""
    if name.endswith(".history"):
        return ("", name[:8], name)
    return (name[8:24], name[:8], name)


@dataclass(frozen=True)
class SpoolFile:
    name: str
    size: int
    mtime: float  # seconds since the epoch: when archive_command wrote it


@dataclass(frozen=True)
class RepoPush:
    repo: str
    push: tuple[str, ...]  # the next files to upload there, oldest first
    waiting: int  # files in the spool not yet verified there
    lag_seconds: float  # age of the oldest of them; 0 when none waits
    oldest: str | None  # its name


@dataclass(frozen=True)
class WalPlan:
    repos: tuple[RepoPush, ...]


def _order(spool: Sequence[SpoolFile]) -> list[SpoolFile]:
    return sorted((f for f in spool if archivable(f.name)), key=lambda f: (f.mtime, f.name))


def missing_from(name: str, verified: Mapping[str, AbstractSet[str]]) -> list[str]:
    """The repositories (of ``verified``'s keys) that do not hold ``name`` verified."""
    return sorted(repo for repo, names in verified.items() if name not in names)


def plan_push(spool: Sequence[SpoolFile], verified: Mapping[str, AbstractSet[str]], now: float, *,
              batch: int = 16) -> WalPlan:
    """The plan for one cycle. ``verified``: for each remote repository that must hold the WAL, the
    names it holds verified."""
    ordered = _order(spool)
    repos = []
    for repo in sorted(verified):
        waiting = [f for f in ordered if f.name not in verified[repo]]
        oldest = waiting[0] if waiting else None
        lag = max(0.0, now - min(f.mtime for f in waiting)) if waiting else 0.0
        repos.append(RepoPush(repo, tuple(f.name for f in waiting[:batch]), len(waiting), lag,
                              oldest.name if oldest else None))
    return WalPlan(tuple(repos))


def hold_unpushed(plan: PrunePlan, verified: Mapping[str, AbstractSet[str]]) -> PrunePlan:
    """``plan`` with every WAL removal of a file not yet verified on every remote repository turned
    into a keep: the local repository's WAL directory is the spool, and nothing leaves it before its
    remote copies are verified."""
    from opsctl.backup.plan import Item

    wal = []
    for item in plan.wal:
        missing = missing_from(item.name, verified) if item.action == "remove" else []
        if missing:
            item = Item(item.name, item.kind, "keep", f"not yet pushed to {', '.join(missing)}")
        wal.append(item)
    return replace(plan, wal=wal)


def retry_after(failures: int, first: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before trying a repository again after ``failures`` failed cycles in a row:
    1, 2, 4 … up to a minute (0 when nothing failed)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, first * 2 ** min(failures - 1, 32)))
