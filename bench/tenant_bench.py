"""Tenant-aware vector indexes on up to a million chunks: recall@10 and p50 per company share.

    python -m bench.tenant_bench                  # 1,000,000 chunks (slow: the HNSW builds take long)
    python -m bench.tenant_bench --chunks 200000  # a smaller run
    python -m bench.tenant_bench --quick          # 20,000 chunks, a smoke run (make bench-quick)

The corpus is the topical model of ``bench.corpus`` (subjects with their own vocabularies, a
Zipf popularity of subjects per company), one ~110-word chunk per draw, embedded with the
``hash`` embedder. It is loaded with binary COPY straight into ``chunks`` (not through the API:
a million chunks through the ingest pipeline would take hours here); the shared HNSW index is
dropped before the load and built after it, as on a restore (the full-text GIN index is dropped:
keyword search is not what this measures). Then ``opsctl index tenants --apply``
(``tenant_indexes``, the default policy) gives the companies between ``min_rows`` and
``max_share`` their own index, and for every company share (90 % down to 0.1 %):

- ``recall@10`` of the service's own search path (``core.search.retrieve.search``: the exact /
  own index / shared graph decision, the pool's settings; every query distinct, so uncached)
  against exact search of the same company, and its p50;
- next to the raw unfiltered HNSW query (``ORDER BY embedding <=> q LIMIT 10`` over all
  chunks) at ``hnsw.ef_search = 100`` on the same data and the same query vectors, and, for the
  largest share's queries, that raw query's own recall against exact unfiltered search.

The service runs at each ``--service-ef`` (``hnsw_ef_search`` set explicitly; ``db``: the
database default, 500 unless tuned). Results: a table, and JSON in ``bench/results/tenant-bench.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.corpus import (
    BACKGROUND_WORDS,
    TOPIC_POPULARITY_EXPONENT,
    Corpus,
    _document_words,
    make_queries,
    make_topics,
    vocabulary,
    zipf_probabilities,
)
from bench.scratch import scratch_dir

DIM = 384
K = 10
CHUNK_WORDS = 110
BATCH = 20_000
RAW_EF_SEARCH = 100
RESULTS = Path(__file__).resolve().parent / "results" / "tenant-bench.json"
# (name, share of all chunks); "rest" is not measured, it makes the shares add up to 100 %
SHARES = (("90%", 0.90), ("5%", 0.05), ("2.5%", 0.025), ("1%", 0.01), ("0.5%", 0.005), ("0.3%", 0.003),
          ("0.1%", 0.001), ("rest", 0.006))

EXACT_SQL = "SELECT id FROM chunks WHERE company_id = %s ORDER BY embedding <=> %s, id LIMIT %s"
RAW_SQL = "SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT %s"
EXACT_ALL_SQL = "SELECT id FROM chunks ORDER BY embedding <=> %s, id LIMIT %s"


def _company_of_rows(total: int) -> list[int]:
    """Which share each of ``total`` rows belongs to (index into SHARES), shuffled with a fixed seed."""
    counts = [round(total * share) for _, share in SHARES]
    counts[-1] = total - sum(counts[:-1])
    owner = np.repeat(np.arange(len(SHARES)), counts)
    np.random.default_rng(11).shuffle(owner)
    return owner.tolist()


def load(url: str, total: int, company_ids: list[int], console: Console) -> tuple[Corpus, dict[str, float]]:
    """``total`` topical chunks by binary COPY; the shared HNSW index rebuilt after. Returns the corpus
    model (for queries) and the seconds each step took."""
    import psycopg
    from pgvector.psycopg import register_vector

    from core.embed import HashEmbedder

    rng = random.Random(7)
    np_rng = np.random.default_rng(7)
    vocab = vocabulary(rng)
    topics = make_topics(np_rng)
    background = zipf_probabilities(BACKGROUND_WORDS)
    topic_zipf = zipf_probabilities(len(topics), TOPIC_POPULARITY_EXPONENT)
    popularity = {name: topic_zipf[np_rng.permutation(len(topics))] for name, _ in SHARES}
    corpus = Corpus([], vocab, topics=topics, popularity=popularity)
    owner = _company_of_rows(total)
    embedder = HashEmbedder(DIM)
    timings: dict[str, float] = {}
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("DROP INDEX chunks_embedding_hnsw_idx")
        conn.execute("DROP INDEX chunks_tsv_idx")  # keyword search is not measured here: a faster load
        docs = {}
        for i, company in enumerate(company_ids):
            row = conn.execute("INSERT INTO documents (company_id, external_id, title, body, content_hash, created_at)"
                               " VALUES (%s, %s, 't', '', %s, %s) RETURNING id",
                               (company, f"bench-{i}", b"\x00" * 32, now)).fetchone()
            assert row is not None
            docs[company] = int(row[0])
        started = time.monotonic()
        for start in range(0, total, BATCH):
            names = owner[start:start + BATCH]
            texts = []
            for share in names:
                main = int(np_rng.choice(len(topics), p=popularity[SHARES[share][0]]))
                texts.append(" ".join(vocab[w] for w in _document_words(np_rng, topics, main, None, background,
                                                                        CHUNK_WORDS)))
            vectors = embedder.embed(texts)
            with conn.cursor() as cur, cur.copy(
                    "COPY chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
                    " FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "text", "int4", "text", "vector", "timestamptz"])
                for j, (share, text) in enumerate(zip(names, texts, strict=True)):
                    company = company_ids[share]
                    copy.write_row((company, docs[company], f"bench-{share}", start + j, text, vectors[j], now))
            console.print(f"  loaded {min(start + BATCH, total):,} / {total:,} chunks "
                          f"({time.monotonic() - started:.0f} s)")
        timings["load_seconds"] = time.monotonic() - started
        started = time.monotonic()
        conn.execute("SET maintenance_work_mem = '2GB'")  # the graph of a million 384-d vectors fits
        conn.execute("CREATE INDEX chunks_embedding_hnsw_idx ON chunks USING hnsw (embedding vector_cosine_ops)"
                     " WITH (m = 16, ef_construction = 64)")
        timings["shared_hnsw_seconds"] = time.monotonic() - started
        conn.execute("VACUUM ANALYZE chunks")
    return corpus, timings


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass
class Share:
    name: str
    company: int
    api_key: str
    chunks: int = 0
    path: str = ""
    queries: list[str] = field(default_factory=list)
    exact: list[list[int]] = field(default_factory=list)
    raw_p50_ms: float = 0.0
    raw_recall: float | None = None  # the raw query's own recall against exact unfiltered search


def prepare(conn: Any, corpus: Corpus, share: Share, n_queries: int, exact_max_rows: int, anchor: bool) -> None:
    """The share's queries, their exact top K (index scans off) and the raw unfiltered HNSW p50;
    ``anchor``: also the raw query's own recall against exact unfiltered search (a full scan per query)."""
    from core.cache import Cache
    from core.embed import HashEmbedder
    from core.search.retrieve import has_own_index

    share.queries = make_queries(corpus, share.name, n_queries, seed=100 + share.company)
    vectors = HashEmbedder(DIM).embed(share.queries)
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        share.exact = [[int(r[0]) for r in conn.execute(EXACT_SQL, (share.company, v, K)).fetchall()]
                       for v in vectors]
        everyone = [[int(r[0]) for r in conn.execute(EXACT_ALL_SQL, (v, K)).fetchall()] for v in vectors] \
            if anchor else []
    conn.execute(f"SET hnsw.ef_search = {RAW_EF_SEARCH}")
    times, found = [], []
    for v in vectors:
        started = time.perf_counter()
        found.append([int(r[0]) for r in conn.execute(RAW_SQL, (v, K)).fetchall()])
        times.append((time.perf_counter() - started) * 1000)
    conn.execute("RESET hnsw.ef_search")
    share.raw_p50_ms = _p50(times)
    if anchor:
        from opsctl.vindex.decide import recall_at_k

        share.raw_recall = statistics.fmean(recall_at_k(f, e, K) for f, e in zip(found, everyone, strict=True))
    row = conn.execute("SELECT count(*) FROM chunks WHERE company_id = %s", (share.company,)).fetchone()
    share.chunks = int(row[0]) if row else 0
    own = has_own_index(conn, Cache(None), share.company)
    share.path = "own index" if own else ("exact" if share.chunks <= exact_max_rows else "shared graph")


def measure_service(settings: Any, share: Share) -> tuple[float, float]:
    """The service's search (``core.search.retrieve.search``, its own pool): recall@K and p50 ms."""
    from core.cache import Cache
    from core.db import make_pool
    from core.embed import HashEmbedder
    from core.search.retrieve import SearchRequest, search
    from core.tenants import Principal
    from opsctl.vindex.decide import recall_at_k

    assert settings.database_url
    pool = make_pool(settings.database_url, settings, min_size=1, max_size=1)
    cache, embedder, principal = Cache(None), HashEmbedder(DIM), Principal(share.company, 1)
    times, recalls = [], []
    try:
        for query, exact in zip(share.queries, share.exact, strict=True):
            req = SearchRequest.model_validate({"query": query, "k": K, "mode": "vector"})
            started = time.perf_counter()
            answer = search(pool, cache, embedder, principal, req, ttl=60,
                            exact_max_rows=settings.vector_exact_max_rows)
            times.append((time.perf_counter() - started) * 1000)
            recalls.append(recall_at_k([r["chunk_id"] for r in answer["results"]], exact, K))
    finally:
        pool.close()
    return statistics.fmean(recalls), _p50(times)


def measure_api(api_url: str, share: Share) -> tuple[float, float]:
    """POST /v1/search (mode vector) for the share's queries: recall@K and p50 ms of the whole request
    (a new API process and data version per round, no Redis: every query is uncached)."""
    import httpx

    from opsctl.vindex.decide import recall_at_k

    times, recalls = [], []
    headers = {"Authorization": f"Bearer {share.api_key}"}
    with httpx.Client(base_url=api_url, timeout=60) as client:
        for query, exact in zip(share.queries, share.exact, strict=True):
            body = {"query": query, "k": K, "mode": "vector"}
            started = time.perf_counter()
            response = client.post("/v1/search", json=body, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            recalls.append(recall_at_k([int(h["chunk_id"]) for h in response.json()["results"]], exact, K))
    return statistics.fmean(recalls), _p50(times)


def run(root: Path, total: int, n_queries: int, service_efs: list[str], console: Console) -> dict[str, Any]:
    import psycopg
    from pgvector.psycopg import register_vector

    from bench.stack import UNLIMITED_RATE, ApiServer
    from core.config import Settings
    from core.db import migrate
    from core.embedded import EmbeddedPostgres
    from core.tenants import create_company
    from opsctl.vindex.policy import VectorIndexPolicy
    from opsctl.vindex.tenants_service import tenant_indexes

    pg = EmbeddedPostgres(root / "pg", database="tenantbench")
    url = pg.start()
    try:
        base: dict[str, Any] = {"database_url": url, "embedder": "hash", "embed_dim": DIM, "data_dir": root / "data",
                                "rate_limit_per_second": UNLIMITED_RATE, "rate_limit_burst": int(UNLIMITED_RATE)}
        migrate(url, Settings.model_validate(base))
        with psycopg.connect(url, autocommit=True) as conn:
            made = [create_company(conn, f"share-{name}", actor="bench") for name, _ in SHARES]
        shares = [Share(name, m.company_id, m.api_key) for (name, _), m in zip(SHARES, made, strict=True)]
        console.print(f"loading {total:,} chunks by COPY (hash embedder, topical corpus)")
        corpus, timings = load(url, total, [s.company for s in shares], console)
        started = time.monotonic()
        moved = tenant_indexes(Settings.model_validate(base), VectorIndexPolicy.model_validate({}), apply=True)
        timings["tenant_indexes_seconds"] = time.monotonic() - started
        console.print(f"  shared HNSW built in {timings['shared_hnsw_seconds']:.0f} s; {moved.sentence()} "
                      f"({timings['tenant_indexes_seconds']:.0f} s)")
        measured = [s for s in shares if s.name != "rest"]
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            for share in measured:
                prepare(conn, corpus, share, n_queries, Settings.model_validate(base).vector_exact_max_rows,
                        anchor=share is measured[0])
        rows: dict[str, dict[str, Any]] = {
            s.name: {"share": s.name, "chunks": s.chunks, "path": s.path, "raw_p50_ms": round(s.raw_p50_ms, 3),
                     "raw_recall": None if s.raw_recall is None else round(s.raw_recall, 4)}
            for s in measured}
        for ef in service_efs:
            settings = Settings.model_validate({**base, **({} if ef == "db" else {"hnsw_ef_search": int(ef)})})
            with psycopg.connect(url, autocommit=True) as conn:  # a new data version: nothing cached
                conn.execute("UPDATE companies SET data_version = data_version + 1")
            api = ApiServer(settings, None)  # type: ignore[arg-type]
            api.start()
            try:
                for share in measured:
                    row = rows[share.name]
                    recall, p50 = measure_service(settings, share)
                    api_recall, api_p50 = measure_api(api.url, share)
                    row[f"recall ef={ef}"] = round(recall, 4)
                    row[f"p50 ef={ef}"] = round(p50, 3)
                    row[f"x raw ef={ef}"] = round(p50 / share.raw_p50_ms, 2) if share.raw_p50_ms else None
                    row[f"api recall ef={ef}"] = round(api_recall, 4)
                    row[f"api p50 ef={ef}"] = round(api_p50, 3)
                    console.print(f"  {row}")
            finally:
                api.stop()
        return {"chunks": total, "queries_per_share": n_queries, "raw_ef_search": RAW_EF_SEARCH,
                "timings": {k: round(v, 1) for k, v in timings.items()}, "own_indexes": moved.sentence(),
                "rows": list(rows.values())}
    finally:
        pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tenant_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50, help="queries per company share")
    parser.add_argument("--service-ef", default="100,db", help="the service's ef_search values (db: the "
                                                                "database default)")
    parser.add_argument("--quick", action="store_true", help="20,000 chunks, 10 queries per share")
    parser.add_argument("--root", type=Path, default=None, help="work directory, kept (default: a new temporary "
                                                                "one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory for inspection")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunks, args.queries = 20_000, 10
    console = Console(stderr=True)
    started = time.monotonic()
    with contextlib.nullcontext(args.root) if args.root else scratch_dir("opsctl-tenant-bench-", args.keep,
                                                                         console.print) as root:
        result = run(root, args.chunks, args.queries, args.service_ef.split(","), console)
    result["total_seconds"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    table = Table(title=f"tenant-aware vector indexes: {args.chunks:,} chunks, {args.queries} queries per share; "
                        f"raw = unfiltered HNSW at ef_search {RAW_EF_SEARCH}")
    columns = list(result["rows"][0]) if result["rows"] else []
    for column in columns:
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(*(str(row[c]) for c in columns))
    Console().print(table)
    Console().print(f"timings (s): {result['timings']}; total {result['total_seconds']} s; JSON: "
                    f"{args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
