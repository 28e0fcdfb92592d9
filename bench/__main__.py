"""``python -m bench``: start the core in a temp dir, measure it against raw PostgreSQL, report.

    (a) ingest      the service end to end (POST /v1/documents → worker pool → chunks) in chunks/s,
                    against binary COPY of the same embedded chunks into an identically indexed
                    table, into an unindexed table, and into an unindexed table plus an index build
    (b) search      POST /v1/search mode=vector (uncached and cached) against the raw top-10 SQL
                    query, p50/p99/QPS at concurrency 1 and 8
    (c) recall@10   of the service's vector search against exact search, for the company holding
                    90% of the rows and the one holding 10%

Prints one report (tables on stdout) and writes it as JSON to bench/results/latest.json.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import ingest, search
from bench.corpus import COMPANIES, Corpus, build_corpus, make_queries
from bench.load import LoadProcess
from bench.machine import describe
from bench.report import Results, render, write_json
from bench.scratch import scratch_dir
from bench.stack import Stack, running_stack
from core.embed import make_embedder

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
CONCURRENCIES = (1, 8)


@dataclass(frozen=True)
class Options:
    chunks: int
    queries: int
    recall_queries: int
    workers: int
    clients: int
    batch_docs: int
    seed: int
    keep: bool
    output: Path
    embedder: str


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, help="corpus size in chunks (default 50000; 5000 with --quick)")
    p.add_argument("--quick", action="store_true", help="small run for a smoke test (5000 chunks, fewer queries)")
    p.add_argument("--queries", type=int, help="distinct search queries per latency run (default 300; 60 quick)")
    p.add_argument("--recall-queries", type=int, help="queries per company for recall (default 200; 50 quick)")
    p.add_argument("--workers", type=int, default=2, help="ingest worker processes (default 2)")
    p.add_argument("--clients", type=int, default=4, help="concurrent POST /v1/documents clients (default 4)")
    p.add_argument("--batch-docs", type=int, default=ingest.POST_BATCH_DOCS, help="documents per POST (default 200)")
    p.add_argument("--seed", type=int, default=20240601, help="corpus and query seed")
    p.add_argument("--embedder", choices=("hash", "minilm"), default="hash",
                   help="the service's embedder (default hash; minilm = all-MiniLM-L6-v2 on CPU, slow: use "
                        "--chunks 5000)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (database, logs) for inspection")
    p.add_argument("--output", type=Path,
                   help=f"JSON report path (default {RESULTS}; latest-minilm.json with --embedder minilm)")
    a = p.parse_args(argv)
    quick = bool(a.quick)
    opts = Options(
        chunks=a.chunks or (5000 if quick else 50000),
        queries=a.queries or (60 if quick else 300),
        recall_queries=a.recall_queries or (50 if quick else 200),
        workers=a.workers, clients=a.clients, batch_docs=a.batch_docs, seed=a.seed, keep=a.keep,
        output=a.output or (RESULTS if a.embedder == "hash" else RESULTS.with_name(f"latest-{a.embedder}.json")),
        embedder=a.embedder,
    )
    if min(opts.chunks, opts.queries, opts.recall_queries, opts.workers, opts.clients, opts.batch_docs) < 1:
        p.error("sizes and counts must be positive")
    return opts


class Progress:
    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:7.1f}s[/dim] {text}")


def _corpus_facts(corpus: Corpus) -> dict[str, Any]:
    return {
        "docs": len(corpus.docs), "chunks": corpus.n_chunks,
        "chunks_per_doc": round(corpus.n_chunks / len(corpus.docs), 2),
        "chunks_company_A": corpus.chunks_of("A"), "chunks_company_B": corpus.chunks_of("B"),
        "vocabulary": len(corpus.vocabulary), "topics": len(corpus.topics),
        "topics_used_A": len({d.topic for d in corpus.docs_of("A")}),
        "topics_used_B": len({d.topic for d in corpus.docs_of("B")}),
    }


def _settings_facts(stack: Stack) -> dict[str, Any]:
    s = stack.settings
    keys = ("embedder", "embed_dim", "chunk_size", "chunk_overlap", "hnsw_m", "hnsw_ef_construction",
            "hnsw_ef_search", "worker_batch_size", "db_pool_max", "search_per_document")
    return {k: getattr(s, k) for k in keys}


def _query_embed_ms(embedder: Any, queries: list[str]) -> float:
    started = time.perf_counter()
    for q in queries:
        embedder.embed([q])
    return (time.perf_counter() - started) * 1000 / len(queries)


def measure(stack: Stack, load: LoadProcess, opts: Options, say: Progress) -> Results:
    s = stack.settings
    say(f"building a corpus of {opts.chunks} chunks")
    corpus = build_corpus(opts.chunks, opts.seed, s.chunk_size, s.chunk_overlap)
    embedder = make_embedder(s)
    batch = max(1, round(s.worker_batch_size * corpus.n_chunks / len(corpus.docs)))
    embedded = ingest.embed_corpus(corpus, embedder, batch)
    with stack.connect() as conn:
        machine = describe(conn)
    say(f"raw COPY baselines ({corpus.n_chunks} chunks, {len(corpus.docs)} docs)")
    raw = ingest.raw_ingest(stack, corpus, embedded.vectors, load.pid)
    say(f"service ingest: {opts.clients} clients, {opts.workers} workers")
    timeout = max(600.0, corpus.n_chunks / 20)
    service = ingest.service_ingest(stack, corpus, load, opts.clients, timeout)
    say("search latency")
    plans = search.prepare(stack)
    queries = make_queries(corpus, "A", opts.queries, opts.seed + 1)
    query_vectors = embedder.embed(queries)
    latency = search.latency(stack, load, queries, query_vectors, CONCURRENCIES)
    query_embed_ms = _query_embed_ms(embedder, queries)
    decomposition = search.decompose(stack, load, query_vectors, query_embed_ms, latency[0])
    say("recall")
    recall = []
    for i, company in enumerate(COMPANIES):
        recall_queries = make_queries(corpus, company, opts.recall_queries, opts.seed + 2 + i)
        share = corpus.chunks_of(company) / corpus.n_chunks
        recall.append(search.recall(stack, load, company, recall_queries, embedder.embed(recall_queries), share,
                                    plans))
    components = {
        "chunk_rate": corpus.n_chunks / corpus.chunk_seconds,
        "embed_rate": corpus.n_chunks / embedded.seconds,
        "query_embed_ms": query_embed_ms,
    }
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
    return Results(options, machine, _settings_facts(stack), _corpus_facts(corpus), raw, service, components, plans,
                   latency, decomposition, recall)


def run(opts: Options) -> Results:
    say = Progress()
    with scratch_dir("opsctl-bench-", opts.keep, say) as root:
        say(f"starting PostgreSQL, Redis, {opts.workers} workers ({opts.embedder} embedder) and the API in {root}")
        with running_stack(root, opts.workers, COMPANIES, opts.embedder) as stack, closing(LoadProcess()) as load:
            results = measure(stack, load, opts, say)
            say("stopping")
        return results


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        results = run(opts)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    write_json(results, opts.output)
    render(results, Console(width=180))
    print(f"JSON report: {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
