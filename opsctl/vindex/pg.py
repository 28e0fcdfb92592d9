"""The PostgreSQL side of vector index maintenance: stats, recall against exact search, tuning,
REINDEX CONCURRENTLY with progress, VACUUM.

Recall is measured with the core's own company-scoped query (``core.search.retrieve.vector_sql``,
iterative index scans on) against the exact answer of the same query with index scans disabled.
Query vectors are midpoints of two stored embeddings of one company, so they are near real data
but not stored points themselves.

The tuned ef_search is the database's default (``ALTER DATABASE … SET hnsw.ef_search``): new
sessions start with it, and the API reads it with every request and sets it on a pooled
connection at its next vector search (``core.searchtune``), unless ``hnsw_ef_search`` is
configured explicitly.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from core.errors import OperationFailed
from opsctl.vindex.decide import IndexStats, TunePoint, ef_candidates, recall_at_k
from opsctl.vindex.policy import VectorIndexPolicy

INDEXES_SQL = """
SELECT ic.relname, c.relname, pg_relation_size(i.indexrelid), pg_table_size(c.oid),
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0), greatest(s.last_vacuum, s.last_autovacuum),
       i.indisvalid
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_class c ON c.oid = i.indrelid
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE am.amname = 'hnsw' AND c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
ORDER BY c.relname
"""

EXACT_SQL = """
SELECT id FROM {table} WHERE company_id = %(company)s ORDER BY embedding <=> %(q)s, id LIMIT %(n)s
"""


@dataclass(frozen=True)
class Query:
    company: int
    vector: Any


def _set(conn: psycopg.Connection[Any], name: str, value: Any) -> None:
    conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(str(value))))


def index_stats(conn: psycopg.Connection[Any]) -> list[IndexStats]:
    return [IndexStats(index=r[0], table=r[1], index_bytes=int(r[2]), table_bytes=int(r[3]), live_tuples=int(r[4]),
                       dead_tuples=int(r[5]), last_vacuum=r[6], valid=bool(r[7]))
            for r in conn.execute(INDEXES_SQL).fetchall()]


def sample_queries(conn: psycopg.Connection[Any], table: str, n: int, seed: float = 0.42) -> list[Query]:
    """``n`` query vectors: midpoints of two stored embeddings of the same company."""
    conn.execute("SELECT setseed(%s)", (seed,))
    rows = conn.execute(sql.SQL(
        "SELECT company_id, embedding FROM {} ORDER BY random() LIMIT %s").format(sql.Identifier(table)),
        (2 * n,)).fetchall()
    by_company: dict[int, list[Any]] = {}
    for company, vec in rows:
        by_company.setdefault(int(company), []).append(vec)
    out: list[Query] = []
    for company, vecs in by_company.items():
        for a, b in zip(vecs[::2], vecs[1::2], strict=False):
            out.append(Query(company, (a.to_numpy() + b.to_numpy()) / 2))
        if len(vecs) % 2:
            out.append(Query(company, vecs[-1].to_numpy()))
    return out[:n]


def _approx(conn: psycopg.Connection[Any], table: str, q: Query, k: int) -> list[int]:
    from core.search.retrieve import TEXT, vector_sql

    rows = conn.execute(sql.SQL(vector_sql(False, q.company).replace("FROM chunks", "FROM {table}")).format(
        table=sql.Identifier(table), filters=sql.SQL(""), body=TEXT[False]),
        {"q": q.vector, "company": q.company, "n": k, "space": None}).fetchall()
    return [int(r[0]) for r in rows]


def _exact(conn: psycopg.Connection[Any], table: str, q: Query, k: int) -> list[int]:
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        rows = conn.execute(sql.SQL(EXACT_SQL).format(table=sql.Identifier(table)),
                            {"q": q.vector, "company": q.company, "n": k}).fetchall()
    return [int(r[0]) for r in rows]


@dataclass(frozen=True)
class Measurement:
    recall: float
    p50_ms: float
    exact_p50_ms: float
    queries: int


def measure(conn: psycopg.Connection[Any], table: str, queries: list[Query], k: int, ef_search: int | None,
            exact: dict[int, list[int]] | None = None) -> tuple[Measurement, dict[int, list[int]]]:
    """Mean recall@k and p50 latency of the core's query on ``table`` at ``ef_search`` (None: the
    connection's current value); the exact answers are computed once and can be passed back in."""
    _set(conn, "hnsw.iterative_scan", "relaxed_order")
    if ef_search is not None:
        _set(conn, "hnsw.ef_search", ef_search)
    exact_times: list[float] = []
    if exact is None:
        exact = {}
        for i, q in enumerate(queries):
            started = time.perf_counter()
            exact[i] = _exact(conn, table, q, k)
            exact_times.append((time.perf_counter() - started) * 1000)
    recalls, times = [], []
    for i, q in enumerate(queries):
        started = time.perf_counter()
        got = _approx(conn, table, q, k)
        times.append((time.perf_counter() - started) * 1000)
        recalls.append(recall_at_k(got, exact[i], k))
    return (Measurement(statistics.fmean(recalls) if recalls else 1.0,
                        statistics.median(times) if times else 0.0,
                        statistics.median(exact_times) if exact_times else 0.0, len(queries)), exact)


def current_ef_search(conn: psycopg.Connection[Any]) -> tuple[int, int | None]:
    """(what a new connection runs with, the database's own setting or None)."""
    row = conn.execute("SELECT current_setting('hnsw.ef_search', true)").fetchone()
    db = conn.execute(
        "SELECT s FROM pg_db_role_setting r, unnest(r.setconfig) s, pg_database d "
        "WHERE d.datname = current_database() AND r.setdatabase = d.oid AND r.setrole = 0 "
        "AND s LIKE 'hnsw.ef_search=%'").fetchone()
    db_value = int(db[0].split("=", 1)[1]) if db else None
    value = int(row[0]) if row and row[0] else (db_value or 40)
    return value, db_value


def status(conn: psycopg.Connection[Any], policy: VectorIndexPolicy) -> list[dict[str, Any]]:
    """Per partition HNSW index: size, tuples, last vacuum, recall@k against exact, ef_search, p50 (the
    partition's, measured once for all its indexes)."""
    from pgvector.psycopg import register_vector

    register_vector(conn)
    ef, _ = current_ef_search(conn)
    rows = []
    # once per partition: its own indexes of large companies (``opsctl index tenants``) and the shared
    # one answer the same company-scoped queries, each company's through its own index where it has one
    measured: dict[str, tuple[list[Query], Measurement | None]] = {}
    for st in index_stats(conn):
        if st.table not in measured:
            sample = sample_queries(conn, st.table, policy.sample_queries) if st.live_tuples else []
            measured[st.table] = (sample, measure(conn, st.table, sample, policy.k, None)[0] if sample else None)
        queries, m = measured[st.table]
        rows.append({"index": st.index, "table": st.table, "index_bytes": st.index_bytes,
                     "table_bytes": st.table_bytes, "live_tuples": st.live_tuples, "dead_tuples": st.dead_tuples,
                     "last_vacuum": st.last_vacuum, "valid": st.valid, "ef_search": ef,
                     f"recall@{policy.k}": None if m is None else round(m.recall, 4),
                     "p50_ms": None if m is None else round(m.p50_ms, 3), "queries": len(queries)})
    return rows


def stats_with_recall(conn: psycopg.Connection[Any], policy: VectorIndexPolicy) -> list[IndexStats]:
    from dataclasses import replace

    rows = status(conn, policy)
    by_index = {r["index"]: r for r in rows}
    return [replace(st, recall=by_index[st.index][f"recall@{policy.k}"]) for st in index_stats(conn)]


@dataclass
class Tune:
    points: list[TunePoint]
    exact_p50_ms: float
    queries: int
    chosen: TunePoint | None
    previous: int


def tune(conn: psycopg.Connection[Any], policy: VectorIndexPolicy, table: str = "chunks",
         on_point: Callable[[TunePoint], None] | None = None) -> Tune:
    """Recall and p50 of the core's query at each candidate ef_search, smallest first, stopping at
    the first that meets the target."""
    from pgvector.psycopg import register_vector

    from opsctl.vindex.decide import choose_ef_search

    register_vector(conn)
    previous, _ = current_ef_search(conn)
    queries = sample_queries(conn, table, policy.sample_queries)
    if not queries:
        raise OperationFailed(f"{table} has no rows to measure recall on")
    points: list[TunePoint] = []
    exact: dict[int, list[int]] | None = None
    exact_p50 = 0.0
    for ef in ef_candidates(policy):
        m, exact = measure(conn, table, queries, policy.k, ef, exact)
        if m.exact_p50_ms:
            exact_p50 = m.exact_p50_ms
        point = TunePoint(ef, m.recall, m.p50_ms)
        points.append(point)
        if on_point:
            on_point(point)
        if m.recall >= policy.target_recall:
            break
    conn.execute("RESET hnsw.ef_search")
    return Tune(points, exact_p50, len(queries), choose_ef_search(points, policy), previous)


def set_database_ef_search(conn: psycopg.Connection[Any], value: int) -> None:
    db = conn.execute("SELECT current_database()").fetchone()
    assert db is not None
    conn.execute(sql.SQL("ALTER DATABASE {} SET hnsw.ef_search = {}").format(sql.Identifier(db[0]),
                                                                             sql.Literal(int(value))))


# --- REINDEX CONCURRENTLY with progress, VACUUM ---------------------------------------------------

PROGRESS_SQL = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = %s
"""


def reindex_concurrently(url: str, index: str, on_progress: Callable[[str, int, int], None] | None = None,
                         poll_seconds: float = 0.2) -> float:
    """``REINDEX INDEX CONCURRENTLY`` on its own connection, polling its progress from a second one.
    Returns the seconds it took."""
    return run_with_progress(url, sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.Identifier(index)),
                             f"REINDEX INDEX CONCURRENTLY {index}", on_progress, poll_seconds)


def run_with_progress(url: str, statement: sql.Composed, what: str,
                      on_progress: Callable[[str, int, int], None] | None = None, poll_seconds: float = 0.2) -> float:
    """An index build (``CREATE INDEX CONCURRENTLY``, ``REINDEX … CONCURRENTLY``) on its own connection,
    its progress polled from a second one in ``pg_stat_progress_create_index``. Returns the seconds it took."""
    from core.db import connect

    errors: list[BaseException] = []
    with connect(url, autocommit=True) as worker, connect(url, autocommit=True) as watcher:
        row = worker.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])

        def run() -> None:
            try:
                worker.execute(statement)
            except BaseException as exc:  # reported in the caller's thread
                errors.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=run, name="index-build")
        thread.start()
        while thread.is_alive():
            p = watcher.execute(PROGRESS_SQL, (pid,)).fetchone()
            if p is not None and on_progress is not None:
                phase, bdone, btotal, tdone, ttotal = p
                done, total = (tdone, ttotal) if ttotal else (bdone, btotal)
                on_progress(str(phase), int(done or 0), int(total or 0))
            thread.join(poll_seconds)
    if errors:
        raise OperationFailed(f"{what} failed: {errors[0]}") from errors[0]
    return time.monotonic() - started


def vacuum(conn: psycopg.Connection[Any], table: str) -> float:
    started = time.monotonic()
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
    return time.monotonic() - started
