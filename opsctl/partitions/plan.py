"""The rotation planner: ``plan_rotation(partitions, policy, now) -> list[Step]`` (pure).

Boundaries fall on local midnight in the policy's time zone: the first of the month, a Monday
(ISO weeks) or every day. Names: ``<table>_pYYYY_MM`` (months, the core's own naming),
``<table>_pYYYY_wWW`` (ISO weeks), ``<table>_pYYYY_MM_DD`` (days).

The plan, per table, in the order it is applied:

1. ``create`` every interval from the current one to ``premake`` ahead that no partition covers
   (from the clock, not from data, so a quiet month still gets its partition);
2. ``move_default_rows`` for every interval that has rows in the default partition (instead of
   ``create``: a partition cannot be created over rows the default holds), and to resume a move
   that a crash interrupted (its standalone table exists);
3. for every partition entirely older than the retention window: ``detach`` (``finalize_detach``
   when an earlier concurrent detach was interrupted), ``archive`` (dump + sha256, when the policy
   archives), ``drop`` (only after the archive verifies). A standalone table left by an interrupted
   rotation resumes at ``archive``. The current and future intervals are never expired.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from core.humanize import plural
from opsctl.partitions.policy import Interval, PartitionsPolicy, TablePolicy

Action = Literal["create", "move_default_rows", "finalize_detach", "detach", "archive", "drop"]
PHASES: dict[str, int] = {"create": 0, "move_default_rows": 1, "finalize_detach": 2, "detach": 2,
                          "archive": 3, "drop": 4}



_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def parse_bound(expression: str | None) -> tuple[datetime, datetime] | None:
    """The [start, end) of a range partition from ``pg_get_expr(relpartbound)``, in UTC; None for
    DEFAULT or MINVALUE/MAXVALUE bounds."""
    match = _BOUND.search(expression or "")
    if not match:
        return None
    start, end = (datetime.fromisoformat(g).astimezone(UTC) for g in match.groups())
    return start, end


@dataclass(frozen=True)
class Partition:
    """One partition (or the default partition, or a standalone leftover) as the planner sees it."""

    table: str
    name: str
    start: datetime | None = None
    end: datetime | None = None
    is_default: bool = False
    attached: bool = True
    detach_pending: bool = False
    rows: int = 0
    # default partition only: (local day start, rows) for the days that hold rows
    default_days: tuple[tuple[datetime, int], ...] = ()


@dataclass(frozen=True)
class Step:
    action: Action
    table: str
    partition: str
    start: datetime
    end: datetime
    reason: str
    rows: int = 0
    details: dict[str, str] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {"action": self.action, "table": self.table, "partition": self.partition,
                "start": self.start.isoformat(), "end": self.end.isoformat(), "rows": self.rows,
                "reason": self.reason}


# --- intervals (pure calendar arithmetic in the policy's zone) ----------------------------------


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _first_day(at: datetime, interval: Interval, tz: ZoneInfo) -> date:
    local = at.astimezone(tz).date()
    if interval == "month":
        return local.replace(day=1)
    if interval == "week":
        return local - timedelta(days=local.weekday())
    return local


def _add(day: date, interval: Interval, n: int) -> date:
    if interval == "month":
        index = day.year * 12 + day.month - 1 + n
        return date(index // 12, index % 12 + 1, 1)
    return day + timedelta(days=n * (7 if interval == "week" else 1))


def add_intervals(at: datetime, interval: Interval, n: int) -> datetime:
    """``at`` moved ``n`` intervals, calendar-wise in ``at``'s own zone (months keep the day if it exists)."""
    if interval != "month":
        return at + timedelta(days=n * (7 if interval == "week" else 1))
    index = at.year * 12 + at.month - 1 + n
    return at.replace(year=index // 12, month=index % 12 + 1)


@dataclass(frozen=True)
class Range:
    table: str
    first: date  # first local day
    start: datetime  # UTC
    end: datetime  # UTC
    name: str


def interval_range(table: str, at: datetime, tp: TablePolicy, shift: int = 0) -> Range:
    """The interval holding ``at``, moved ``shift`` intervals; bounds in UTC, named."""
    tz = ZoneInfo(tp.time_zone)
    first = _add(_first_day(at, tp.interval, tz), tp.interval, shift)
    nxt = _add(first, tp.interval, 1)
    return Range(table, first, _local_midnight(first, tz), _local_midnight(nxt, tz),
                 partition_name(table, first, tp.interval))


def partition_name(table: str, first: date, interval: Interval) -> str:
    if interval == "month":
        return f"{table}_p{first:%Y_%m}"
    if interval == "week":
        year, week, _ = first.isocalendar()
        return f"{table}_p{year:04d}_w{week:02d}"
    return f"{table}_p{first:%Y_%m_%d}"


_NAME = {
    "month": re.compile(r"_p(\d{4})_(\d{2})$"),
    "week": re.compile(r"_p(\d{4})_w(\d{2})$"),
    "day": re.compile(r"_p(\d{4})_(\d{2})_(\d{2})$"),
}


def range_of_name(table: str, name: str, tp: TablePolicy) -> Range | None:
    """The interval a partition name stands for under this policy, or None if it is not one of ours."""
    if not name.startswith(table + "_p"):
        return None
    match = _NAME[tp.interval].search(name)
    if not match or name != table + match.group(0):
        return None
    parts = [int(g) for g in match.groups()]
    try:
        if tp.interval == "month":
            first = date(parts[0], parts[1], 1)
        elif tp.interval == "week":
            first = date.fromisocalendar(parts[0], parts[1], 1)
        else:
            first = date(parts[0], parts[1], parts[2])
    except ValueError:
        return None
    tz = ZoneInfo(tp.time_zone)
    return Range(table, first, _local_midnight(first, tz), _local_midnight(_add(first, tp.interval, 1), tz),
                 partition_name(table, first, tp.interval))


def retention_cutoff(now: datetime, tp: TablePolicy) -> datetime | None:
    """Partitions ending at or before this instant are expired (None: keep forever)."""
    if tp.retention is None:
        return None
    return interval_range("", now, tp, -tp.retention).start


# --- the planner ---------------------------------------------------------------------------------


def _overlaps(start: datetime, end: datetime, parts: Iterable[Partition]) -> Partition | None:
    for p in parts:
        if p.start is not None and p.end is not None and p.start < end and start < p.end:
            return p
    return None


def _expire_steps(p: Partition, start: datetime, end: datetime, tp: TablePolicy, why: str) -> list[Step]:
    steps: list[Step] = []
    if p.attached:
        action: Action = "finalize_detach" if p.detach_pending else "detach"
        steps.append(Step(action, p.table, p.name, start, end, why, p.rows))
    if tp.archive:
        steps.append(Step("archive", p.table, p.name, start, end, why, p.rows))
    steps.append(Step("drop", p.table, p.name, start, end,
                      why + ("; archive verified first" if tp.archive else "; not archived (policy)"), p.rows))
    return steps


def _plan_table(table: str, parts: Sequence[Partition], tp: TablePolicy, now: datetime) -> list[Step]:
    current = interval_range(table, now, tp)
    cutoff = retention_cutoff(now, tp)
    keep = f"retention {plural(tp.retention, tp.interval)}" if tp.retention is not None else "no retention"
    attached = [p for p in parts if p.attached and not p.is_default]
    standalone = [p for p in parts if not p.attached and not p.is_default]
    default = next((p for p in parts if p.is_default), None)
    steps: list[Step] = []

    def expired(end: datetime) -> bool:
        return cutoff is not None and end <= cutoff and end <= current.start

    # intervals that hold rows in the default partition
    stray: dict[date, tuple[Range, int]] = {}
    for day, count in default.default_days if default else ():
        r = interval_range(table, day, tp)
        prev = stray.get(r.first)
        stray[r.first] = (r, count + (prev[1] if prev else 0))

    # standalone leftovers of an interrupted rotation, recognised by name under this policy
    resumed: set[str] = set()
    for p in standalone:
        named = range_of_name(table, p.name, tp)
        if named is None:
            continue
        resumed.add(p.name)
        if expired(named.end):
            steps += _expire_steps(p, named.start, named.end, tp, f"detached earlier, older than {keep} (resuming)")
        else:
            rows = stray.pop(named.first, (named, 0))[1]
            steps.append(Step("move_default_rows", table, p.name, named.start, named.end,
                              "resuming an interrupted move out of the default partition", rows))

    # premake from the clock, plus every interval with stray rows
    wanted: dict[date, tuple[Range, int]] = {}
    for i in range(tp.premake + 1):
        r = interval_range(table, now, tp, i)
        wanted[r.first] = (r, 0)
    wanted.update(stray)
    for first in sorted(wanted):
        r, rows = wanted[first]
        if r.name in resumed:
            continue
        if any(p.start == r.start and p.end == r.end for p in attached):
            continue
        clash = _overlaps(r.start, r.end, attached)
        if clash is not None:
            continue  # another interval's partition covers part of it: leave it to that one
        if rows:
            steps.append(Step("move_default_rows", table, r.name, r.start, r.end,
                              f"{plural(rows, 'row')} of this range sit in the default partition", rows))
            if expired(r.end):
                steps += _expire_steps(Partition(table, r.name, r.start, r.end, rows=rows), r.start, r.end, tp,
                                       f"older than {keep}")
        else:
            ahead = _intervals_between(current, r, tp)
            steps.append(Step("create", table, r.name, r.start, r.end,
                              "current interval" if ahead == 0 else f"premake: {ahead} ahead of the current one"))

    # expiry of attached partitions; never the current or a future one
    for p in attached:
        if p.start is None or p.end is None or not expired(p.end):
            continue
        steps += _expire_steps(p, p.start, p.end, tp, f"older than {keep}")
    return steps


def _intervals_between(current: Range, r: Range, tp: TablePolicy) -> int:
    n = 0
    first = current.first
    while first < r.first:
        first = _add(first, tp.interval, 1)
        n += 1
    return n


def plan_rotation(partitions: Sequence[Partition], policy: PartitionsPolicy, now: datetime) -> list[Step]:
    """Every step that brings the partitions in line with the policy at ``now``, in apply order."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    steps: list[Step] = []
    for table, tp in policy.tables.items():
        steps += _plan_table(table, [p for p in partitions if p.table == table], tp, now)
    order: dict[str, int] = {name: i for i, name in enumerate(policy.tables)}
    # stable: creates and moves of every table first, then expiry, each table's steps in their order
    return sorted(steps, key=lambda s: (PHASES[s.action] > 1, order[s.table]))
