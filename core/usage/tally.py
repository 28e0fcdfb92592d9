"""Per-company usage, the pure part: counting events in a process, and reading the hourly rows back.

A process counts what its companies do (:class:`Tally`: searches, search cache hits and misses,
ingest jobs done, texts embedded) per company and UTC hour, in memory; the recorder
(:mod:`core.usage.recorder`) takes the counts out every flush interval and adds them to the
``usage_hourly`` table in one upsert. What the table holds is summed per company over a window by
:func:`summarise` (``opsctl tenant usage``), and cut to the top N plus ``other`` by :func:`top_with_other`
(the Prometheus view, bounded in labels).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Literal

EVENTS = ("searches", "cache_hits", "cache_misses", "ingest_jobs", "embeddings")
_INDEX = {name: i for i, name in enumerate(EVENTS)}
Event = Literal["searches", "cache_hits", "cache_misses", "ingest_jobs", "embeddings"]
OTHER = "other"


@dataclass
class Counts:
    """Events of one company in one hour."""

    searches: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    ingest_jobs: int = 0
    embeddings: int = 0

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in EVENTS)


class Tally:
    """Counts by (company, hour), safe across threads; ``take`` empties it, ``restore`` gives back
    what a failed flush took (the next flush adds it). ``count`` is on every search's path: a
    dictionary lookup and a few additions under a lock, the hour kept as an integer until a flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, int], list[int]] = {}

    def count(self, company_id: int, at: datetime, **events: int) -> None:
        """Add ``events`` (``searches=1, cache_hits=1`` …) to ``company_id``'s hour of ``at`` (aware)."""
        key = (company_id, int(at.timestamp()) // 3600)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = [0] * len(EVENTS)
            for name, n in events.items():
                counts[_INDEX[name]] += n

    def take(self) -> dict[tuple[int, datetime], Counts]:
        with self._lock:
            taken, self._counts = self._counts, {}
        return {(company, datetime.fromtimestamp(hour * 3600, UTC)): Counts(*counts)
                for (company, hour), counts in taken.items()}

    def restore(self, taken: dict[tuple[int, datetime], Counts]) -> None:
        with self._lock:
            for (company, hour), counts in taken.items():
                kept = self._counts.setdefault((company, int(hour.timestamp()) // 3600), [0] * len(EVENTS))
                for i, n in enumerate(counts.values()):
                    kept[i] += n

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)


def flush_rows(taken: dict[tuple[int, datetime], Counts]) -> list[tuple[int, datetime, Counts]]:
    """The rows of one flush in key order (company, hour): concurrent flushes lock rows in one order."""
    return [(company, hour, counts) for (company, hour), counts in sorted(taken.items()) if any(counts.values())]


# --- reading back ----------------------------------------------------------------------------------

Sort = Literal["activity", "searches", "ingest_jobs", "embeddings", "documents", "stored_bytes"]
SORTS: tuple[str, ...] = ("activity", "searches", "ingest_jobs", "embeddings", "documents", "stored_bytes")


@dataclass
class Usage:
    """A company's usage over a window: events summed, stored data as it is now."""

    company_id: int
    name: str
    tier: str | None = None
    documents: int = 0
    chunks: int = 0
    stored_bytes: int = 0
    counts: Counts = field(default_factory=Counts)

    @property
    def hit_rate(self) -> float | None:
        """Search cache hits over lookups; None without a lookup."""
        looked = self.counts.cache_hits + self.counts.cache_misses
        return None if looked == 0 else self.counts.cache_hits / looked

    @property
    def activity(self) -> int:
        """What "use" sorts by: requests that did work, searches plus ingest jobs."""
        return self.counts.searches + self.counts.ingest_jobs

    def key(self, sort: str) -> int:
        if sort == "activity":
            return self.activity
        if sort in EVENTS:
            return int(getattr(self.counts, sort))
        return int(getattr(self, sort))

    def as_dict(self) -> dict[str, object]:
        rate = self.hit_rate
        return {"company_id": self.company_id, "name": self.name, "tier": self.tier, "documents": self.documents,
                "chunks": self.chunks, "stored_bytes": self.stored_bytes,
                **dict(zip(EVENTS, self.counts.values(), strict=True)),
                "cache_hit_rate": None if rate is None else round(rate, 4)}


def summarise(companies: Iterable[Usage], hourly: Iterable[tuple[int, Sequence[int]]], sort: str = "activity",
              top: int | None = None) -> list[Usage]:
    """Each company's events of ``hourly`` ((company id, counts in EVENTS order) per hour row) added
    to its ``Usage``, the companies sorted by ``sort`` (largest first, then by id), the first ``top``."""
    if sort not in SORTS:
        raise ValueError(f"cannot sort by {sort!r} (one of {', '.join(SORTS)})")
    by_id = {u.company_id: u for u in companies}
    for company_id, values in hourly:
        usage = by_id.get(company_id)
        if usage is not None:
            usage.counts.add(Counts(*values))
    ranked = sorted(by_id.values(), key=lambda u: (-u.key(sort), u.company_id))
    return ranked if top is None else ranked[:top]


@dataclass(frozen=True)
class Bucket:
    """One step of a company's usage over time (``opsctl tenant usage COMPANY``)."""

    start: datetime
    counts: Counts
    documents: int | None
    chunks: int | None
    stored_bytes: int | None

    def as_dict(self) -> dict[str, object]:
        looked = self.counts.cache_hits + self.counts.cache_misses
        return {"start": self.start.isoformat(), **dict(zip(EVENTS, self.counts.values(), strict=True)),
                "cache_hit_rate": None if looked == 0 else round(self.counts.cache_hits / looked, 4),
                "documents": self.documents, "chunks": self.chunks, "stored_bytes": self.stored_bytes}


def series(rows: Iterable[tuple[datetime, Sequence[int], int | None, int | None, int | None]],
           step_hours: int) -> list[Bucket]:
    """Hourly rows (hour, counts in EVENTS order, documents, chunks, stored bytes; in hour order)
    grouped into steps of ``step_hours`` (24: UTC days): events summed, stored data the step's last
    value known."""
    if step_hours < 1:
        raise ValueError("a step is at least one hour")
    out: list[Bucket] = []
    for hour, values, documents, chunks, stored in rows:
        epoch_hours = int(hour.timestamp()) // 3600
        start = datetime.fromtimestamp((epoch_hours - epoch_hours % step_hours) * 3600, tz=hour.tzinfo)
        if out and out[-1].start == start:
            last = out[-1]
            last.counts.add(Counts(*values))
            out[-1] = Bucket(start, last.counts, documents if documents is not None else last.documents,
                             chunks if chunks is not None else last.chunks,
                             stored if stored is not None else last.stored_bytes)
        else:
            out.append(Bucket(start, Counts(*values), documents, chunks, stored))
    return out


def top_with_other(values: dict[str, float], n: int) -> dict[str, float]:
    """The ``n`` largest labels of ``values`` as they are (ties by name), the rest summed as ``other``
    (absent when nothing is left): at most n + 1 labels whatever the number of companies."""
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:n])
    if len(ranked) > n:
        out[OTHER] = sum(v for _, v in ranked[n:])
    return out
