"""``python -m bench.fair_bench``: one company's first documents while another's import is ingested,
with the fair claim and with the FIFO (issue 15 §1).

    python -m bench.fair_bench                   # A imports 100,000 documents (slow on a small machine)
    python -m bench.fair_bench --documents 20000 # a smaller import
    python -m bench.fair_bench --quick           # 3,000 documents, a smoke run (make bench-quick)

For each claim (``ingest_claim`` fair, then fifo) a fresh stack (``bench.stack``: embedded PostgreSQL
and Redis, the production worker pool of ``--workers`` processes, the API in a thread), then:

- company A queues its import through the API as ``opsctl ingest`` does (POSTs of 1,000 small
  documents, ``Ingest-Priority: bulk``; one chunk each, the ``hash`` embedder: the queue is what is
  measured, not the model);
- once A's import is queued, company B sends one document every ``--interval`` seconds (a POST of
  one: interactive) until A's import is done; a poller reads B's jobs from the database and, once a
  job is done, searches for its document through the API (keyword search of a word only that
  document has) until it is found: B's time from POST to searchable, p50 and p99;
- A's throughput: its documents over the time from its first job queued to its last job finished
  (the database's own timestamps), and over the CPU seconds the worker processes and PostgreSQL
  used meanwhile (the same work's cost, whatever else the shared machine runs).

Targets: B p99 <= 5 s with the fair claim; A's throughput >= 0.9x the FIFO's. The machine is
shared: other processes' load changes both figures between runs; read the ratio. JSON:
bench/results/fair.json. Nothing is left behind: the stack's directory goes however the run ends
(``bench.scratch``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.scratch import scratch_dir
from bench.stack import Stack, running_stack

RESULTS = Path(__file__).resolve().parent / "results" / "fair.json"
POST_SIZE = 1000
POLL_SECONDS = 0.02


@dataclass
class Run:
    claim: str
    documents: int
    b_sent: int = 0
    b_latencies: list[float] = field(default_factory=list)
    a_seconds: float = 0.0
    queue_seconds: float = 0.0  # how long A's POSTs took
    cpu_seconds: float = 0.0  # the workers' and the database's CPU from A's first POST to its last job done

    @property
    def a_per_second(self) -> float:
        return self.documents / self.a_seconds if self.a_seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.b_latencies:
            return 0.0
        ordered = sorted(self.b_latencies)
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]  # nearest rank

    @property
    def a_per_cpu_second(self) -> float:
        return self.documents / self.cpu_seconds if self.cpu_seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {"claim": self.claim, "documents": self.documents, "a_seconds": round(self.a_seconds, 1),
                "a_docs_per_second": round(self.a_per_second, 1), "a_queue_seconds": round(self.queue_seconds, 1),
                "cpu_seconds": round(self.cpu_seconds, 1), "a_docs_per_cpu_second": round(self.a_per_cpu_second, 1),
                "b_sent": self.b_sent, "b_searchable": len(self.b_latencies),
                "b_p50_seconds": round(self.percentile(0.50), 3), "b_p99_seconds": round(self.percentile(0.99), 3),
                "b_max_seconds": round(max(self.b_latencies, default=0.0), 3)}


def a_documents(start: int, count: int) -> list[dict[str, Any]]:
    return [{"external_id": f"a-{i}", "text": f"Import record {i}: routine inventory entry number {i} for the "
             f"warehouse, shelf {i % 97}, bin {i % 13}."} for i in range(start, start + count)]


def b_document(i: int) -> dict[str, Any]:
    return {"external_id": f"b-{i}", "text": f"Urgent note fairtoken{i}x from the support desk about case {i}."}


class Watcher:
    """B's jobs from POST to searchable: polls their status in the database, then searches."""

    def __init__(self, stack: Stack, key: str) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        self.pending: dict[int, tuple[int, float]] = {}  # job id -> (document number, when posted)
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def add(self, job_id: int, number: int, posted: float) -> None:
        with self.lock:
            self.pending[job_id] = (number, posted)

    def searchable(self, number: int) -> bool:
        response = self.http.post("/v1/search", json={"query": f"fairtoken{number}x", "k": 3, "mode": "keyword"})
        response.raise_for_status()
        return any(hit["external_id"] == f"b-{number}" for hit in response.json()["results"])

    def poll(self, conn: Any) -> None:
        with self.lock:
            ids = list(self.pending)
        if not ids:
            return
        done = [r[0] for r in conn.execute("SELECT id FROM ingest_jobs WHERE id = ANY(%s) AND status = 'done'",
                                           (ids,))]
        for job_id in done:
            number, posted = self.pending[job_id]
            while not self.searchable(number):
                time.sleep(POLL_SECONDS)
            self.latencies.append(time.monotonic() - posted)
            with self.lock:
                del self.pending[job_id]

    def drain(self, conn: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self.poll(conn)
            time.sleep(POLL_SECONDS)


def stack_cpu_seconds(stack: Stack) -> float:
    """CPU seconds (user + system) used so far by the worker processes and every PostgreSQL process:
    the ingest's cost whatever else the shared machine runs (the API, in this process, is left out)."""
    import psutil

    postmaster = int((stack.pg.data_dir / "postmaster.pid").read_text().splitlines()[0])
    procs = [psutil.Process(pid) for pid in stack.workers.pids()]
    root = psutil.Process(postmaster)
    procs += [root, *root.children(recursive=True)]
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def a_left(conn: Any, company_id: int) -> int:
    row = conn.execute("SELECT count(*) FROM ingest_jobs WHERE company_id = %s AND status IN ('queued', 'failed')",
                       (company_id,)).fetchone()
    return int(row[0]) if row else 0


def measure(stack: Stack, claim: str, documents: int, interval: float, say: Callable[[str], None]) -> Run:
    run = Run(claim, documents)
    a, b = stack.tenants["A"], stack.tenants["B"]
    cpu_before = stack_cpu_seconds(stack)
    started = time.monotonic()
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {a.api_key}",
                                                       "Ingest-Priority": "bulk"}, timeout=120) as http:
        for start in range(0, documents, POST_SIZE):
            response = http.post("/v1/documents", json={"documents": a_documents(start, min(POST_SIZE,
                                                                                           documents - start))})
            response.raise_for_status()
    run.queue_seconds = time.monotonic() - started
    say(f"  {claim}: A's {documents:,} documents queued in {run.queue_seconds:.1f} s; B sends one every {interval} s")
    watcher = Watcher(stack, b.api_key)
    with stack.connect(autocommit=True) as conn, \
            httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {b.api_key}"}, timeout=60) as http:
        next_send = time.monotonic()
        last_report = time.monotonic()
        while a_left(conn, a.company_id):
            now = time.monotonic()
            if now >= next_send:
                posted = time.monotonic()
                response = http.post("/v1/documents", json={"documents": [b_document(run.b_sent)]})
                response.raise_for_status()
                watcher.add(response.json()["job_ids"][0], run.b_sent, posted)
                run.b_sent += 1
                next_send += interval
            watcher.poll(conn)
            if now - last_report > 10:
                say(f"  {claim}: A {a_left(conn, a.company_id):,} left, B {len(watcher.latencies)} of "
                    f"{run.b_sent} searchable")
                last_report = now
            time.sleep(POLL_SECONDS)
        run.cpu_seconds = stack_cpu_seconds(stack) - cpu_before
        watcher.drain(conn, timeout=120)
        row = conn.execute("SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM ingest_jobs"
                           " WHERE company_id = %s", (a.company_id,)).fetchone()
        run.a_seconds = float(row[0]) if row and row[0] is not None else 0.0
    watcher.http.close()
    run.b_latencies = watcher.latencies
    return run


def run_claim(claim: str, documents: int, workers: int, interval: float, say: Callable[[str], None]) -> Run:
    saved = os.environ.get("OPSCTL_INGEST_CLAIM")
    os.environ["OPSCTL_INGEST_CLAIM"] = claim  # the worker processes' setting (and the API's)
    try:
        with scratch_dir("opsctl-fair-bench-", say=say) as root, running_stack(root, workers, ("A", "B")) as stack:
            return measure(stack, claim, documents, interval, say)
    finally:
        if saved is None:
            os.environ.pop("OPSCTL_INGEST_CLAIM", None)
        else:
            os.environ["OPSCTL_INGEST_CLAIM"] = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fair_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=100_000, help="A's import")
    parser.add_argument("--workers", type=int, default=2, help="ingest worker processes")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between B's documents")
    parser.add_argument("--claims", default="fair,fifo", help="the claims to measure, in order")
    parser.add_argument("--quick", action="store_true", help="3,000 documents (a smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.documents = 3000
    console = Console(stderr=True)
    runs = [run_claim(claim, args.documents, args.workers, args.interval, console.print)
            for claim in args.claims.split(",")]
    result: dict[str, Any] = {"documents": args.documents, "workers": args.workers, "interval": args.interval,
                              "embedder": "hash", "runs": [r.summary() for r in runs]}
    by_claim = {r.claim: r for r in runs}
    if "fair" in by_claim and "fifo" in by_claim and by_claim["fifo"].a_per_second:
        result["a_throughput_fair_over_fifo"] = round(by_claim["fair"].a_per_second / by_claim["fifo"].a_per_second, 3)
        result["a_docs_per_cpu_second_fair_over_fifo"] = round(
            by_claim["fair"].a_per_cpu_second / by_claim["fifo"].a_per_cpu_second, 3)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    table = Table(title=f"fair ingest: A imports {args.documents:,} documents, B sends one every {args.interval} s "
                        f"({args.workers} workers, hash embedder)")
    for column in ("claim", "A docs/s", "A s", "A docs/CPU-s", "B sent", "B p50 s", "B p99 s", "B max s"):
        table.add_column(column)
    for r in runs:
        s = r.summary()
        table.add_row(r.claim, str(s["a_docs_per_second"]), str(s["a_seconds"]), str(s["a_docs_per_cpu_second"]),
                      str(s["b_sent"]),
                      str(s["b_p50_seconds"]), str(s["b_p99_seconds"]), str(s["b_max_seconds"]))
    Console().print(table)
    if "a_throughput_fair_over_fifo" in result:
        Console().print(f"A's throughput, fair / fifo: {result['a_throughput_fair_over_fifo']} (target >= 0.9; "
                        f"per CPU-second of the workers and the database: "
                        f"{result['a_docs_per_cpu_second_fair_over_fifo']}); "
                        f"B p99 with fair: {by_claim['fair'].percentile(0.99):.2f} s (target <= 5 s)")
    Console().print(f"JSON: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
