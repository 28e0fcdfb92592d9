"""Monthly range partitions of ``documents`` and ``chunks``: names and bounds (pure).

The core premakes the current month and ``ahead`` months on every start, from the clock, so
partitions exist before rows arrive; rows outside them land in the default partition, which the
lifecycle tooling (``opsctl partitions``) drains.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PARTITIONED_TABLES = ("documents", "chunks")


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
