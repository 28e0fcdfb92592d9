"""Prometheus metrics of the core.

Per-process metrics (requests, jobs, embeds, cache) are exported by each process. The queue
gauges are read from the database at scrape time by the API only (``QueueCollector``), so there
is one source of truth: use ``max(core_ingest_queue_depth)`` across API replicas, and
``sum(core_ingest_jobs_in_flight)`` across workers (each worker exports its own in-flight jobs).
The same read gives the server's connections against its ``max_connections``
(``core_db_server_connections``, ``core_db_server_max_connections``: the server's numbers, the
same from every replica, so ``max()`` across them), and Redis's memory comes from
``core.redis_metrics``; ``api_collectors`` is the set an API process registers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.ingest.fair import Backlog, top_backlogs
from core.usage.metrics import label_of

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

HTTP_DURATION = Histogram(
    "core_http_request_duration_seconds", "HTTP request duration by route template, method and status",
    ["route", "method", "status"], buckets=LATENCY_BUCKETS,
)
INGEST_JOBS = Counter("core_ingest_jobs_total", "Ingest jobs finished by a worker, by outcome", ["status"])
INGEST_CHUNKS = Counter("core_ingest_chunks_total", "Chunks written by workers")
INGEST_ACCEPTED = Counter("core_ingest_accepted_total", "Documents accepted by the API, by source", ["source"])
JOBS_IN_FLIGHT = Gauge("core_ingest_jobs_in_flight", "Jobs this worker is processing right now")
BATCH_SECONDS = Histogram("core_ingest_batch_seconds", "Worker batch duration (claim to commit)",
                          buckets=LATENCY_BUCKETS)
EMBED_SECONDS = Histogram("core_embed_seconds", "Time of one embedding call (a group of a batch)", ["embedder"],
                          buckets=LATENCY_BUCKETS)
SEARCH_CACHE = Counter("core_search_cache_requests_total", "Search cache lookups by result", ["result"])
DOCUMENT_CACHE = Counter("core_document_cache_requests_total", "Document metadata cache lookups by result",
                         ["result"])
AUTH_CACHE = Counter("core_auth_cache_requests_total", "API-key lookup cache lookups by result", ["result"])
WEBHOOK_REPLAYS = Counter(
    "core_webhook_replay_lookups_total", "Verified webhooks looked up among those answered already: hit (a replay, "
    "answered again, not charged), miss (a first delivery), error (Redis unavailable: taken as a first delivery)",
    ["result"])
CACHE_RESULTS = ("hit", "miss", "error")
for _counter in (SEARCH_CACHE, DOCUMENT_CACHE, AUTH_CACHE, WEBHOOK_REPLAYS):
    for _result in CACHE_RESULTS:  # born at 0: Prometheus' increase() then sees the first lookups too
        _counter.labels(_result)
SEARCH_SECONDS = Histogram("core_search_seconds", "Search time inside the service by mode and cache result",
                           ["mode", "cached"], buckets=LATENCY_BUCKETS)
SEARCH_READS = Counter("core_search_reads_total", "Searches read from the database, by where they read "
                       "(primary|replica) and why (docs/replicas.md)", ["target", "reason"])
REPLICA_LAG = Gauge("core_db_replica_lag_seconds", "Replay lag of each read replica at its last check "
                    "(0: replayed all the primary had; NaN: unreachable)", ["replica"])
REPLICA_UP = Gauge("core_db_replica_up", "Whether the API's last check reached the replica (1) or not (0)",
                   ["replica"])
EMBEDDER_MISMATCH = Gauge("core_embedder_config_mismatch", "1 when this process's configured embedder is not "
                          "the database's active vector space (it embeds in the database's; docs/embedders.md)")
RATE_LIMITED = Counter("core_rate_limited_total", "Requests refused with 429")
RATE_LIMIT_SHARED = Gauge("core_rate_limit_shared", "1: companies' rate limits are shared through Redis; "
                          "0: Redis is down and each API process limits on its own")
RATE_LIMIT_LOCAL = Counter("core_rate_limit_local_total",
                           "Requests charged to this process's own rate-limit buckets because Redis was down")
QUOTA_REFUSED = Counter("core_quota_refused_total", "Requests refused for a tier's quota, by quota", ["quota"])
WORKERS = Gauge("core_workers", "Ingest worker processes of the local pool", ["state"])
CHILD_RESTARTS = Counter("opsctl_up_child_restarts_total",
                         "Children of `opsctl up` started again after they died, by child", ["child"])
CHILD_UP = Gauge("opsctl_up_child_up", "Whether a child of `opsctl up` is running (1) or down (0)", ["child"])

# one query for the whole queue, per company (the totals are the sums: the autoscaler's signal,
# core_ingest_queue_depth, is what it was); a row with no company when nothing is unfinished
QUEUE_SQL = """
WITH locked AS (
    SELECT ((l.classid::bigint << 32) | l.objid::bigint) AS job_id
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
),
per_company AS (
    SELECT j.company_id,
           count(*) FILTER (WHERE j.id NOT IN (SELECT job_id FROM locked)) AS waiting,
           count(*) FILTER (WHERE j.id IN (SELECT job_id FROM locked)) AS in_flight,
           extract(epoch FROM now() - min(j.created_at)) AS oldest
    FROM ingest_jobs j WHERE j.status IN ('queued', 'failed')
    GROUP BY j.company_id
)
SELECT c.name, p.waiting, p.in_flight, p.oldest, d.dead, c.id
FROM (SELECT count(*) AS dead FROM ingest_jobs WHERE status = 'dead') d
LEFT JOIN (per_company p JOIN companies c ON c.id = p.company_id) ON true
"""


# client backends (not the server's own processes) against max_connections minus the reserves
# (superusers'; PostgreSQL 16+ also pg_use_reserved_connections'): what is left for applications
CONNECTIONS_SQL = """
SELECT count(*) FILTER (WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
         - coalesce(current_setting('reserved_connections', true)::int, 0)
FROM pg_stat_activity
"""


def server_connections(conn: Any) -> tuple[int, int]:
    """(client connections open on the server, connections available to non-superusers)."""
    row = conn.execute(CONNECTIONS_SQL).fetchone()
    return int(row[0]), int(row[1])


@dataclass(frozen=True)
class QueueStats:
    """The queue from the database: totals, and per company (``core.ingest.fair.Backlog``)."""

    waiting: int
    in_flight: int
    oldest_seconds: float  # the oldest unfinished job's age
    dead: int
    companies: tuple[Backlog, ...] = ()

    @property
    def totals(self) -> tuple[int, int, float, int]:
        return self.waiting, self.in_flight, self.oldest_seconds, self.dead


def read_queue(conn: Any) -> QueueStats:
    """The queue's totals and each company's share, in one query."""
    rows = conn.execute(QUEUE_SQL).fetchall()
    mine = [r for r in rows if r[0] is not None]
    companies = tuple(Backlog(label_of(int(r[5]), r[0]), int(r[1]), float(r[3])) for r in mine)
    return QueueStats(sum(int(r[1]) for r in mine), sum(int(r[2]) for r in mine),
                      max((float(r[3]) for r in mine), default=0.0), int(rows[0][4]), companies)


def queue_stats(conn: Any) -> tuple[int, int, float, int]:
    """(waiting, in flight, oldest pending age in seconds, dead) straight from the database."""
    return read_queue(conn).totals


POOL_GAUGES = (
    ("core_db_pool_waiting", "requests_waiting", "Requests waiting for a connection of this pool"),
    ("core_db_pool_size", "pool_size", "Connections this pool holds (in use, idle, being prepared)"),
    ("core_db_pool_available", "pool_available", "Idle connections of this pool, ready to hand out"),
)


def pool_gauges(name: str, stats: dict[str, int]) -> Iterator[GaugeMetricFamily]:
    """``core_db_pool_{waiting,size,available}{pool}`` from psycopg_pool's ``get_stats()``."""
    for metric, key, help_text in POOL_GAUGES:
        family = GaugeMetricFamily(metric, help_text, labels=["pool"])
        family.add_metric([name], stats.get(key, 0))
        yield family


class QueueCollector(Collector):
    """Reads the queue's depth from PostgreSQL when Prometheus scrapes (at most every ``min_interval``)."""

    def __init__(self, pool: ConnectionPool, min_interval: float = 1.0, top_companies: int = 10) -> None:
        self.pool = pool
        self.min_interval = min_interval
        self.top_companies = top_companies
        self._cached: tuple[float, tuple[QueueStats, tuple[int, int]]] | None = None

    def _stats(self) -> tuple[QueueStats, tuple[int, int]] | None:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.min_interval:
            return self._cached[1]
        try:
            with self.pool.connection(timeout=2) as conn:
                stats = read_queue(conn), server_connections(conn)
        except Exception:
            return None
        self._cached = (now, stats)
        return stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        pool_stats = self.pool.get_stats()
        size = pool_stats.get("pool_size", 0)
        idle = pool_stats.get("pool_available", 0)
        conns = GaugeMetricFamily("core_db_pool_connections", "Connections of the API's pool by state",
                                  labels=["state"])
        conns.add_metric(["idle"], idle)
        conns.add_metric(["busy"], max(size - idle, 0))
        conns.add_metric(["waiting"], pool_stats.get("requests_waiting", 0))
        conns.add_metric(["max"], self.pool.max_size)
        yield conns
        yield from pool_gauges(self.pool.name, pool_stats)
        if stats is None:
            return
        queue, (server_open, server_max) = stats
        waiting, in_flight, oldest, dead = queue.totals
        yield GaugeMetricFamily("core_db_server_connections", "Client connections open on the database server "
                                "(pg_stat_activity, every client)", value=server_open)
        yield GaugeMetricFamily("core_db_server_max_connections", "max_connections minus the reserved "
                                "connections (superuser_reserved_connections, reserved_connections)",
                                value=server_max)
        yield GaugeMetricFamily("core_ingest_queue_depth", "Jobs waiting for a worker (not in flight)",
                                value=waiting)
        yield GaugeMetricFamily("core_ingest_queue_in_flight", "Jobs held by a worker right now (from the database)",
                                value=in_flight)
        yield GaugeMetricFamily("core_ingest_oldest_pending_seconds", "Age of the oldest unfinished job",
                                value=oldest)
        yield GaugeMetricFamily("core_ingest_jobs_dead", "Jobs that exhausted their attempts", value=dead)
        yield from company_gauges(top_backlogs(queue.companies, self.top_companies))


def company_gauges(backlogs: list[Backlog]) -> Iterator[GaugeMetricFamily]:
    """The queue per company: the companies with most jobs waiting by name, the rest as ``other``
    (``top_backlogs``), so the label's values stay bounded however many companies there are."""
    depth = GaugeMetricFamily("core_ingest_company_queue_depth", "Jobs waiting for a worker, per company (the "
                              "top metrics_queue_top_companies by backlog, the rest as other)", labels=["company"])
    oldest = GaugeMetricFamily("core_ingest_company_oldest_pending_seconds", "Age of the company's oldest "
                               "unfinished job (the same companies, other: the oldest of the rest)", labels=["company"])
    for backlog in backlogs:
        depth.add_metric([backlog.company], backlog.waiting)
        oldest.add_metric([backlog.company], backlog.oldest_seconds)
    yield depth
    yield oldest


def api_collectors(pool: ConnectionPool, cache: Any, min_interval: float = 1.0,
                   usage_top: int = 10, queue_top: int = 10) -> list[Collector]:
    """What an API process registers: the queue, pool and server gauges (``queue_top`` companies by
    backlog + other), Redis's memory, and the per-company usage view (``core.usage.metrics``:
    ``usage_top`` companies per metric + other)."""
    from core.redis_metrics import RedisCollector
    from core.usage.metrics import UsageCollector

    return [QueueCollector(pool, min_interval, queue_top), RedisCollector(lambda: cache.client),
            UsageCollector(pool, usage_top, min_interval * 15)]
