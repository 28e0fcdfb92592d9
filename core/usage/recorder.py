"""Per-company usage, the adapter: flush a process's tally to ``usage_hourly``, read it back.

Each API and worker process holds one :class:`UsageRecorder`. Counting is a dictionary update under
a lock (no I/O on a request's path); a thread adds the counts to the database every
``usage_flush_seconds`` in ONE statement (``FLUSH_SQL``: every (company, hour) row of the interval,
in key order), and ``close()`` flushes what is left when the process stops. A flush that fails (the
database away) keeps its counts for the next one. A process killed with ``kill -9`` loses what it
counted since its last flush: at most one interval.

The same statement stamps each flushed row with the company's stored totals — documents and chunks
from the BM25 statistics the triggers keep (``bm25_title_totals``, ``bm25_totals``), bytes from
``stored_bytes`` (migration 0019) — a read of a few rows by key, nothing recounted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core.clock import Clock, utcnow
from core.usage.tally import EVENTS, Bucket, Tally, Usage, flush_rows, series, summarise

log = logging.getLogger("core.usage")

TOTALS_SQL = """
    (SELECT sum(documents) FROM bm25_title_totals t WHERE t.company_id = {c})::bigint,
    (SELECT sum(chunks) FROM bm25_totals t WHERE t.company_id = {c})::bigint,
    (SELECT sum(bytes) FROM stored_bytes t WHERE t.company_id = {c})::bigint"""

# companies deleted since they were counted are skipped (the join), not an error that blocks the flush
FLUSH_SQL = f"""
INSERT INTO usage_hourly AS u (company_id, hour, {", ".join(EVENTS)}, documents, chunks, stored_bytes)
SELECT e.company_id, e.hour, {", ".join("e." + name for name in EVENTS)},{TOTALS_SQL.format(c="e.company_id")}
FROM unnest(%s::bigint[], %s::timestamptz[], {", ".join(["%s::bigint[]"] * len(EVENTS))})
     AS e(company_id, hour, {", ".join(EVENTS)})
JOIN companies c ON c.id = e.company_id
ORDER BY e.company_id, e.hour
ON CONFLICT (company_id, hour) DO UPDATE SET
    {", ".join(f"{name} = u.{name} + excluded.{name}" for name in EVENTS)},
    documents = excluded.documents, chunks = excluded.chunks, stored_bytes = excluded.stored_bytes
"""

COMPANIES_SQL = f"""
SELECT c.id, c.name, c.tier,{TOTALS_SQL.format(c="c.id")}
FROM companies c WHERE %(company)s::bigint IS NULL OR c.id = %(company)s
"""

HOURLY_SQL = f"""
SELECT company_id, {", ".join(EVENTS)} FROM usage_hourly
WHERE hour >= date_trunc('hour', %(since)s::timestamptz, 'UTC')
  AND (%(company)s::bigint IS NULL OR company_id = %(company)s)
"""

SERIES_SQL = f"""
SELECT hour, {", ".join(EVENTS)}, documents, chunks, stored_bytes FROM usage_hourly
WHERE company_id = %(company)s AND hour >= date_trunc('hour', %(since)s::timestamptz, 'UTC')
ORDER BY hour
"""


def flush(conn: Any, tally: Tally) -> int:
    """Add what ``tally`` counted to ``usage_hourly`` in one statement; the rows written. On an
    error the counts go back into the tally and the error is raised."""
    taken = tally.take()
    rows = flush_rows(taken)
    if not rows:
        return 0
    columns: list[list[Any]] = [[r[0] for r in rows], [r[1] for r in rows]]
    columns += [[r[2].values()[i] for r in rows] for i in range(len(EVENTS))]
    try:
        with conn.transaction():
            conn.execute(FLUSH_SQL, columns)
    except Exception:
        tally.restore(taken)
        raise
    return len(rows)


class UsageRecorder:
    """A process's usage counts and the thread flushing them (``start``; ``close`` flushes the rest).

    ``connect`` opens a connection (a context manager: the API's pool's ``connection``, or a
    function connecting for a worker); ``clock`` stamps the events."""

    def __init__(self, connect: Callable[[], Any], interval: float, clock: Clock = utcnow) -> None:
        self.connect = connect
        self.interval = interval
        self.clock = clock
        self.tally = Tally()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, company_id: int, **events: int) -> None:
        self.tally.count(company_id, self.clock(), **events)

    def flush(self) -> int:
        if not len(self.tally):
            return 0
        with self.connect() as conn:
            return flush(conn, self.tally)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # the database away: the counts wait for the next flush
                log.warning("usage flush failed (%s); the counts are kept for the next one", exc)

    def start(self) -> UsageRecorder:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="usage-flush", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and flush what is left (a failure is logged: the counts are lost then)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.flush()
        except Exception as exc:
            log.warning("usage flush at stop failed (%s): %d rows of counts lost", exc, len(self.tally))


def read_usage(conn: Any, since: datetime, company_id: int | None = None, sort: str = "activity",
               top: int | None = None) -> list[Usage]:
    """Each company's usage since ``since`` (the hour it falls in, whole), sorted and cut."""
    params = {"since": since, "company": company_id}
    companies = [Usage(r[0], r[1], r[2], int(r[3] or 0), int(r[4] or 0), int(r[5] or 0))
                 for r in conn.execute(COMPANIES_SQL, params)]
    hourly = [(r[0], r[1:]) for r in conn.execute(HOURLY_SQL, params)]
    return summarise(companies, hourly, sort, top)


def read_series(conn: Any, company_id: int, since: datetime, step: timedelta) -> list[Bucket]:
    """``company_id``'s usage since ``since`` in steps of ``step`` (whole hours)."""
    rows = [(r[0], r[1:1 + len(EVENTS)], *r[1 + len(EVENTS):]) for r in
            conn.execute(SERIES_SQL, {"company": company_id, "since": since})]
    return series(rows, max(1, int(step.total_seconds()) // 3600))


def usage_report(conn: Any, company: str | None, since: datetime, *, step: timedelta = timedelta(days=1),
                 sort: str = "activity", top: int | None = None) -> list[dict[str, Any]]:
    """``opsctl tenant usage``: without ``company`` (an id or name), every company's usage since
    ``since`` sorted by ``sort``, the first ``top``; with one, that company's usage in steps of ``step``."""
    if company is None:
        return [u.as_dict() for u in read_usage(conn, since, sort=sort, top=top)]
    from core.tenants import find_company

    return [b.as_dict() for b in read_series(conn, find_company(conn, company), since, step)]
