"""``python -m bench.cache_bench [--quick]``: search cache hit vs miss, next to raw baselines.

Starts the core in a temp dir (embedded PostgreSQL and Redis, one worker, the API in a thread),
ingests a small corpus, then measures from one client at concurrency 1, all in the same run:

    miss          POST /v1/search (hybrid) with the cache empty: auth, embed, SQL, store in Redis
    hit           the same requests again: auth (cached lookup + the company's version row),
                  Redis GET, query-log count
    GET /healthz  the HTTP round trip alone (the floor of any API call)
    redis GET     a raw GET of one cached answer (the floor of the hit path)
    SQL vector    the raw top-10 vector query of the service, embedding precomputed (the floor
                  of the miss path's database work)

and prints p50/p99 of each with the ratios hit/GET, miss/SQL and miss/hit.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.stack import Stack, running_stack
from bench.stats import Latency, ratio, summarize

WORDS = ("invoice", "refund", "shipping", "parcel", "password", "account", "security", "billing",
         "warehouse", "carrier", "customs", "tracking", "return", "label", "payment", "card", "subscription",
         "renewal", "discount", "coupon", "order", "delivery", "courier", "address", "region", "tax",
         "receipt", "support", "ticket", "escalation", "outage", "status")


def corpus(n_docs: int, rng: random.Random) -> list[dict[str, Any]]:
    docs = []
    for i in range(n_docs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
                     for _ in range(rng.randint(3, 8))]
        docs.append({"external_id": f"doc-{i}", "text": " ".join(sentences)})
    return docs


def queries(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct queries of 2 to 4 words."""
    found: dict[str, None] = {}
    while len(found) < n:
        found[" ".join(rng.sample(WORDS, rng.randint(2, 4)))] = None
    return list(found)


def ingest(stack: Stack, key: str, docs: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        for start in range(0, len(docs), 200):
            http.post("/v1/documents", json={"documents": docs[start:start + 200]}).raise_for_status()
    deadline = time.monotonic() + 600
    with stack.connect(autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'failed')").fetchone()
            if row is not None and row[0] == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("ingest did not finish within 10 minutes")
            time.sleep(0.2)


def timed(n: int, call: Callable[[int], None]) -> Latency:
    samples = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - t0)
    return summarize(samples, time.perf_counter() - started, 1)


def measure(stack: Stack, n_queries: int, hit_rounds: int, rng: random.Random) -> dict[str, Latency]:
    import redis

    from bench.search import service_searches_exactly
    from core.cache import SEARCH_PREFIX
    from core.db import make_pool
    from core.embed import make_embedder
    from core.search.retrieve import vector_query

    tenant = next(iter(stack.tenants.values()))
    texts = queries(n_queries, rng)
    client = redis.Redis.from_url(stack.redis.url)
    results: dict[str, Latency] = {}
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {tenant.api_key}"},
                      timeout=60) as http:

        def search(i: int, expect: bool) -> None:
            response = http.post("/v1/search", json={"query": texts[i % len(texts)], "k": 10})
            response.raise_for_status()
            if response.json()["cached"] is not expect:
                raise RuntimeError(f"expected cached={expect} for query {i}")

        http.post("/v1/search", json={"query": "warm up the connection", "k": 10}).raise_for_status()
        for key in client.scan_iter(match=SEARCH_PREFIX + "*"):
            client.unlink(key)
        results["miss"] = timed(len(texts), lambda i: search(i, False))
        results["hit"] = timed(len(texts) * hit_rounds, lambda i: search(i, True))
        results["GET /healthz"] = timed(len(texts) * hit_rounds, lambda _: http.get("/healthz").raise_for_status())
    one_key = next(iter(client.scan_iter(match=SEARCH_PREFIX + "*")))
    results["redis GET"] = timed(len(texts) * hit_rounds, lambda _: client.get(one_key))
    client.close()

    embedder = make_embedder(stack.settings)
    vectors = embedder.embed(texts)
    pool = make_pool(stack.db_url, stack.settings, min_size=1, max_size=1)
    try:
        with pool.connection() as conn:
            sql = vector_query(service_searches_exactly(conn, stack.settings, tenant.company_id))
            def raw(i: int) -> None:
                conn.execute(sql, {"q": vectors[i % len(vectors)], "company": tenant.company_id, "n": 10,
                                   "space": None}).fetchall()

            raw(0)
            results["SQL vector"] = timed(len(texts), raw)
            conn.rollback()
    finally:
        pool.close()
    return results


def report(results: dict[str, Latency], facts: str, console: Console) -> None:
    table = Table(title=f"search cache: hit vs miss ({facts})", header_style="bold", show_edge=False)
    for column in ("figure", "n", "p50 ms", "p99 ms", "baseline", "p50 ratio", "p99 ratio"):
        table.add_column(column, justify="left" if column in ("figure", "baseline") else "right")

    def row(name: str, baseline: str | None) -> None:
        lat = results[name]
        base = results[baseline] if baseline else None
        table.add_row(name, str(lat.n), f"{lat.p50_ms:.3f}", f"{lat.p99_ms:.3f}", baseline or "",
                      f"{ratio(lat.p50_ms, base.p50_ms):.1f}x" if base else "",
                      f"{ratio(lat.p99_ms, base.p99_ms):.1f}x" if base else "")

    row("hit", "redis GET")
    row("miss", "SQL vector")
    row("miss", "hit")
    row("hit", "GET /healthz")
    row("GET /healthz", None)
    row("redis GET", None)
    row("SQL vector", None)
    console.print(table)
    console.print("One client, concurrency 1, on a shared and noisy machine: read the ratios, not the absolutes.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus and few queries (smoke run)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    n_docs, n_queries, rounds = (200, 40, 2) if args.quick else (3000, 300, 3)
    rng = random.Random(args.seed)
    err = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="opsctl-cache-bench-") as tmp, \
            running_stack(Path(tmp), 1, ("A",)) as stack:
        err.print(f"ingesting {n_docs} documents…")
        ingest(stack, stack.tenants["A"].api_key, corpus(n_docs, rng))
        with stack.connect() as conn:
            row = conn.execute("SELECT count(*) FROM chunks").fetchone()
        chunks = int(row[0]) if row else 0
        err.print(f"measuring {n_queries} queries…")
        results = measure(stack, n_queries, rounds, rng)
    report(results, f"{n_docs} documents, {chunks} chunks, hybrid k=10, embedder hash", Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
