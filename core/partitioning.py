"""Monthly range partitions of ``documents`` and ``chunks``: names and bounds (pure).

The core premakes the current month and ``ahead`` months on every start, from the clock, so
partitions exist before rows arrive; rows outside them land in the default partition, which the
lifecycle tooling (``opsctl partitions``) drains.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PARTITIONED_TABLES = ("documents", "chunks")

# Storage parameters of each new partition. A chunk row (a 384-d vector is 1.5 kB, plus text and its
# tsvector) is over PostgreSQL's default 2 kB TOAST threshold, which would move the vector out of
# line and make every exact distance a TOAST fetch (3x slower exact search, measured). Up to this
# size the row stays whole in its page; larger vectors still go out of line when they must.
PARTITION_OPTIONS = {"chunks": "toast_tuple_target = 4080"}


def partition_with(table: str) -> str:
    """`` WITH (...)`` for a new partition of ``table`` (empty when it needs none)."""
    options = PARTITION_OPTIONS.get(table)
    return f" WITH ({options})" if options else ""


@dataclass(frozen=True)
class MonthRange:
    start: datetime
    end: datetime

    @property
    def suffix(self) -> str:
        return f"p{self.start:%Y_%m}"

    def name(self, table: str) -> str:
        return f"{table}_{self.suffix}"


def month_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def add_months(at: datetime, months: int) -> datetime:
    index = at.year * 12 + (at.month - 1) + months
    return at.replace(year=index // 12, month=index % 12 + 1, day=1)


def months_to_premake(now: datetime, ahead: int) -> list[MonthRange]:
    """The current month and ``ahead`` months after it, in order."""
    first = month_start(now)
    return [MonthRange(add_months(first, i), add_months(first, i + 1)) for i in range(ahead + 1)]
