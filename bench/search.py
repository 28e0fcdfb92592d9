"""Sections (b) search latency and (c) recall@k, each against raw PostgreSQL in the same run.

(b) The raw baseline is the plain top-k query on ``chunks`` over precomputed query vectors, on
dedicated connections with the service pool's session settings. The service is POST
/v1/search mode=vector: uncached (Redis flushed before each run, every query distinct) and
cached (the same queries again), each at several concurrencies.

(c) Exact neighbours come from the same query with index scans disabled (a sequential or btree
scan and a sort); recall counts a returned chunk as correct when it is an exact neighbour or
ties with the k-th exact distance.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql

from bench.load import (
    RAW_VECTOR_SQL,
    LoadProcess,
    RunResult,
    http_get,
    redis_get,
    search_api,
    search_raw,
    sql_repeat,
)
from bench.profile import API_BACKENDS, BENCH_PROCESS, meter_for
from bench.stack import Stack
from bench.stats import Latency, percentile, summarize
from core.cache import Cache
from core.search.fusion import Ranking
from core.search.retrieve import company_rows, use_exact, vector_query
from core.tenants import AUTH_SQL, hash_key

K = 10
TIE_TOLERANCE = 2e-6  # the API rounds scores to 6 decimals
RECALL_CONCURRENCY = 4
EF_SWEEP = (40, 100, 200, 400, 800)
SERVICE_VECTOR_SQL = vector_query(exact=False).as_string(None)  # the service's HNSW query, no filters


def service_searches_exactly(conn: Any, settings: Any, company_id: int) -> bool:
    """Whether the service compares every chunk of this company (few chunks) instead of the HNSW index."""
    limit = settings.vector_exact_max_rows
    return use_exact(company_rows(conn, Cache(None), company_id, limit), limit)


@dataclass
class Run:
    """One load run: client-side latency, server-side took_ms, CPU by process during the run."""

    latency: Latency
    took_p50_ms: float | None
    cached_fraction: float | None
    cpu: dict[str, Any]
    db_cpu_ms: float  # CPU of the PostgreSQL backends serving the run, per request

    def cpu_ms_per_request(self, group: str) -> float:
        return float(self.cpu.get("cpu_seconds", {}).get(group, 0.0)) * 1000 / self.latency.n

    @property
    def other_share(self) -> float:
        return float(self.cpu.get("other_processes_share") or 0.0)


@dataclass
class LatencyRow:
    concurrency: int
    raw: Run
    uncached: Run
    cached: Run


@dataclass
class RecallRow:
    company: str
    rows_share: float
    queries: int
    service: float
    raw_hnsw: float
    plans: dict[str, str]
    sweep: list[dict[str, Any]]  # raw query recall, p50 (concurrency 1) and plan by hnsw.ef_search
    exact_p50_ms: float
    contrast: dict[str, float]


def prepare(stack: Stack) -> dict[str, dict[str, str]]:
    """Settle the table as autovacuum would after a big load; the query plans per company."""
    plans: dict[str, dict[str, str]] = {}
    probe = np.full(stack.settings.embed_dim, 1.0, dtype=np.float32)
    with stack.connect(autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) chunks")
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(stack.settings.hnsw_ef_search)))
        for name, tenant in stack.tenants.items():
            params = {"q": probe, "company": tenant.company_id, "k": K, "n": K, "space": None}
            exact = service_searches_exactly(conn, stack.settings, tenant.company_id)
            service_sql = vector_query(exact).as_string(None)
            plans[name] = {"raw": _plan(conn, sql.SQL(RAW_VECTOR_SQL), params),
                           "service": ("exact (few chunks): " if exact else "") + _plan(conn, sql.SQL(service_sql),
                                                                                        params)}
            conn.execute("SET enable_indexscan = off")
            plans[name]["exact"] = _plan(conn, sql.SQL(RAW_VECTOR_SQL), params)
            conn.execute("RESET enable_indexscan")
    return plans


_VECTOR_LITERAL = re.compile(r"'\[[^\]]*\]'::vector")
_PARTITION = re.compile(r"chunks_p\d{4}_\d{2}")


def _plan(conn: Any, query: sql.Composable, params: dict[str, Any]) -> str:
    """The plan's nodes, outermost first, on one line; partitions folded into ``chunks_p*`` (xN)."""
    rows = conn.execute(sql.SQL("EXPLAIN (COSTS OFF) ") + query, params).fetchall()
    nodes: list[str] = []
    counts: list[int] = []
    for i, (line,) in enumerate(rows):
        text = line.strip()
        if i and not text.startswith("->"):
            continue
        node = _PARTITION.sub("chunks_p*", _VECTOR_LITERAL.sub("$q", text.removeprefix("->").strip()))
        node = re.sub(r" chunks_\d+$", "", node)
        if nodes and nodes[-1] == node:
            counts[-1] += 1
        else:
            nodes.append(node)
            counts.append(1)
    return " > ".join(f"{n} (x{c})" if c > 1 else n for n, c in zip(nodes, counts, strict=True))


def _metered(stack: Stack, load: LoadProcess, concurrency: int, fn: Callable[..., RunResult], *args: Any,
             api: bool = False) -> Run:
    meter = meter_for(stack, load.pid)
    meter.start()
    result = load.run(fn, *args)
    cpu = meter.stop()
    latency = summarize(result.seconds, result.wall_seconds, concurrency)
    n = len(result.seconds)
    if not api:
        return Run(latency, None, None, cpu, result.server_cpu_seconds * 1000 / n)
    took = percentile([e[0] for e in result.extras], 50)
    cached = sum(1 for e in result.extras if e[1]) / n
    db_ms = float(cpu["cpu_seconds"].get(API_BACKENDS, 0.0)) * 1000 / n
    return Run(latency, took, cached, cpu, db_ms)


def latency(stack: Stack, load: LoadProcess, queries: list[str], vectors: npt.NDArray[np.float32],
            concurrencies: tuple[int, ...]) -> list[LatencyRow]:
    tenant = stack.tenants["A"]
    ef = stack.settings.hnsw_ef_search
    load.run(search_raw, stack.db_url, tenant.company_id, vectors, max(concurrencies), ef)  # warm the caches
    rows = []
    for c in concurrencies:
        raw = _metered(stack, load, c, search_raw, stack.db_url, tenant.company_id, vectors, c, ef)
        stack.flush_cache()
        uncached = _metered(stack, load, c, search_api, stack.api_url, tenant.api_key, queries, c, api=True)
        cached = _metered(stack, load, c, search_api, stack.api_url, tenant.api_key, queries, c, api=True)
        if uncached.cached_fraction:
            raise RuntimeError(f"{uncached.cached_fraction:.0%} of the 'uncached' searches came from the cache")
        rows.append(LatencyRow(c, raw, uncached, cached))
    return rows


@dataclass
class Decomposition:
    """p50 (ms) at concurrency 1 of each step an uncached search takes, measured alone."""

    http_floor: float  # GET /healthz through uvicorn + FastAPI + the load client
    http_floor_cpu: float  # API process CPU ms per GET /healthz
    auth_sql: float  # the API-key lookup, one autocommit statement as the API runs it
    redis_get: float  # the cache miss
    query_embed: float  # embedding of one query by the service's embedder, in-process
    service_sql: float  # the service's vector SQL, one autocommit statement as the API runs it
    service_sql_txn: float  # the same SQL inside BEGIN … ROLLBACK (what an explicit transaction costs)
    raw_sql: float  # the plain raw query (the baseline)
    observed: float  # uncached POST /v1/search, client side
    observed_took: float  # its server-side took_ms
    service_depth: int = K  # the chunks the service SQL above read: what the service reads first for k hits

    @property
    def accounted(self) -> float:
        return self.http_floor + self.auth_sql + self.redis_get + self.query_embed + self.service_sql


def decompose(stack: Stack, load: LoadProcess, vectors: npt.NDArray[np.float32], query_embed_ms: float,
              observed: LatencyRow) -> Decomposition:
    tenant = stack.tenants["A"]
    ef = stack.settings.hnsw_ef_search
    n = len(vectors)
    http = _metered(stack, load, 1, http_get, stack.api_url, "/healthz", n, 1)
    auth = load.run(sql_repeat, stack.db_url, AUTH_SQL, [(hash_key(tenant.api_key),)] * n, 1, ef, False)
    miss = load.run(redis_get, stack.redis.url, n, 1)
    # a first page reads k + 1 hits (is there a next one?), per document from Ranking.first_depth chunks
    depth = Ranking.of(stack.settings).first_depth(K + 1, hybrid=False, ordered=ef)
    params = [{"q": v, "company": tenant.company_id, "n": depth, "space": None} for v in vectors]
    txn = load.run(sql_repeat, stack.db_url, SERVICE_VECTOR_SQL, params, 1, ef, True)
    auto = load.run(sql_repeat, stack.db_url, SERVICE_VECTOR_SQL, params, 1, ef, False)

    def p50(result: RunResult) -> float:
        return percentile(result.seconds, 50) * 1000

    return Decomposition(
        http_floor=http.latency.p50_ms, http_floor_cpu=http.cpu_ms_per_request(BENCH_PROCESS), auth_sql=p50(auth),
        redis_get=p50(miss), query_embed=query_embed_ms, service_sql=p50(auto), service_sql_txn=p50(txn),
        raw_sql=observed.raw.latency.p50_ms, observed=observed.uncached.latency.p50_ms,
        observed_took=observed.uncached.took_p50_ms or 0.0, service_depth=depth,
    )


@dataclass(frozen=True)
class Exact:
    neighbours: list[list[tuple[int, float]]]  # the exact top-k chunks per query
    documents: list[list[tuple[int, float]]]  # the exact top-k documents per query: each its nearest chunk
    p50_ms: float  # exact search latency at concurrency 1
    contrast: dict[str, float]  # mean distance of the 1st, k-th, 100th, 1000th neighbour and the median chunk


CONTRAST_DEPTH = 100
# the exact neighbours with their documents, as deep as the contrast reads
EXACT_SQL = (
    "SELECT id, embedding <=> %(q)s AS distance, document_id FROM chunks WHERE company_id = %(company)s"
    " ORDER BY embedding <=> %(q)s LIMIT %(k)s"
)
CONTRAST_SAMPLE = 20  # queries whose whole distance distribution (1000th neighbour, median) is measured
DISTRIBUTION_SQL = (
    "SELECT (array_agg(d ORDER BY d))[1000], percentile_cont(0.5) WITHIN GROUP (ORDER BY d)"
    " FROM (SELECT embedding <=> %(q)s AS d FROM chunks WHERE company_id = %(company)s) s"
)


def exact_neighbours(stack: Stack, company_id: int, vectors: npt.NDArray[np.float32]) -> Exact:
    """The exact neighbours (index scans off: a sequential or btree scan and a sort)."""
    found: list[list[tuple[int, float]]] = []
    documents: list[list[tuple[int, float]]] = []
    seconds: list[float] = []
    with stack.connect(autocommit=True) as conn:
        conn.execute("SET enable_indexscan = off")
        for v in vectors:
            started = time.perf_counter()
            rows = conn.execute(EXACT_SQL, {"q": v, "company": company_id, "k": CONTRAST_DEPTH}).fetchall()
            seconds.append(time.perf_counter() - started)
            found.append([(int(r[0]), float(r[1])) for r in rows])
            documents.append(nearest_per_document([(int(r[0]), float(r[1]), int(r[2])) for r in rows])[:K])
        spread = [conn.execute(DISTRIBUTION_SQL, {"q": v, "company": company_id}).fetchone()
                  for v in vectors[:CONTRAST_SAMPLE]]
    contrast = {
        f"distance_{rank}": float(np.mean([f[rank - 1][1] for f in found if len(f) >= rank]))
        for rank in (1, K, CONTRAST_DEPTH)
    }
    thousandth = [float(r[0]) for r in spread if r and r[0] is not None]
    if thousandth:
        contrast["distance_1000"] = float(np.mean(thousandth))
    contrast["distance_median"] = float(np.mean([float(r[1]) for r in spread if r]))
    return Exact([f[:K] for f in found], documents, percentile(seconds, 50) * 1000, contrast)


def nearest_per_document(ranked: list[tuple[int, float, int]]) -> list[tuple[int, float]]:
    """(chunk, distance) of each document's nearest chunk, nearest first, from chunks ranked by
    distance as (chunk, distance, document): what per-document hits should answer (pure)."""
    seen: set[int] = set()
    out = []
    for chunk, distance, document in ranked:
        if document not in seen:
            seen.add(document)
            out.append((chunk, distance))
    return out


def recall_at_k(found: list[tuple[int, float]], exact: list[tuple[int, float]], k: int = K) -> float:
    """Share of the exact top-k found; a distance tying the k-th exact one counts as found (pure)."""
    if not exact:
        return 1.0
    exact_ids = {cid for cid, _ in exact[:k]}
    kth = exact[: k][-1][1]
    hits = sum(1 for cid, distance in found[:k] if cid in exact_ids or distance <= kth + TIE_TOLERANCE)
    return min(hits, len(exact[:k])) / len(exact[:k])


def _mean_recall(found: list[list[tuple[int, float]]], exact: list[list[tuple[int, float]]]) -> float:
    return float(np.mean([recall_at_k(f, e) for f, e in zip(found, exact, strict=True)]))


def _uses_hnsw(stack: Stack, company_id: int, vector: npt.NDArray[np.float32], ef_search: int) -> bool:
    with stack.connect(autocommit=True) as conn:
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))
        plan = _plan(conn, sql.SQL(RAW_VECTOR_SQL), {"q": vector, "company": company_id, "k": K})
    return "embedding_idx" in plan


def _sweep(stack: Stack, load: LoadProcess, company_id: int, vectors: npt.NDArray[np.float32],
           exact: list[list[tuple[int, float]]]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for ef in sorted({*EF_SWEEP, stack.settings.hnsw_ef_search}):
        raw = load.run(search_raw, stack.db_url, company_id, vectors, 1, ef)
        point = {"ef_search": ef, "recall": _mean_recall(raw.extras, exact),
                 "p50_ms": percentile(raw.seconds, 50) * 1000, "plan": "HNSW index", "hnsw_recall": None}
        if not _uses_hnsw(stack, company_id, vectors[0], ef):
            forced = load.run(search_raw, stack.db_url, company_id, vectors, 1, ef, K, True)
            point.update(plan="no index (exact)", hnsw_recall=_mean_recall(forced.extras, exact))
        points.append(point)
    return points


def recall(stack: Stack, load: LoadProcess, company: str, queries: list[str], vectors: npt.NDArray[np.float32],
           rows_share: float, plans: dict[str, dict[str, str]]) -> RecallRow:
    tenant = stack.tenants[company]
    exact = exact_neighbours(stack, tenant.company_id, vectors)
    sweep = _sweep(stack, load, tenant.company_id, vectors, exact.neighbours)
    raw_recall = next(p["recall"] for p in sweep if p["ef_search"] == stack.settings.hnsw_ef_search)
    stack.flush_cache()
    service = load.run(search_api, stack.api_url, tenant.api_key, queries, RECALL_CONCURRENCY, K, True)
    service_hits = [[(cid, 1.0 - score) for cid, score in e[2]] for e in service.extras]
    # per-document hits (the default) are one per document: against each document's nearest chunk
    truth = exact.documents if stack.settings.search_per_document else exact.neighbours
    return RecallRow(company, rows_share, len(queries), _mean_recall(service_hits, truth), raw_recall,
                     plans[company], sweep, exact.p50_ms, exact.contrast)
