"""Where the service's ingest time goes, measured from outside the service (no code changes).

* ``ActivitySampler`` samples ``pg_stat_activity`` for the workers' backends (``application_name``
  ``bench-worker``) every few milliseconds and classifies each sample: which SQL statement, waiting
  on what, or idle in transaction (the worker process is running Python: chunking, embedding,
  building rows).
* ``CpuMeter`` reads ``/proc`` CPU time of the worker processes, of every PostgreSQL process
  (split by client) and of this process (the API), plus the machine's busy fraction.
* ``scrape_workers`` reads the workers' own ``/metrics`` (batch and embedding histograms).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.stack import API_APP, BENCH_APP, WORKER_APP, Stack

CLK_TCK = os.sysconf("SC_CLK_TCK")

# (substring of the statement, stage name); first match wins
STAGES = (
    ("COPY chunks", "COPY chunks"),
    ("INSERT INTO documents", "INSERT documents"),
    ("FOR UPDATE SKIP LOCKED", "claim jobs"),
    ("UPDATE ingest_jobs", "finish jobs"),
    ("pg_advisory_xact_lock", "advisory locks"),
    ("DISTINCT ON", "newest-job lookup"),
    ("FROM documents d", "existing-document lookup"),
    ("DELETE FROM", "delete old version"),
    ("UPDATE companies", "bump data_version"),
    ("SELECT now()", "SELECT now()"),
    ("COMMIT", "COMMIT"),
)
PYTHON_IN_TXN = "worker Python inside the transaction (chunk, embed, build rows)"
IDLE = "worker idle (no job claimed)"
API_BACKENDS = "PostgreSQL backends of the API"
WORKER_BACKENDS = "PostgreSQL backends of workers"
WORKER_PROCESSES = "worker processes (Python)"
BENCH_BACKENDS = "PostgreSQL backends of the benchmark (raw SQL, polling, sampling)"
EXITED_BACKENDS = "PostgreSQL processes that exited (short sessions, autovacuum workers)"
BENCH_PROCESS = "bench process (API, raw COPY client, polling)"
LOAD_PROCESS = "load-generator process (HTTP and SQL clients)"
REDIS_SERVER = "Redis server (the stack's cache)"
OTHER_PROCESSES = "other processes on the machine (not the benchmark)"
COPY_CLIENT = "COPY chunks: backend waits for rows from the worker (client-side serialisation)"

SAMPLE_SQL = """
SELECT state, wait_event_type, wait_event, left(query, 200)
FROM pg_stat_activity
WHERE application_name = %s AND query NOT LIKE 'LISTEN%%' AND pid <> pg_backend_pid()
"""


def classify(state: str | None, wait_type: str | None, wait: str | None, query: str) -> str:
    """One sample of a worker's backend → a stage name (pure)."""
    if state == "idle in transaction":
        return PYTHON_IN_TXN
    if state != "active":
        return IDLE
    stage = next((name for needle, name in STAGES if needle in query), "other SQL")
    if stage == "COPY chunks" and wait == "ClientRead":
        return COPY_CLIENT
    if wait_type:
        return f"{stage}: server waits on {wait_type}:{wait}"
    return f"{stage}: server working (heap, HNSW, GIN, btree, WAL)" if stage == "COPY chunks" else \
        f"{stage}: server working"


class ActivitySampler:
    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self.cpu_seconds = 0.0  # the sampling thread's own CPU (in the bench process, not the service's)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling; the share of samples per stage."""
        self._stop.set()
        self._thread.join(10)
        total = sum(self.counts.values()) or 1
        return {stage: n / total for stage, n in self.counts.most_common()}

    def _run(self) -> None:
        started = time.thread_time()
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._stop.wait(self.interval):
                    for state, wait_type, wait, query in conn.execute(SAMPLE_SQL, (WORKER_APP,)).fetchall():
                        self.counts[classify(state, wait_type, wait, query or "")] += 1
        finally:
            self.cpu_seconds = time.thread_time() - started


# --- CPU time -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` itself (utime + stime)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0


def reaped_children_cpu_seconds(pid: int) -> float:
    """CPU time of the children ``pid`` has waited for (cutime + cstime): processes that exited."""
    fields = _stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / CLK_TCK if fields else 0.0


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuSnapshot:
    per_pid: dict[int, float]
    exited_backends: float  # CPU of PostgreSQL processes that have exited (reaped by the postmaster)
    busy: int
    total: int


def meter_for(stack: Stack, load_pid: int) -> CpuMeter:
    """A meter over the stack's processes, the load generator and this process."""
    workers = [w.pid for w in stack.workers.workers if w.alive()]
    redis = stack.redis.proc.pid if stack.redis.proc is not None else 0
    return CpuMeter(stack.db_url, stack.pg.pid() or 0, workers, load_pid, redis)


class CpuMeter:
    """CPU seconds by component between ``start()`` and ``stop()``."""

    def __init__(self, url: str, postmaster_pid: int, worker_pids: list[int], load_pid: int,
                 redis_pid: int = 0) -> None:
        self.url = url
        self.postmaster = postmaster_pid
        self.worker_pids = worker_pids
        self.load_pid = load_pid
        self.redis_pid = redis_pid  # 0: no Redis of the stack's own to count (its CPU then reads as other processes')
        self._start: CpuSnapshot | None = None

    def _pids(self) -> list[int]:
        own = [self.redis_pid] if self.redis_pid else []
        return [self.postmaster, *children_of(self.postmaster), *self.worker_pids, self.load_pid, *own, os.getpid()]

    def _snapshot(self) -> CpuSnapshot:
        busy, total = machine_busy_ticks()
        per_pid = {pid: process_cpu_seconds(pid) for pid in self._pids()}
        return CpuSnapshot(per_pid, reaped_children_cpu_seconds(self.postmaster), busy, total)

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, Any]:
        assert self._start is not None
        end = self._snapshot()
        delta = {pid: cpu - self._start.per_pid.get(pid, 0.0) for pid, cpu in end.per_pid.items()}
        groups = self._group(delta)
        groups[EXITED_BACKENDS] = end.exited_backends - self._start.exited_backends
        busy = (end.busy - self._start.busy) / CLK_TCK
        groups[OTHER_PROCESSES] = max(0.0, busy - sum(groups.values()))
        ticks = end.total - self._start.total
        return {
            "cpu_seconds": {name: round(value, 3) for name, value in groups.items()},
            "machine_busy_fraction": round((end.busy - self._start.busy) / ticks, 3) if ticks else None,
            "other_processes_share": round(groups[OTHER_PROCESSES] * CLK_TCK / ticks, 3) if ticks else None,
            "cpus": len(os.sched_getaffinity(0)),
        }

    def _group(self, delta: dict[int, float]) -> defaultdict[str, float]:
        apps = self._backend_apps()
        groups: defaultdict[str, float] = defaultdict(float)
        for pid, seconds in delta.items():
            if pid in self.worker_pids:
                groups[WORKER_PROCESSES] += seconds
            elif pid == self.load_pid:
                groups[LOAD_PROCESS] += seconds
            elif self.redis_pid and pid == self.redis_pid:
                groups[REDIS_SERVER] += seconds
            elif pid == os.getpid():
                groups[BENCH_PROCESS] += seconds
            elif apps.get(pid) == WORKER_APP:
                groups[WORKER_BACKENDS] += seconds
            elif apps.get(pid) == API_APP:
                groups[API_BACKENDS] += seconds
            elif apps.get(pid) == BENCH_APP:
                groups[BENCH_BACKENDS] += seconds
            else:
                groups["PostgreSQL other (WAL writer, checkpointer, autovacuum, ...)"] += seconds
        return groups

    def _backend_apps(self) -> dict[int, str]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute("SELECT pid, application_name FROM pg_stat_activity").fetchall()
        return {int(pid): str(app) for pid, app in rows}


# --- the workers' own metrics -------------------------------------------------------------------


def scrape_workers(ports: list[int]) -> dict[str, float]:
    """Sums over the workers of their batch / embed histograms and chunk counters."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals: defaultdict[str, float] = defaultdict(float)
    wanted = {"core_ingest_batch_seconds_sum", "core_ingest_batch_seconds_count", "core_embed_seconds_sum",
              "core_embed_seconds_count", "core_ingest_chunks_total"}
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    totals[sample.name] += sample.value
    return dict(totals)
