"""The Prometheus view of per-company usage, read from the database when Prometheus scrapes the API.

Bounded in labels whatever the number of companies: each metric names its ``top`` companies (the
setting ``usage_metrics_top``) by their own value and sums the rest as ``company="other"``, so a
metric has at most ``top + 1`` series. Every API replica exports the same values (use ``max``)::

    core_tenant_documents{company}              documents stored now
    core_tenant_chunks{company}                 chunks stored now
    core_tenant_stored_bytes{company}           UTF-8 bytes of the documents' text stored now
    core_tenant_searches_hour{company}          searches in the previous full UTC hour
    core_tenant_cache_hits_hour{company}        search cache hits in the previous full hour
    core_tenant_cache_misses_hour{company}      search cache misses in the previous full hour
    core_tenant_ingest_jobs_hour{company}       ingest jobs done in the previous full hour
    core_tenant_embeddings_hour{company}        texts embedded (chunks, uncached queries) in it

The events of an hour are complete once every process has flushed after it ended
(``usage_flush_seconds``), which is why the view is of the previous hour, not the one under way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.usage.recorder import TOTALS_SQL
from core.usage.tally import EVENTS, OTHER, top_with_other

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("core.usage")

STORED = ("documents", "chunks", "stored_bytes")
# column → (metric, help): VIEW_SQL's columns after the company's id and name, in order
METRICS = {
    "documents": ("core_tenant_documents", "Documents a company stores now (top companies, the rest as other)"),
    "chunks": ("core_tenant_chunks", "Chunks a company stores now (top companies, the rest as other)"),
    "stored_bytes": ("core_tenant_stored_bytes", "UTF-8 bytes of the text a company stores now (top companies, "
                     "the rest as other)"),
    "searches": ("core_tenant_searches_hour", "Searches of a company in the previous full UTC hour (top "
                 "companies, the rest as other)"),
    "cache_hits": ("core_tenant_cache_hits_hour", "Search cache hits of a company in the previous full UTC hour"),
    "cache_misses": ("core_tenant_cache_misses_hour", "Search cache misses of a company in the previous full UTC "
                     "hour"),
    "ingest_jobs": ("core_tenant_ingest_jobs_hour", "Ingest jobs of a company done in the previous full UTC hour"),
    "embeddings": ("core_tenant_embeddings_hour", "Texts embedded for a company (chunks, uncached queries) in the "
                   "previous full UTC hour"),
}
assert tuple(METRICS) == (*STORED, *EVENTS)

VIEW_SQL = f"""
SELECT c.id, c.name,{TOTALS_SQL.format(c="c.id")},
       {", ".join(f"coalesce(u.{name}, 0)" for name in EVENTS)}
FROM companies c
LEFT JOIN usage_hourly u ON u.company_id = c.id AND u.hour = date_trunc('hour', now(), 'UTC') - interval '1 hour'
"""


def label_of(company_id: int, name: str) -> str:
    """A company's label: its name (a company named ``other`` gets its id added, to stay apart)."""
    return f"{name}#{company_id}" if name == OTHER else name


def view(rows: list[tuple[Any, ...]], top: int) -> dict[str, dict[str, float]]:
    """metric name → {company label: value} from VIEW_SQL's rows, each cut to ``top`` + other."""
    out = {}
    for i, (name, _) in enumerate(METRICS.values()):
        values = {label_of(int(r[0]), str(r[1])): float(r[2 + i] or 0) for r in rows}
        out[name] = top_with_other(values, top)
    return out


class UsageCollector(Collector):
    """Reads the usage view at most every ``min_interval`` seconds; nothing when the database is away."""

    def __init__(self, pool: ConnectionPool, top: int, min_interval: float = 15.0) -> None:
        self.pool = pool
        self.top = top
        self.min_interval = min_interval
        self._cached: tuple[float, dict[str, dict[str, float]]] | None = None

    def _view(self) -> dict[str, dict[str, float]] | None:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.min_interval:
            return self._cached[1]
        try:
            with self.pool.connection(timeout=2) as conn:
                rows = conn.execute(VIEW_SQL).fetchall()
        except Exception as exc:
            log.debug("usage view unavailable: %s", exc)
            return None
        self._cached = (now, view(rows, self.top))
        return self._cached[1]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        found = self._view()
        if found is None:
            return
        for name, help_text in METRICS.values():
            family = GaugeMetricFamily(name, help_text, labels=["company"])
            for label, value in found[name].items():
                family.add_metric([label], value)
            yield family
