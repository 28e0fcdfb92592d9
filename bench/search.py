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
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql

from bench.load import RAW_VECTOR_SQL, LoadProcess, RunResult, search_api, search_raw
from bench.stack import Stack
from bench.stats import Latency, percentile, summarize
from core.search.retrieve import VECTOR_SQL

K = 10
TIE_TOLERANCE = 2e-6  # the API rounds scores to 6 decimals
RECALL_CONCURRENCY = 4


@dataclass
class LatencyRow:
    concurrency: int
    raw: Latency
    uncached: Latency
    cached: Latency
    uncached_took_p50_ms: float
    cached_took_p50_ms: float
    cached_fraction: float


@dataclass
class RecallRow:
    company: str
    rows_share: float
    queries: int
    service: float
    raw_hnsw: float
    plans: dict[str, str]


def _service_sql() -> sql.Composed:
    return sql.SQL(VECTOR_SQL).format(filters=sql.SQL(""))


def prepare(stack: Stack) -> dict[str, dict[str, str]]:
    """Settle the table as autovacuum would after a big load; the query plans per company."""
    plans: dict[str, dict[str, str]] = {}
    probe = np.full(stack.settings.embed_dim, 1.0, dtype=np.float32)
    with stack.connect(autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) chunks")
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(stack.settings.hnsw_ef_search)))
        for name, tenant in stack.tenants.items():
            params = {"q": probe, "company": tenant.company_id, "k": K, "n": K}
            plans[name] = {"raw": _plan(conn, sql.SQL(RAW_VECTOR_SQL), params),
                           "service": _plan(conn, _service_sql(), params)}
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


def _took(result: RunResult) -> tuple[float, float]:
    """(server took_ms p50, fraction answered from the cache)."""
    took = [e[0] for e in result.extras]
    return percentile(took, 50), sum(1 for e in result.extras if e[1]) / len(result.extras)


def latency(stack: Stack, load: LoadProcess, queries: list[str], vectors: npt.NDArray[np.float32],
            concurrencies: tuple[int, ...]) -> list[LatencyRow]:
    tenant = stack.tenants["A"]
    ef = stack.settings.hnsw_ef_search
    load.run(search_raw, stack.db_url, tenant.company_id, vectors, max(concurrencies), ef)  # warm the caches
    rows = []
    for c in concurrencies:
        raw = load.run(search_raw, stack.db_url, tenant.company_id, vectors, c, ef)
        stack.flush_cache()
        uncached = load.run(search_api, stack.api_url, tenant.api_key, queries, c)
        cached = load.run(search_api, stack.api_url, tenant.api_key, queries, c)
        uncached_took, uncached_hits = _took(uncached)
        cached_took, cached_hits = _took(cached)
        if uncached_hits > 0:
            raise RuntimeError(f"{uncached_hits:.0%} of the 'uncached' searches were answered from the cache")
        rows.append(LatencyRow(
            c, summarize(raw.seconds, raw.wall_seconds, c), summarize(uncached.seconds, uncached.wall_seconds, c),
            summarize(cached.seconds, cached.wall_seconds, c), uncached_took, cached_took, cached_hits,
        ))
    return rows


def exact_neighbours(stack: Stack, company_id: int, vectors: npt.NDArray[np.float32]) -> list[list[tuple[int, float]]]:
    with stack.connect(autocommit=True) as conn:
        conn.execute("SET enable_indexscan = off")
        return [[(int(r[0]), float(r[1])) for r in conn.execute(RAW_VECTOR_SQL, {"q": v, "company": company_id,
                                                                                 "k": K}).fetchall()]
                for v in vectors]


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


def recall(stack: Stack, load: LoadProcess, company: str, queries: list[str], vectors: npt.NDArray[np.float32],
           rows_share: float, plans: dict[str, dict[str, str]]) -> RecallRow:
    tenant = stack.tenants[company]
    exact = exact_neighbours(stack, tenant.company_id, vectors)
    raw = load.run(search_raw, stack.db_url, tenant.company_id, vectors, RECALL_CONCURRENCY,
                   stack.settings.hnsw_ef_search)
    stack.flush_cache()
    service = load.run(search_api, stack.api_url, tenant.api_key, queries, RECALL_CONCURRENCY, K, True)
    service_hits = [[(cid, 1.0 - score) for cid, score in e[2]] for e in service.extras]
    return RecallRow(company, rows_share, len(queries), _mean_recall(service_hits, exact),
                     _mean_recall(raw.extras, exact), plans[company])
