"""``make calibrate``: what one worker and one API process serve at saturation, and what data costs.

Starts a core of its own in a temp dir (``bench.stack``, the embedder ``make up`` runs unless
``--embedder``), then:

1. **worker**: with no worker running, queues ``--documents`` documents (``bench/loadmix.py``: 2-3
   chunks each), starts one worker and lets it drain the queue. Its rate is counted between the
   first batch's start and the last one's (each job's ``finished_at`` is its batch transaction's
   start), so the process's start-up (imports, loading the model) is not in it;
2. **storage**: bytes per chunk and per document of those tables, all partitions, split by
   table / HNSW / GIN / btree (``pg_table_size``, ``pg_relation_size`` of each index);
3. **api**: Locust's ``SearchUser`` (70 % repeated, 30 % new queries), no think time, at each of
   ``--users`` levels for ``--seconds`` each, against the one API process (no worker running):
   its requests/s is the best level's. The API runs in this process, so its CPU per request is
   this process's CPU over the requests;
4. **cache**: ``MEMORY USAGE`` of the cached search answers and documents in Redis.

The machine's load (load averages, and the CPU other processes took meanwhile) is written with the
figures: on a shared machine they are lower bounds. The file (``--out``, default
``policies/capacity.json``; schema in ``opsctl/capacity/calibration.py``) is what ``opsctl capacity``
and ``opsctl scale simulate`` read.

    python -m bench.calibrate --documents 1500 --users 8 16 32 --seconds 20
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.loadmix import seed_id
from bench.loadtest import Shape, create_tenants, locust_process, seed, summary
from bench.machine import _cpu_model, _ram_gib
from bench.profile import API_BACKENDS, BENCH_PROCESS, OTHER_PROCESSES, WORKER_BACKENDS, WORKER_PROCESSES, meter_for
from bench.stack import Stack, running_stack
from opsctl.capacity.calibration import (
    ApiCapacity,
    ApiRun,
    CacheSizes,
    Calibration,
    ChunkBytes,
    DocumentBytes,
    Machine,
    Storage,
    WorkerCapacity,
    dump,
)

SEARCH_MIX = ("POST /v1/search hybrid k 10: 70 % the tenant's 50 popular queries (Zipf), 30 % new ones "
              "(bench/locustfile.py SearchUser, no think time)")

QUEUED_SQL = "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'failed')"
RATE_SQL = """
WITH span AS (SELECT min(finished_at) AS min_at, max(finished_at) AS max_at FROM ingest_jobs WHERE status = 'done')
SELECT (SELECT count(*) FROM ingest_jobs, span WHERE status = 'done' AND finished_at < max_at),
       extract(epoch FROM max_at - min_at)
FROM span
"""
# per access method, the bytes of every index on the partitions of a table
INDEX_BYTES_SQL = """
SELECT am.amname, sum(pg_relation_size(i.indexrelid))
FROM pg_partition_tree(%s) t JOIN pg_index i ON i.indrelid = t.relid
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE t.isleaf GROUP BY am.amname
"""
TABLE_BYTES_SQL = "SELECT sum(pg_table_size(relid)) FROM pg_partition_tree(%s) WHERE isleaf"


def _load() -> tuple[float, float, float]:
    a, b, c = os.getloadavg()
    return round(a, 2), round(b, 2), round(c, 2)


def _wait_drained(stack: Stack, timeout: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout
    with stack.connect(autocommit=True) as conn:
        while conn.execute(QUEUED_SQL).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not drain the queue in time")
            time.sleep(0.5)


def measure_worker(stack: Stack, tenants: Sequence[Any], documents: int) -> tuple[WorkerCapacity, dict[str, Any]]:
    per_tenant = max(1, documents // len(tenants))
    seed(stack.api_url, tenants, per_tenant)
    stack.workers.resize(1)
    while not stack.workers.status()["running"]:
        time.sleep(0.1)
    meter = meter_for(stack, os.getpid())
    meter.start()
    _wait_drained(stack)
    cpu = meter.stop()
    stack.workers.resize(0)
    with stack.connect(autocommit=True) as conn:
        counted, seconds = conn.execute(RATE_SQL).fetchone()  # type: ignore[misc]
        docs = int(conn.execute("SELECT count(*) FROM documents").fetchone()[0])  # type: ignore[index]
        chunks = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])  # type: ignore[index]
    seconds = float(seconds or 0)
    if not seconds:
        raise RuntimeError(f"the worker drained {docs} documents in one batch: queue more (--documents)")
    rate = int(counted) / seconds
    used = cpu["cpu_seconds"]
    return WorkerCapacity(documents_per_second=round(rate, 2), chunks_per_second=round(rate * chunks / docs, 2),
                          documents=docs, chunks=chunks, seconds=round(seconds, 2),
                          embedder=stack.settings.embedder, batch_size=stack.settings.worker_batch_size,
                          cpu_seconds_per_chunk=round((used.get(WORKER_PROCESSES, 0.0)
                                                       + used.get(WORKER_BACKENDS, 0.0)) / chunks, 5)), cpu


def measure_storage(stack: Stack) -> Storage:
    with stack.connect(autocommit=True) as conn:
        def one(sql: str, *args: Any) -> float:
            return float(conn.execute(sql, args).fetchone()[0] or 0)  # type: ignore[index]

        docs, chunks = one("SELECT count(*) FROM documents"), one("SELECT count(*) FROM chunks")
        chunk_idx = {am: float(n) for am, n in conn.execute(INDEX_BYTES_SQL, ("chunks",)).fetchall()}
        doc_idx = sum(float(n) for _, n in conn.execute(INDEX_BYTES_SQL, ("documents",)).fetchall())
        chunk = ChunkBytes(table=round(one(TABLE_BYTES_SQL, "chunks") / chunks, 1),
                           hnsw=round(chunk_idx.pop("hnsw", 0.0) / chunks, 1),
                           gin=round(chunk_idx.pop("gin", 0.0) / chunks, 1),
                           btree=round(sum(chunk_idx.values()) / chunks, 1))
        document = DocumentBytes(table=round(one(TABLE_BYTES_SQL, "documents") / docs, 1),
                                 indexes=round(doc_idx / docs, 1),
                                 jobs=round(one("SELECT pg_total_relation_size('ingest_jobs')") / docs, 1))
    return Storage(chunks_per_document=round(chunks / docs, 3), chunk=chunk, document=document, documents=int(docs))


def _cache_hits(host: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{host}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "core_search_cache_requests_total":
                found[sample.labels["result"]] = sample.value
    return found


def measure_api(stack: Stack, tenants: Sequence[Any], levels: Sequence[int], seconds: float, seed_docs: int,
                out: Path) -> tuple[ApiCapacity, float, dict[str, Any]]:
    runs, cpu_total = [], {OTHER_PROCESSES: 0.0, "wall": 0.0}
    hits_before = _cache_hits(stack.api_url)
    for users in levels:
        run_dir = out / f"api-{users}-users"
        shape = Shape("step", users=users, steps=1, seconds=seconds, think=0.0)
        with locust_process(stack.api_url, tenants, run_dir, shape, seed_docs, ["SearchUser"]) as proc:
            meter = meter_for(stack, proc.pid)
            meter.start()
            started = time.monotonic()
            proc.wait()
            cpu = meter.stop()
        cpu_total[OTHER_PROCESSES] += cpu["cpu_seconds"][OTHER_PROCESSES]
        cpu_total["wall"] += time.monotonic() - started
        agg = next(r for r in summary(run_dir) if r["name"] == "Aggregated")
        runs.append(ApiRun(users=users, requests_per_second=round(agg["rps"], 1), p50_ms=agg["p50_ms"],
                           p95_ms=agg["p95_ms"], failures=agg["failures"],
                           cpu_seconds_per_request=round(cpu["cpu_seconds"][BENCH_PROCESS] / max(agg["requests"], 1),
                                                         5),
                           db_cpu_seconds_per_request=round(cpu["cpu_seconds"].get(API_BACKENDS, 0.0)
                                                            / max(agg["requests"], 1), 5)))
    hits_after = _cache_hits(stack.api_url)
    delta = {k: hits_after.get(k, 0.0) - hits_before.get(k, 0.0) for k in hits_after}
    lookups = delta.get("hit", 0.0) + delta.get("miss", 0.0)
    best = max(r.requests_per_second for r in runs)
    return (ApiCapacity(requests_per_second=best, mix=SEARCH_MIX, runs=runs),
            delta.get("hit", 0.0) / lookups if lookups else 0.0, cpu_total)


def measure_cache(stack: Stack, tenants: Sequence[Any], seed_docs: int, hit_ratio: float) -> CacheSizes:
    import redis

    with httpx.Client(base_url=stack.api_url, timeout=30) as client:  # a few cached documents to weigh
        for tenant in tenants:
            for i in range(min(seed_docs, 20)):
                client.get(f"/v1/documents/{seed_id(i)}", headers={"Authorization": f"Bearer {tenant.api_key}"})
    r = redis.Redis.from_url(stack.redis.url)
    try:
        def mean_bytes(pattern: str) -> float:
            sizes = [int(r.memory_usage(k) or 0) for k in itertools.islice(r.scan_iter(pattern, count=500), 2000)]
            if not sizes:
                raise RuntimeError(f"no Redis keys {pattern} to weigh")
            return round(sum(sizes) / len(sizes), 1)

        return CacheSizes(search_entry_bytes=mean_bytes("opsctl:search:*"),
                          document_entry_bytes=mean_bytes("opsctl:doc:*"), search_hit_ratio=round(hit_ratio, 3))
    finally:
        r.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedder", default=os.environ.get("OPSCTL_EMBEDDER", "onnx"),
                   help="hash, onnx (make up's default) or minilm")
    p.add_argument("--documents", type=int, default=1500, help="documents the worker drains")
    p.add_argument("--users", type=int, nargs="+", default=[8, 16, 32], help="Locust users per API run")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each API run")
    p.add_argument("--out", type=Path, default=Path("policies/capacity.json"))
    p.add_argument("--results", type=Path, default=None, help="Locust CSVs (default loadtest-results/calibrate-<time>)")
    args = p.parse_args(argv)
    stamp = datetime.now(UTC)
    results = args.results or Path("loadtest-results") / f"calibrate-{stamp:%Y%m%dT%H%M%SZ}"
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="opsctl-calibrate-") as tmp, \
            running_stack(Path(tmp), 0, (), embedder=args.embedder) as stack:
        tenants = create_tenants(stack.pg.url, 2, prefix="calibrate")
        print(f"worker: draining {args.documents} documents with one worker ({args.embedder})", file=sys.stderr)
        worker, worker_cpu = measure_worker(stack, tenants, args.documents)
        print(f"  {worker.documents_per_second} documents/s, {worker.chunks_per_second} chunks/s", file=sys.stderr)
        storage = measure_storage(stack)
        seed_docs = args.documents // len(tenants)
        print(f"api: Locust SearchUser at {args.users} users, {args.seconds:.0f} s each", file=sys.stderr)
        api, hit_ratio, api_cpu = measure_api(stack, tenants, args.users, args.seconds, seed_docs, results)
        print(f"  {api.requests_per_second} requests/s", file=sys.stderr)
        cache = measure_cache(stack, tenants, seed_docs, hit_ratio)
    other = (worker_cpu["cpu_seconds"][OTHER_PROCESSES] + api_cpu[OTHER_PROCESSES]) / (
        worker.seconds + api_cpu["wall"])
    machine = Machine(cpus=len(os.sched_getaffinity(0)), cpu_model=_cpu_model(), ram_gib=round(_ram_gib(), 1),
                      load_before=load_before, load_after=_load(), other_cpu_cores=round(other, 2))
    command = "python -m bench.calibrate " + shlex.join(argv if argv is not None else sys.argv[1:])
    calibration = Calibration(measured_at=stamp, command=command.strip(), machine=machine, worker=worker, api=api,
                              storage=storage, cache=cache)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump(calibration))
    print(f"worker CPU {worker_cpu['cpu_seconds'].get(WORKER_PROCESSES, 0):.1f} s over {worker.seconds:.0f} s; "
          f"other processes took {machine.other_cpu_cores} cores; load {load_before} -> {machine.load_after}",
          file=sys.stderr)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
