"""Capacity planning: replicas, connections, Redis memory and database size for a demand (pure).

``plan(demand, deployment, calibration)`` turns a target (requests/s or concurrent users, documents
stored, documents added per day) into what each tier needs, from the measured calibration
(``opsctl.capacity.calibration``) and the deployment's settings and policies. Every number it uses
is a ``Sourced`` value that says where it came from, and every number it answers carries its formula
with the figures filled in, so a reader can check it by hand. No I/O: ``opsctl.capacity.ops`` reads
the files; tests are tables.

The model:

- **API**: ``replicas = ceil(rps / (per-process requests/s * target utilisation))``, at least the
  policy's ``minReplicas``. Users without a rate become one: ``rps = users / think time``.
- **workers**: the peak ingest rate (the day's average * a peak factor) in chunks/s over one worker's
  chunks/s * target utilisation.
- **connections**: without a pooler every API process holds up to ``db_pool_max``, a worker two (its
  batch and its LISTEN), the daemon two, and PostgreSQL keeps three for superusers; with a
  transaction pooler (docs/pooler.md) the server needs only the transactions in flight (Little's law:
  rps * the service time at low load, doubled for bursts) plus the workers' and the daemon's.
- **Redis**: answers are cached until their TTL, so the entries alive are the new keys per second (the
  searches that miss, and reads) * the TTL, each of the measured size.
- **database**: (documents now + growth * horizon) * measured bytes per document and per chunk
  (table, HNSW, GIN, btree); the HNSW part is what must stay in memory for vector search to stay fast.

Limits compare each need with what one node (or the policy) allows; the one with the highest need /
limit is what breaks first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from core.humanize import format_bytes
from opsctl.capacity.calibration import Calibration

GIB = 1024**3
TIB = 1024**4
Basis = Literal["measured", "cpu"]
SUPERUSER_RESERVED = 3  # PostgreSQL's superuser_reserved_connections default
WORKER_CONNECTIONS = 2  # a batch connection and a LISTEN session (core/ingest/worker.py)
DAEMON_CONNECTIONS = 2  # the leader lock's session and one job's at a time (opsctl/daemon)
BURST = 2.0  # pool sizes: twice the mean transactions in flight
LOADED = 0.25  # a calibration whose machine gave other processes more than this share of its CPUs


@dataclass(frozen=True)
class Sourced:
    """A number the plan uses, and where it came from (a file, a setting, a flag, an assumption)."""

    value: float
    source: str
    unit: str = ""


@dataclass(frozen=True)
class Demand:
    """The target. ``rps`` wins over ``users`` (then ``users / think_seconds``); ``chunks`` over
    ``documents`` (then ``chunks / measured chunks per document``)."""

    rps: float | None = None
    users: int | None = None
    think_seconds: float = 5.0
    documents: int | None = None
    chunks: int | None = None
    growth_per_day: float = 0.0
    horizon_days: int = 365
    ingest_peak_factor: float = 3.0


@dataclass(frozen=True)
class Deployment:
    """What the deployment is set to, each with its source."""

    api_utilization: Sourced  # fraction of one replica's measured capacity to plan for
    worker_utilization: Sourced
    api_min_replicas: Sourced
    api_max_replicas: Sourced | None  # None: no maximum
    worker_min_replicas: Sourced
    worker_max_replicas: Sourced | None
    db_pool_max: Sourced
    max_connections: Sourced
    search_ttl_seconds: Sourced
    document_ttl_seconds: Sourced
    redis_maxmemory: Sourced  # bytes; 0: no limit set
    search_share: Sourced  # of requests
    read_share: Sourced
    db_cores: Sourced  # CPU cores of the database host
    db_memory: Sourced  # bytes of RAM on the database host
    db_disk: Sourced  # bytes of disk for the database
    redis_node_memory: Sourced  # bytes of RAM one Redis node can hold


@dataclass(frozen=True)
class Line:
    tier: str
    item: str
    value: float
    unit: str
    how: str


@dataclass(frozen=True)
class Limit:
    """A need against what allows it: a ``setting`` (a policy or configuration value: change it) or a
    ``node`` (what one machine holds: past it, the tier must be sharded or moved to a managed service)."""

    tier: str
    what: str
    need: float
    limit: float
    unit: str
    advice: str
    kind: Literal["setting", "node"]

    @property
    def ratio(self) -> float:
        return self.need / self.limit if self.limit > 0 else math.inf

    @property
    def breaks(self) -> bool:
        return self.need > self.limit


@dataclass
class CapacityPlan:
    lines: list[Line] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    assumptions: list[tuple[str, Sourced]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def value(self, item: str) -> float:
        return next(line.value for line in self.lines if line.item == item)

    @property
    def breaks_first(self) -> Limit | None:
        """The node limit exceeded the most: the tier to shard or move first (settings just change)."""
        broken = [limit for limit in self.limits if limit.breaks and limit.kind == "node"]
        return max(broken, key=lambda limit: limit.ratio) if broken else None


def _n(x: float) -> str:
    """A number in a formula: integers plainly, others to three significant figures."""
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _replicas(out: CapacityPlan, tier: str, item: str, demand: float, per_replica: float, utilization: Sourced,
              least: Sourced, most: Sourced | None, advice: str) -> int:
    """``ceil(demand / (per_replica * utilization))``, at least ``least``; its line, and its limit ``most``."""
    replicas = max(int(least.value), math.ceil(demand / (per_replica * utilization.value)) if demand else 0)
    out.lines.append(Line(tier, item, replicas, "replicas", f"ceil({_n(round(demand, 3))} / ({_n(per_replica)} * "
                          f"{_n(utilization.value)})), at least {int(least.value)}"))
    if most is not None:
        out.limits.append(Limit(tier, f"{item} against the policy's maxReplicas", replicas, most.value, "replicas",
                                advice, "setting"))
    return replicas


def per_replica(cal: Calibration, basis: Basis, measured: str) -> tuple[Sourced, Sourced]:
    """One API process's requests/s and one worker's chunks/s: as measured (``measured``: on the
    calibrating machine, shared), or on a core of its own (``cpu``: 1 / the CPU seconds per unit, the
    API's at its best run; the worker's with its PostgreSQL backends). ``ValueError`` when the
    calibration has no CPU figures."""
    if basis == "measured":
        return (Sourced(cal.api.requests_per_second, f"{measured}, saturated"),
                Sourced(cal.worker.chunks_per_second, f"{measured}, saturated, embedder {cal.worker.embedder}"))
    best = max(cal.api.runs, key=lambda r: r.requests_per_second)
    if not best.cpu_seconds_per_request or not cal.worker.cpu_seconds_per_chunk:
        raise ValueError("the calibration has no CPU seconds per request and per chunk (measure it again)")
    return (Sourced(round(1 / best.cpu_seconds_per_request, 1), f"{measured}: 1 / {best.cpu_seconds_per_request} "
                    "CPU s per request, a core of its own"),
            Sourced(round(1 / cal.worker.cpu_seconds_per_chunk, 1), f"{measured}: 1 / "
                    f"{cal.worker.cpu_seconds_per_chunk} CPU s per chunk (worker + its backends), a core of its own, "
                    f"embedder {cal.worker.embedder}"))


def plan(demand: Demand, deployment: Deployment, cal: Calibration, cal_source: str,
         basis: Basis = "measured") -> CapacityPlan:
    """What each tier needs for ``demand`` (see the module's docstring for the model)."""
    d, c = deployment, cal
    out = CapacityPlan()
    measured = f"calibration {cal_source}, measured {c.measured_at:%Y-%m-%d} on {c.machine.cpus} CPUs"
    redis = f"{measured}, Redis"
    api_unit, worker_unit = per_replica(c, basis, measured)
    if basis == "measured" and c.machine.other_cpu_cores > LOADED * c.machine.cpus:
        out.notes.append(f"the calibration was measured on a loaded machine (other processes took "
                         f"{c.machine.other_cpu_cores:g} of {c.machine.cpus} CPUs): its rates are low; --basis cpu "
                         "plans with a core of its own per replica")
    out.assumptions += [
        ("API requests/s per process (search mix)", api_unit),
        ("worker chunks/s per process", worker_unit),
        ("chunks per document", Sourced(c.storage.chunks_per_document, measured)),
        ("bytes per chunk (table + HNSW + GIN + btree)", Sourced(c.storage.chunk.total, measured, "bytes")),
        ("bytes per document (table + indexes + job rows)", Sourced(c.storage.document.total, measured, "bytes")),
        ("search cache hit ratio", Sourced(c.cache.search_hit_ratio, f"{measured} (the Locust search mix)")),
        ("bytes per cached search answer", Sourced(c.cache.search_entry_bytes, f"{redis} (MEMORY USAGE)", "bytes")),
        ("bytes per cached document", Sourced(c.cache.document_entry_bytes, f"{redis} (MEMORY USAGE)", "bytes")),
    ]
    for name in Deployment.__dataclass_fields__:
        if (given := getattr(d, name)) is not None:
            out.assumptions.append((name.replace("_", " "), given))

    # --- demand -------------------------------------------------------------------------------------
    if demand.rps is not None:
        rps, rps_how = demand.rps, "--rps"
    elif demand.users is not None:
        rps = demand.users / demand.think_seconds
        rps_how = f"{demand.users} users / {_n(demand.think_seconds)} s think time"
    else:
        rps, rps_how = 0.0, "no --rps or --users"
    out.lines.append(Line("demand", "requests/s", round(rps, 2), "req/s", rps_how))
    cpd = c.storage.chunks_per_document
    if demand.chunks is not None:
        docs_now = demand.chunks / cpd
        docs_how = f"{_n(demand.chunks)} chunks / {_n(cpd)} chunks per document"
    else:
        docs_now, docs_how = float(demand.documents or 0), "--documents"
    docs = docs_now + demand.growth_per_day * demand.horizon_days
    out.lines.append(Line("demand", "documents at horizon", round(docs), "documents",
                          f"{docs_how} ({_n(round(docs_now))}) + {_n(demand.growth_per_day)}/day * "
                          f"{demand.horizon_days} days"))
    chunks = docs * cpd

    peak_docs = demand.growth_per_day / 86400 * demand.ingest_peak_factor
    peak_chunks = peak_docs * cpd
    out.lines.append(Line("demand", "ingest at peak", round(peak_chunks, 3), "chunks/s",
                          f"{_n(demand.growth_per_day)}/day / 86,400 * {_n(demand.ingest_peak_factor)} peak factor * "
                          f"{_n(cpd)} chunks per document"))

    api = _replicas(out, "api", "API replicas", rps, api_unit.value, d.api_utilization,
                    d.api_min_replicas, d.api_max_replicas, "raise core-api maxReplicas (stateless: scales out freely)")
    workers = _replicas(out, "workers", "worker replicas", peak_chunks, worker_unit.value,
                        d.worker_utilization, d.worker_min_replicas, d.worker_max_replicas,
                        "raise core-worker maxReplicas")

    # --- connections --------------------------------------------------------------------------------
    best = max(c.api.runs, key=lambda r: r.requests_per_second)
    if best.db_cpu_seconds_per_request:  # a transaction holds its connection for its database time
        service_s = best.db_cpu_seconds_per_request
        out.assumptions.append(("database CPU per request", Sourced(service_s, f"{measured}: the API's PostgreSQL "
                                "backends, CPU s per request (I/O waits would add to it)")))
        cores = rps * service_s
        out.lines.append(Line("database", "database CPU for searches", round(cores, 2), "cores",
                              f"{_n(round(rps, 2))} req/s * {_n(service_s)} CPU s"))
        out.limits.append(Limit("database", "database CPU against the database host's cores", cores,
                                d.db_cores.value, "cores", "searches to read replicas (docs/replicas.md), then shard "
                                "by company", "node"))
    else:  # an older calibration: the request's whole time at the lowest load, an upper bound
        service_s = min(r.p50_ms for r in c.api.runs) / 1000
        out.assumptions.append(("time a request holds a connection", Sourced(service_s, f"{measured}: p50 at the "
                                "lowest load (no database CPU figure; an upper bound)")))
    in_flight = rps * service_s
    per_api = in_flight / api if api else 0.0
    pool = max(2, math.ceil(per_api * BURST))
    out.lines.append(Line("database", "pool per API process (db_pool_max)", pool, "connections",
                          f"max(2, ceil({_n(round(rps, 2))} req/s * {_n(service_s)} s / {api} replicas "
                          f"* {_n(BURST)})); set now: {int(d.db_pool_max.value)}"))
    direct = api * d.db_pool_max.value + workers * WORKER_CONNECTIONS + DAEMON_CONNECTIONS + SUPERUSER_RESERVED
    out.lines.append(Line("database", "connections without a pooler", direct, "connections",
                          f"{api} * {int(d.db_pool_max.value)} + {workers} * {WORKER_CONNECTIONS} + "
                          f"{DAEMON_CONNECTIONS} daemon + {SUPERUSER_RESERVED} reserved"))
    pooled_server = math.ceil(in_flight * BURST) + workers
    out.lines.append(Line("pooler", "PgBouncer default_pool_size", pooled_server, "server connections",
                          f"ceil({_n(round(in_flight, 2))} in flight * {_n(BURST)}) + {workers} worker batches"))
    out.lines.append(Line("pooler", "PgBouncer max_client_conn", api * int(d.db_pool_max.value) + workers,
                          "client connections", f"{api} * {int(d.db_pool_max.value)} + {workers}"))
    server = pooled_server + workers + DAEMON_CONNECTIONS + SUPERUSER_RESERVED
    out.lines.append(Line("database", "connections behind a pooler", server, "connections",
                          f"{pooled_server} pooled + {workers} LISTEN + {DAEMON_CONNECTIONS} daemon + "
                          f"{SUPERUSER_RESERVED} reserved"))
    out.limits.append(Limit("database", "connections without a pooler against max_connections", direct,
                            d.max_connections.value, "connections",
                            "put PgBouncer/Supavisor in transaction mode in front (docs/pooler.md)", "setting"))
    out.limits.append(Limit("database", "connections behind a pooler against max_connections", server,
                            d.max_connections.value, "connections",
                            "raise max_connections within the host's memory, or shard: one primary runs this many "
                            "transactions at once", "node"))

    # --- Redis --------------------------------------------------------------------------------------
    search_rps, read_rps = rps * d.search_share.value, rps * d.read_share.value
    new_keys = search_rps * (1 - c.cache.search_hit_ratio)
    search_bytes = new_keys * d.search_ttl_seconds.value * c.cache.search_entry_bytes
    doc_entries = min(docs, read_rps * d.document_ttl_seconds.value)
    redis_bytes = search_bytes + doc_entries * c.cache.document_entry_bytes
    out.lines.append(Line("redis", "Redis memory", round(redis_bytes), "bytes",
                          f"{_n(round(new_keys, 2))} new search keys/s * {_n(d.search_ttl_seconds.value)} s * "
                          f"{format_bytes(c.cache.search_entry_bytes)} + {_n(round(doc_entries))} documents * "
                          f"{format_bytes(c.cache.document_entry_bytes)}"))
    if d.redis_maxmemory.value:
        out.limits.append(Limit("redis", "Redis memory against the cache policy's maxmemory", redis_bytes,
                                d.redis_maxmemory.value, "bytes",
                                "raise redis.maxmemory in policies/cache.yaml, or LRU evicts answers and the hit "
                                "ratio falls below the measured one", "setting"))
    out.limits.append(Limit("redis", "Redis memory against one node", redis_bytes, d.redis_node_memory.value, "bytes",
                            "Redis Cluster or a managed cache (keys are per company: they shard by company)", "node"))

    # --- database size ------------------------------------------------------------------------------
    chunk, doc = c.storage.chunk, c.storage.document
    size = chunks * chunk.total + docs * doc.total
    hnsw = chunks * chunk.hnsw
    out.lines.append(Line("database", "chunks at horizon", round(chunks), "chunks",
                          f"{_n(round(docs))} documents * {_n(cpd)}"))
    out.lines.append(Line("database", "database size", round(size), "bytes",
                          f"{_n(round(chunks))} chunks * {format_bytes(chunk.total)} + {_n(round(docs))} documents * "
                          f"{format_bytes(doc.total)} (no WAL, backups or bloat)"))
    out.lines.append(Line("database", "HNSW index", round(hnsw), "bytes",
                          f"{_n(round(chunks))} chunks * {format_bytes(chunk.hnsw)}"))
    out.limits.append(Limit("database", "HNSW index against the database host's memory", hnsw, d.db_memory.value,
                            "bytes", "shard chunks by company (Citus, or one database per tenant group) or move "
                            "vectors to a managed vector service; searches off the index's memory read disk", "node"))
    out.limits.append(Limit("database", "database size against the database's disk", size, d.db_disk.value, "bytes",
                            "shard by company, or a managed PostgreSQL with larger storage; drop old partitions "
                            "(policies/partitions.yaml retention)", "node"))
    out.limits.sort(key=lambda limit: limit.ratio, reverse=True)
    return out
