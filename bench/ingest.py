"""Section (a): ingest throughput, the service end to end against raw COPY into the same database.

Raw baselines COPY the corpus's chunks (embedded beforehand with the service's embedder) in
one binary COPY on one connection:

1. into ``raw_idx``, a plain table ``LIKE chunks INCLUDING ALL`` (same columns, generated
   tsvector, primary key, btree, HNSW and GIN indexes) with the storage parameters of a chunks
   partition (rows as wide as the service's): the naive indexed COPY;
2. into ``raw_noidx`` (same columns and storage, no index), then, as a third figure, building the same
   indexes afterwards (what a bulk load would do).

The service run POSTs the documents in batches from several client threads and ends when the
queue holds no queued or failed job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

from bench.corpus import Corpus, Doc
from bench.load import LoadProcess, RunResult, post_documents
from bench.profile import ActivitySampler, meter_for, scrape_workers
from bench.stack import Stack
from bench.stats import percentile
from core.partitioning import partition_with

COPY_SQL = (
    "COPY {table} (company_id, document_id, external_id, ord, body, metadata, embedding, created_at)"
    " FROM STDIN WITH (FORMAT BINARY)"
)
COPY_TYPES = ["int8", "int8", "text", "int4", "text", "jsonb", "vector", "timestamptz"]
RAW_TABLES_SQL = (
    "DROP TABLE IF EXISTS raw_idx, raw_noidx",
    "CREATE TABLE raw_idx (LIKE chunks INCLUDING ALL)" + partition_with("chunks"),
    "CREATE TABLE raw_noidx (LIKE chunks INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY"
    " INCLUDING STORAGE)" + partition_with("chunks"),
)
BULK_INDEX_SQL = (
    "ALTER TABLE raw_noidx ADD PRIMARY KEY (company_id, id, created_at)",
    "CREATE INDEX ON raw_noidx (company_id, document_id, ord)",
    "CREATE INDEX ON raw_noidx USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef})",
    "CREATE INDEX ON raw_noidx USING gin (tsv)",
)
PENDING_SQL = "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'failed')"  # the partial index
COUNTS_SQL = "SELECT count(*), count(*) FILTER (WHERE status = 'dead') FROM ingest_jobs"
POLL_SECONDS = 0.1
POST_BATCH_DOCS = 200


@dataclass
class RawIngest:
    chunks: int
    indexed_seconds: float
    unindexed_seconds: float
    index_build_seconds: float
    indexes: list[str]
    cpu: dict[str, Any] = field(default_factory=dict)  # during the indexed COPY

    @property
    def indexed_rate(self) -> float:
        return self.chunks / self.indexed_seconds

    @property
    def unindexed_rate(self) -> float:
        return self.chunks / self.unindexed_seconds

    @property
    def bulk_rate(self) -> float:
        return self.chunks / (self.unindexed_seconds + self.index_build_seconds)


@dataclass
class ServiceIngest:
    docs: int
    chunks: int
    seconds: float
    posting_seconds: float
    post_p50_ms: float
    post_p99_ms: float
    dead_jobs: int
    stages: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    worker_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.chunks / self.seconds


@dataclass(frozen=True)
class Embedded:
    vectors: npt.NDArray[np.float32]
    seconds: float


def embed_corpus(corpus: Corpus, embedder: Any, batch: int) -> Embedded:
    """The corpus's chunks embedded by the service's embedder, ``batch`` texts at a time."""
    texts = corpus.chunk_texts()
    started = time.perf_counter()
    parts = [embedder.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return Embedded(np.concatenate(parts), time.perf_counter() - started)


def _raw_rows(corpus: Corpus, vectors: npt.NDArray[np.float32], companies: dict[str, int]) -> list[tuple[Any, ...]]:
    created = datetime.now(UTC)
    rows: list[tuple[Any, ...]] = []
    for doc_no, doc in enumerate(corpus.docs, start=1):
        meta = Jsonb(doc.metadata)
        offset = corpus.chunk_offset(doc_no - 1)
        rows.extend((companies[doc.company], doc_no, doc.external_id, ord_, text, meta, vectors[offset + ord_], created)
                    for ord_, text in enumerate(doc.chunks))
    return rows


def _copy(conn: psycopg.Connection[Any], table: str, rows: list[tuple[Any, ...]]) -> float:
    conn.execute("CHECKPOINT")
    started = time.perf_counter()
    with conn.cursor().copy(COPY_SQL.format(table=table)) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            copy.write_row(row)
    conn.commit()
    return time.perf_counter() - started


def _build_indexes(conn: psycopg.Connection[Any], m: int, ef_construction: int) -> float:
    started = time.perf_counter()
    for statement in BULK_INDEX_SQL:
        conn.execute(statement.format(m=int(m), ef=int(ef_construction)))
    conn.commit()
    return time.perf_counter() - started


def raw_ingest(stack: Stack, corpus: Corpus, vectors: npt.NDArray[np.float32], load_pid: int) -> RawIngest:
    companies = {name: t.company_id for name, t in stack.tenants.items()}
    rows = _raw_rows(corpus, vectors, companies)
    s = stack.settings
    with stack.connect() as conn:
        for statement in RAW_TABLES_SQL:
            conn.execute(statement)
        conn.commit()
        indexes = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'raw_idx'")]
        unindexed = _copy(conn, "raw_noidx", rows)
        build = _build_indexes(conn, s.hnsw_m, s.hnsw_ef_construction)
        meter = meter_for(stack, load_pid)
        meter.start()
        indexed = _copy(conn, "raw_idx", rows)
        cpu = meter.stop()
        conn.execute("DROP TABLE raw_idx, raw_noidx")
        conn.commit()
        conn.execute("CHECKPOINT")
    return RawIngest(len(rows), indexed, unindexed, build, indexes, cpu)


Batch = tuple[str, list[dict[str, Any]]]  # (API key, documents)


def post_batches(corpus: Corpus, keys: dict[str, str], size: int = POST_BATCH_DOCS) -> list[Batch]:
    """The documents in POST-sized batches per company, in corpus order of their first document."""
    by_company: dict[str, list[tuple[int, Doc]]] = {}
    for i, doc in enumerate(corpus.docs):
        by_company.setdefault(doc.company, []).append((i, doc))
    batches: list[tuple[int, str, list[dict[str, Any]]]] = []
    for company, docs in by_company.items():
        for start in range(0, len(docs), size):
            part = docs[start : start + size]
            batches.append((part[0][0], keys[company], [d.payload() for _, d in part]))
    return [(key, docs) for _, key, docs in sorted(batches, key=lambda b: b[0])]


def _wait_for_queue(conn: psycopg.Connection[Any], posting: Any, deadline: float) -> float:
    """Poll until every POST has returned (its jobs are committed) and no job is queued or
    failed (a job in flight is still queued until its batch commits); returns time.time() then."""
    while True:
        posted = posting.done()  # read before counting: every job of a finished POST is committed
        if posted and posting.exception() is not None:
            raise RuntimeError(f"posting documents failed: {posting.exception()}")
        pending = conn.execute(PENDING_SQL).fetchone()[0]  # type: ignore[index]
        if posted and pending == 0:
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingest did not finish in time: {pending} jobs pending")
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class Posted:
    """One load run until the queue drained: the clients' figures, when the last job finished
    (time.time()), the workers' sampled stages and every process's CPU during the run."""

    run: RunResult
    finished_at: float
    stages: dict[str, float]
    cpu: dict[str, Any]
    sampler_cpu_seconds: float = 0.0  # the activity sampler's thread, inside cpu's bench process


def post_until_done(stack: Stack, conn: psycopg.Connection[Any], load: LoadProcess, timeout: float,
                    fn: Callable[..., RunResult], *args: Any) -> Posted:
    """Run ``fn(*args)`` in the load process, sampled and metered, until every POST has returned
    and no job is queued or failed; a failed request fails the run."""
    sampler = ActivitySampler(stack.db_url)
    meter = meter_for(stack, load.pid)
    meter.start()
    sampler.start()
    posting = load.submit(fn, *args)
    try:
        finished_at = _wait_for_queue(conn, posting, time.monotonic() + timeout)
    finally:
        stages = sampler.stop()
    cpu = meter.stop()
    posted = posting.result()
    if posted.errors:
        raise RuntimeError(f"{len(posted.errors)} POSTs failed; first: {posted.errors[0]}")
    return Posted(posted, finished_at, stages, cpu, sampler.cpu_seconds)


def service_ingest(stack: Stack, corpus: Corpus, load: LoadProcess, clients: int, timeout: float,
                   batch_docs: int = POST_BATCH_DOCS) -> ServiceIngest:
    keys = {name: t.api_key for name, t in stack.tenants.items()}
    batches = post_batches(corpus, keys, batch_docs)
    workers = [w for w in stack.workers.workers if w.alive()]
    with stack.connect(autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        run = post_until_done(stack, conn, load, timeout, post_documents, stack.api_url, batches, clients)
        posted, finished_at, stages, cpu = run.run, run.finished_at, run.stages, run.cpu
        stored = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]  # type: ignore[index]
        jobs, dead = conn.execute(COUNTS_SQL).fetchone()  # type: ignore[misc]
    if jobs != len(corpus.docs) or dead:
        raise RuntimeError(f"{jobs} jobs for {len(corpus.docs)} documents, {dead} dead")
    if stored != corpus.n_chunks:
        raise RuntimeError(f"the service stored {stored} chunks, the corpus has {corpus.n_chunks}")
    return ServiceIngest(
        docs=len(corpus.docs), chunks=int(stored), seconds=finished_at - posted.started_at,
        posting_seconds=posted.wall_seconds, post_p50_ms=percentile(posted.seconds, 50) * 1000,
        post_p99_ms=percentile(posted.seconds, 99) * 1000, dead_jobs=dead, stages=stages, cpu=cpu,
        worker_metrics=scrape_workers([w.metrics_port for w in workers]),
    )
