"""``python -m bench.search_cost``: where one uncached search's cost goes, counted, not timed.

Wall-clock latency on a shared machine moves with the other processes' load; what one uncached
``POST /v1/search`` (mode vector, one client, every query distinct) costs does not:

* round trips: PostgreSQL statements the API sent (psycopg ``execute`` calls of this process, where
  the API runs in a thread; one autocommit statement is one round trip) and Redis commands
  (``INFO commandstats``: every command Redis executed, the near cache's and usage counting's
  included) per search;
* CPU: this process's CPU per search (the API: uvicorn, FastAPI, the route; the load client runs
  in its own process), of it the route's worker thread (``answer``: key lookup, cache, SQL, ranking,
  JSON of the results) measured by ``time.thread_time``, and a ``cProfile`` of that thread (thread
  CPU as its clock) by stage;
* the rows of chunks the SQL read per search (the ``n`` of each candidate read);
* the round trips the route's thread starts (``PathTrips``): writes to Redis (a pipelined batch of
  commands is one write, one round trip) and checkouts of the PostgreSQL pool.

Run it against main and a change back to back: the counts are exact, the CPU within a few percent.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

import core.api.routers.search as route
from bench import ingest
from bench.corpus import build_corpus, make_queries
from bench.load import RAW_VECTOR_SQL, LoadProcess, search_api, search_raw, sql_repeat
from bench.search import K, _plan
from bench.stack import Stack, running_stack
from bench.stats import percentile
from core.embed import make_embedder
from core.search.fusion import Ranking
from core.search.retrieve import vector_query

COMPANIES = ("A", "B")
# (label, function name as cProfile reports it, file suffix): the stages of the route's thread
STAGES = (
    ("key lookup (authenticate)", "authenticate", "core/api/deps.py"),
    ("cache read ahead (Redis GET)", "read_ahead", "core/search/ahead.py"),
    ("body into SearchRequest", "read_json", "core/api/body.py"),
    ("search(): all below", "search", "core/search/retrieve.py"),
    ("  pool checkout and settings", "__enter__", "contextlib.py"),
    ("  company_rows / own index (kept in process)", "company_rows", "core/search/retrieve.py"),
    ("  query embedding", "embed_query", "core/search/retrieve.py"),
    ("  candidate SQL (execute + fetch)", "candidates", "core/search/retrieve.py"),
    ("  of it psycopg execute", "execute", "psycopg/connection.py"),
    ("  rank per document", "rank_one", "core/search/fusion.py"),
    ("  threads of e-mail hits", "threads_of", "core/search/retrieve.py"),
    ("  page and cursor", "page_of", "core/search/page.py"),
    ("  cache SET handed off", "set_raw_later", "core/cache.py"),
    ("query log (Redis)", "log_query", "core/cache.py"),
    ("usage counting", "count", "core/usage/"),
)


class Counted:
    """psycopg ``execute`` calls of this process's threads (the API's), by statement's first words."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.depths: Counter[int] = Counter()  # the ``n`` of candidate reads
        self.lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    @contextmanager
    def installed(self) -> Iterator[None]:
        for cls in (psycopg.Cursor,):  # Connection.execute runs a cursor's: counted once
            original = cls.execute

            def execute(obj: Any, query: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                text = query if isinstance(query, str) else query.as_string(None) if hasattr(query, "as_string") \
                    else str(query)
                params = args[0] if args else kwargs.get("params")
                with self.lock:
                    self.calls[" ".join(text.split())[:60]] += 1
                    if isinstance(params, dict) and "n" in params:
                        self.depths[int(params["n"])] += 1
                return _original(obj, query, *args, **kwargs)

            cls.execute = execute  # type: ignore[method-assign,assignment]
            self._undo.append(lambda cls=cls, original=original: setattr(cls, "execute", original))  # type: ignore[misc]
        try:
            yield
        finally:
            for undo in self._undo:
                undo()


def redis_calls(url: str) -> Counter[str]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


ON_PATH = threading.local()  # ``active`` while this thread runs the route's ``answer`` (RouteClock)


def on_path() -> bool:
    return bool(getattr(ON_PATH, "active", False))


class PathTrips:
    """Writes to Redis (each one round trip: a batch of commands goes in one write) and checkouts of
    the PostgreSQL pool made by the route's thread, while it runs ``answer``."""

    def __init__(self) -> None:
        self.redis_writes = 0
        self.checkouts = 0
        self.lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[PathTrips]:
        from psycopg_pool import ConnectionPool
        from redis.connection import AbstractConnection

        send, getconn = AbstractConnection.send_packed_command, ConnectionPool.getconn

        def counted_send(conn: Any, *args: Any, **kwargs: Any) -> Any:
            if on_path():
                with self.lock:
                    self.redis_writes += 1
            return send(conn, *args, **kwargs)

        def counted_getconn(pool: Any, *args: Any, **kwargs: Any) -> Any:
            if on_path():
                with self.lock:
                    self.checkouts += 1
            return getconn(pool, *args, **kwargs)

        AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign,assignment]
        ConnectionPool.getconn = counted_getconn  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
            ConnectionPool.getconn = getconn  # type: ignore[method-assign]


class RouteClock:
    """The route's ``answer`` wrapped: its thread CPU summed, and optionally profiled."""

    def __init__(self, profile: cProfile.Profile | None) -> None:
        self.cpu = 0.0
        self.calls = 0
        self.profile = profile
        self.original = route.answer
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        started = time.thread_time()
        ON_PATH.active = True
        if self.profile is not None:
            self.profile.enable()
        try:
            return self.original(*args)
        finally:
            ON_PATH.active = False
            if self.profile is not None:
                self.profile.disable()
            with self.lock:
                self.cpu += time.thread_time() - started
                self.calls += 1

    @contextmanager
    def installed(self) -> Iterator[RouteClock]:
        route.answer = self  # type: ignore[assignment]
        try:
            yield self
        finally:
            route.answer = self.original


def stage_times(profile: cProfile.Profile, searches: int) -> list[tuple[str, float]]:
    """Cumulative thread-CPU ms per search of each stage's function (profiled: inflated, read as shares)."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    found = []
    for label, name, where in STAGES:
        total = sum(v[3] for (path, _, fn), v in stats.items() if fn == name and where in path)
        found.append((label, total * 1000 / searches))
    return found


def top_functions(profile: cProfile.Profile, searches: int, most: int = 20) -> list[tuple[str, float]]:
    """The functions of the route's thread with the most own (not callees') thread CPU, ms per search."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    ranked = sorted(stats.items(), key=lambda item: -item[1][2])[:most]
    return [(f"{fn} ({Path(path).name}:{line})", v[2] * 1000 / searches) for (path, line, fn), v in ranked]


BUFFER_QUERIES = 100


def buffers(conn: Any, query: str, params: list[dict[str, Any]]) -> tuple[float, float]:
    """(shared buffers touched, rows the scans returned) per query, from EXPLAIN (ANALYZE, BUFFERS):
    what a query reads, whatever the machine's load."""
    pages = rows = 0.0
    for p in params:
        plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(query), p).fetchone()[0][0]
        pages += plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
        rows += _scanned(plan["Plan"])
    return pages / len(params), rows / len(params)


def _scanned(node: dict[str, Any]) -> float:
    """Rows the plan's index and sequential scans returned (loops counted)."""
    own = node["Actual Rows"] * node.get("Actual Loops", 1) if "Scan" in node["Node Type"] and \
        "CTE" not in node["Node Type"] else 0.0
    return float(own) + sum(_scanned(child) for child in node.get("Plans", []))


def sql_costs(stack: Stack, load: LoadProcess, vectors: Any, rounds: int = 3) -> dict[str, tuple[float, float]]:
    """The service's vector SQL at the depth it reads first and at the whole depth (what it read before
    ``Ranking.first_depth``), and the raw top-10 query: (backend CPU ms, p50 ms) per query, the median
    of ``rounds`` runs taken in turn (the machine's load drifts alike over the three)."""
    company, ef = stack.tenants["A"].company_id, stack.settings.hnsw_ef_search
    ranking = Ranking.of(stack.settings)
    service = vector_query(exact=False).as_string(None)
    found: dict[str, list[tuple[float, float]]] = {}
    with stack.connect(autocommit=True) as conn:  # the plans: does a depth change the planner's choice?
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef)))
        for depth in (ranking.first_depth(K + 1, False, ef), ranking.depth(K + 1, False)):
            probe = {"q": vectors[0], "company": company, "n": depth, "space": None}
            print(f"plan at {depth} chunks: {_plan(conn, sql.SQL(service), probe)}", file=sys.stderr)
            found[f"service SQL, {depth} chunks: buffers"] = [buffers(conn, service, [
                {"q": v, "company": company, "n": depth, "space": None} for v in vectors[:BUFFER_QUERIES]])]
        found[f"raw top-{K} SQL: buffers"] = [buffers(conn, RAW_VECTOR_SQL, [
            {"q": v, "company": company, "k": K} for v in vectors[:BUFFER_QUERIES]])]
    for _ in range(rounds):
        for depth in (ranking.first_depth(K + 1, False, ef), ranking.depth(K + 1, False)):
            params = [{"q": v, "company": company, "n": depth, "space": None} for v in vectors]
            run = load.run(sql_repeat, stack.db_url, service, params, 1, ef, False)
            found.setdefault(f"service SQL, {depth} chunks", []).append(
                (run.server_cpu_seconds * 1000 / len(vectors), percentile(run.seconds, 50) * 1000))
        run = load.run(search_raw, stack.db_url, company, vectors, 1, ef)
        found.setdefault(f"raw top-{K} SQL", []).append(
            (run.server_cpu_seconds * 1000 / len(vectors), percentile(run.seconds, 50) * 1000))
    return {name: (statistics.median(c for c, _ in runs), statistics.median(p for _, p in runs))
            for name, runs in found.items()}


def uncached_run(stack: Stack, load: LoadProcess, queries: list[str]) -> Any:
    stack.flush_cache()
    result = load.run(search_api, stack.api_url, stack.tenants["A"].api_key, queries, 1)
    cached = sum(1 for e in result.extras if e[1])
    if cached:
        raise RuntimeError(f"{cached} of the 'uncached' searches came from the cache")
    return result


def measure(stack: Stack, load: LoadProcess, queries: list[str], say: Callable[[str], None]) -> dict[str, Any]:
    uncached_run(stack, load, queries)  # warm: plans, pages, the in-process counts
    say("the SQL alone: first depth, whole depth, raw")
    sql = sql_costs(stack, load, make_embedder(stack.settings).embed(queries))
    say("counting round trips and CPU")
    counted = Counted()
    before_redis = redis_calls(stack.redis.url)
    process_before = time.process_time()
    with counted.installed(), RouteClock(None).installed() as clock, PathTrips().installed() as trips:
        uncached_run(stack, load, queries)
    process_cpu = time.process_time() - process_before
    after_redis = redis_calls(stack.redis.url)
    n = len(queries)
    redis_per = {name: (after_redis[name] - before_redis[name]) / n for name in after_redis
                 if after_redis[name] != before_redis[name] and name not in ("info", "flushall")}
    say("profiling the route's thread")
    profile = cProfile.Profile(time.thread_time)
    with RouteClock(profile).installed():
        uncached_run(stack, load, queries)
    return {
        "searches": n,
        "sql_backend_cpu_and_p50_ms": sql,
        "postgres_statements_per_search": {k: v / n for k, v in counted.calls.most_common()},
        "redis_commands_per_search": redis_per,
        "redis_writes_on_path_per_search": trips.redis_writes / n,
        "pool_checkouts_on_path_per_search": trips.checkouts / n,
        "chunks_read_per_search": sum(d * c for d, c in counted.depths.items()) / n,
        "reads_by_depth": dict(counted.depths),
        "api_process_cpu_ms": process_cpu * 1000 / n,
        "route_thread_cpu_ms": clock.cpu * 1000 / n,
        "profiled_stage_ms": stage_times(profile, n),
        "profiled_top": top_functions(profile, n),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=12000, help="corpus size (company A above the exact-search "
                        "limit of 10,000 chunks needs about 12,000; default 12000)")
    parser.add_argument("--searches", type=int, default=300, help="distinct queries per run (default 300)")
    parser.add_argument("--seed", type=int, default=20240601)
    opts = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    root = Path(tempfile.mkdtemp(prefix="opsctl-search-cost-"))
    try:
        with running_stack(root, 2, COMPANIES) as stack, closing(LoadProcess()) as load:
            s = stack.settings
            corpus = build_corpus(opts.chunks, opts.seed, s.chunk_size, s.chunk_overlap)
            say(f"ingesting {corpus.n_chunks} chunks")
            ingest.service_ingest(stack, corpus, load, 4, max(600.0, corpus.n_chunks / 20))
            found = measure(stack, load, make_queries(corpus, "A", opts.searches, opts.seed + 1), say)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"uncached POST /v1/search, mode vector, one client, {found['searches']} distinct queries")
    print(f"API process CPU per search {found['api_process_cpu_ms']:.3f} ms, "
          f"of it the route's thread {found['route_thread_cpu_ms']:.3f} ms")
    print("the SQL alone, one client: PostgreSQL backend CPU ms per query / p50 ms (median of 3 runs in turn)")
    for name, (cpu, p50) in found["sql_backend_cpu_and_p50_ms"].items():
        if name.endswith("buffers"):  # (shared buffers, rows scanned) per query, EXPLAIN ANALYZE
            print(f"  {cpu:7.1f} buffers, {p50:7.1f} rows scanned  {name.removesuffix(': buffers')}")
        else:
            print(f"  {cpu:7.3f} / {p50:7.3f}  {name}")
    print("PostgreSQL statements per search:")
    for text, per in found["postgres_statements_per_search"].items():
        print(f"  {per:6.2f}  {text}")
    print(f"chunks read per search {found['chunks_read_per_search']:.1f} (reads by depth: {found['reads_by_depth']})")
    print(f"the route's thread per search: {found['redis_writes_on_path_per_search']:.2f} writes to Redis "
          f"(round trips), {found['pool_checkouts_on_path_per_search']:.2f} pool checkouts")
    print("Redis commands per search:")
    for name, per in sorted(found["redis_commands_per_search"].items()):
        print(f"  {per:6.2f}  {name}")
    print("route thread, profiled (cProfile inflates: read as shares), ms per search:")
    for label, ms in found["profiled_stage_ms"]:
        print(f"  {ms:7.3f}  {label}")
    print("route thread, profiled, the functions with the most own CPU, ms per search:")
    for label, ms in found["profiled_top"]:
        print(f"  {ms:7.3f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
