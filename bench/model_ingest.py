"""``python -m bench.model_ingest [--quick]``: the service's ingest with the model on, against the model alone.

In one run, on the same real text (this machine's manual pages, ``bench.manpages``, each page one
document cut to its first ``--doc-chars`` characters):

(a) the model alone, at the workers' settings and parallelism: as many processes as the service
    has workers, each with the workers' embedder (``make_embedder`` on the same settings, model
    loaded and warmed before the clock starts), taking batches of ``worker_batch_size`` documents
    from one shared queue, chunking them with the service's chunker and embedding each batch's
    chunks in one call, as a worker does. Chunks per second, wall, from the start signal to the
    last batch; measured before and after (b), and the mean of the two is the figure.
(b) the service (``bench.stack``: embedded PostgreSQL, Redis, the production worker pool with the
    same embedder, the API) ingesting the same documents: first POST to every job done (every
    chunk searchable), chunks per second.

The ratio b/a is the figure of issue 13 (target ≥ 0.9). CPU seconds per chunk of both (b split
by process: worker Python, their PostgreSQL backends, the API, ...), and where the workers' time
went: embedding, the rest of each batch's transaction (database writes, chunking, planning), and
no batch in hand (waiting on the queue); ``pg_stat_activity`` samples of the workers' backends say
which statement. A JSON report is written.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.ingest import COUNTS_SQL, post_until_done
from bench.load import LoadProcess, post_documents
from bench.manpages import choose_pages, man_files
from bench.profile import (
    BENCH_BACKENDS,
    BENCH_PROCESS,
    LOAD_PROCESS,
    OTHER_PROCESSES,
    WORKER_BACKENDS,
    WORKER_PROCESSES,
    scrape_workers,
)
from bench.scratch import scratch_dir
from bench.stack import Stack, running_stack
from core.chunking import chunk_text
from core.config import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "model-ingest-latest.json"
COMPANY = "A"
POST_DOCS = 50  # documents per POST: the batches arrive over time, as a user's would
READY_LINE = "worker started"
# CPU that is not the service's: other work on the machine, the HTTP clients, the bench's polling
SAMPLER = "the bench's pg_stat_activity sampler (a thread of the bench process)"
NOT_SERVICE = (OTHER_PROCESSES, LOAD_PROCESS, BENCH_BACKENDS, SAMPLER)


@dataclass(frozen=True)
class Alone:
    """(a): the model alone in ``processes`` processes."""

    chunks: int
    seconds: float
    cpu_seconds: float
    processes: int

    @property
    def rate(self) -> float:
        return self.chunks / self.seconds


@dataclass
class Service:
    """(b): the service, first POST to every job done."""

    chunks: int
    seconds: float
    cpu_seconds: dict[str, float]
    worker_metrics: dict[str, float]
    stages: dict[str, float]
    workers: int

    @property
    def rate(self) -> float:
        return self.chunks / self.seconds

    @property
    def service_cpu_seconds(self) -> float:
        """CPU of the service's processes: workers, their backends, the API (in the bench process)
        and its backends, PostgreSQL's own processes."""
        return sum(v for k, v in self.cpu_seconds.items() if k not in NOT_SERVICE)


@dataclass(frozen=True)
class Gap:
    """Where the workers' wall time went (seconds summed over the workers)."""

    embedding: float  # inside embed() calls
    rest_of_batch: float  # the batches' other time: claim, plan, chunk, database writes, commit
    no_batch: float  # between batches: waiting on the queue (NOTIFY, poll), the end of the run

    def shares(self) -> dict[str, float]:
        total = self.embedding + self.rest_of_batch + self.no_batch
        return {k: (v / total if total else 0.0) for k, v in asdict(self).items()}


def gap(worker_metrics: dict[str, float], seconds: float, workers: int) -> Gap:
    """The workers' time from their own histograms over a run of ``seconds`` wall (pure). With
    embedding overlapped with database work, the batch time can be below the embedding time:
    ``rest_of_batch`` is then what the batches took beyond their embedding (≥ 0)."""
    embedding = worker_metrics.get("core_embed_seconds_sum", 0.0)
    batches = worker_metrics.get("core_ingest_batch_seconds_sum", 0.0)
    return Gap(embedding, max(0.0, batches - embedding), max(0.0, seconds * workers - max(batches, embedding)))


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


# --- the documents ----------------------------------------------------------------------------


def documents(pages: int, doc_chars: int, seed: int) -> list[dict[str, Any]]:
    """``pages`` manual pages as documents: external id, title, text (its first ``doc_chars``)."""
    return [{"external_id": f"man:{p.name}", "title": p.name, "text": p.text[:doc_chars]}
            for p in choose_pages(man_files(), pages, seed)]


def chunk_count(docs: list[dict[str, Any]], settings: Settings) -> int:
    return sum(len(chunk_text(d["text"], settings.chunk_size, settings.chunk_overlap)) for d in docs)


# --- (a) the model alone ----------------------------------------------------------------------


def _alone_process(settings: Settings, batches: Any, barrier: Any, results: Any) -> None:
    """One process of (a): load and warm the embedder, wait for the others, then take batches of
    documents from the queue until its end mark (``None``); report (chunks, start, end, CPU). The
    gets block: a non-blocking get also fails when another process is reading."""
    from core.embed import make_embedder

    embedder = make_embedder(settings)
    embedder.embed(["warm up the model", "and its tokenizer"])
    barrier.wait()
    started, cpu0, chunks = time.time(), time.process_time(), 0
    while (batch := batches.get(timeout=600)) is not None:
        texts = [c for text in batch for c in chunk_text(text, settings.chunk_size, settings.chunk_overlap)]
        embedder.embed(texts)
        chunks += len(texts)
    results.put((chunks, started, time.time(), time.process_time() - cpu0))


def model_alone(settings: Settings, docs: list[dict[str, Any]], processes: int) -> Alone:
    ctx = multiprocessing.get_context("spawn")
    batches, results = ctx.Queue(), ctx.Queue()
    size = settings.worker_batch_size
    for start in range(0, len(docs), size):
        batches.put([d["text"] for d in docs[start : start + size]])
    for _ in range(processes):
        batches.put(None)
    barrier = ctx.Barrier(processes)
    procs = [ctx.Process(target=_alone_process, args=(settings, batches, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    got = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    return Alone(sum(g[0] for g in got), max(g[2] for g in got) - min(g[1] for g in got), sum(g[3] for g in got),
                 processes)


# --- (b) the service --------------------------------------------------------------------------


def wait_for_workers(stack: Stack, n: int, timeout: float = 600) -> None:
    """Until ``n`` workers have loaded their model (each logs ``worker started`` after it)."""
    log = stack.root / "logs" / "workers.log"
    deadline = time.monotonic() + timeout
    while (log.read_text().count(READY_LINE) if log.exists() else 0) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not start in {timeout:.0f} s (see {log})")
        time.sleep(0.1)


def service(stack: Stack, load: LoadProcess, docs: list[dict[str, Any]], expected_chunks: int) -> Service:
    key = stack.tenants[COMPANY].api_key
    batches = [(key, docs[i : i + POST_DOCS]) for i in range(0, len(docs), POST_DOCS)]
    ports = [w.metrics_port for w in stack.workers.workers if w.alive()]
    before = scrape_workers(ports)
    with stack.connect(autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        run = post_until_done(stack, conn, load, 3600, post_documents, stack.api_url, batches, 2)
        stored = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]  # type: ignore[index]
        jobs, dead = conn.execute(COUNTS_SQL).fetchone()  # type: ignore[misc]
    if jobs != len(docs) or dead or stored != expected_chunks:
        raise RuntimeError(f"{jobs} jobs ({dead} dead) for {len(docs)} documents; {stored} chunks stored, "
                           f"{expected_chunks} expected")
    cpu = dict(run.cpu["cpu_seconds"])
    cpu[BENCH_PROCESS] -= run.sampler_cpu_seconds  # the bench's sampling: measured, and not the service's
    cpu[SAMPLER] = run.sampler_cpu_seconds
    return Service(int(stored), run.finished_at - run.run.started_at, cpu,
                   delta(scrape_workers(ports), before), run.stages, len(ports))


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Report:
    options: dict[str, Any]
    settings: dict[str, Any]
    docs: int
    chunks: int
    alone: list[Alone]
    service: Service
    load_average: list[float] = field(default_factory=list)

    @property
    def alone_rate(self) -> float:
        return sum(a.rate for a in self.alone) / len(self.alone)

    @property
    def ratio(self) -> float:
        return self.service.rate / self.alone_rate

    @property
    def cpu_ratio(self) -> float:
        """Chunks per CPU-second of the service over those of the model alone: the wall ratio on
        cores that nothing else uses and that neither side leaves idle."""
        alone = sum(a.chunks for a in self.alone) / sum(a.cpu_seconds for a in self.alone)
        return self.service.chunks / self.service.service_cpu_seconds / alone

    def to_json(self) -> dict[str, Any]:
        g = gap(self.service.worker_metrics, self.service.seconds, self.service.workers)
        return {**asdict(self), "alone_rates": [a.rate for a in self.alone], "alone_rate": self.alone_rate,
                "service_rate": self.service.rate, "ratio": self.ratio,
                "cpu_ratio": self.cpu_ratio, "gap": asdict(g), "gap_shares": g.shares()}


def render(r: Report, console: Console) -> None:
    s = r.service
    table = Table(title=f"ingest with the model on: {r.docs} manual pages, {r.chunks} chunks, embedder "
                        f"{r.settings['embedder']} {r.settings['embed_precision']}, {s.workers} workers, batch "
                        f"{r.settings['worker_batch_size']} docs; load average {r.load_average[0]:.1f} on "
                        f"{os.cpu_count()} cores")
    for col in ("run", "chunks/s", "CPU ms/chunk", "vs (a): wall", "vs (a): per CPU-second"):
        table.add_column(col, justify="right")
    for i, a in enumerate(r.alone):
        table.add_row(f"(a) model alone, {a.processes} processes ({'before' if i == 0 else 'after'})",
                      f"{a.rate:.1f}", f"{1000 * a.cpu_seconds / a.chunks:.1f}", "", "")
    cpu = s.cpu_seconds
    table.add_row("(b) service: first POST → all searchable", f"{s.rate:.1f}",
                  f"{1000 * s.service_cpu_seconds / s.chunks:.1f}", f"{r.ratio:.3f}", f"{r.cpu_ratio:.3f}")
    console.print(table)
    console.print("(b) CPU ms per chunk by process: " + ", ".join(
        f"{k} {1000 * v / s.chunks:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v > 0))
    g = gap(s.worker_metrics, s.seconds, s.workers)
    shares = g.shares()
    console.print(f"(b) the workers' wall time ({s.workers} x {s.seconds:.1f} s): embedding {shares['embedding']:.1%}, "
                  f"rest of the batches {shares['rest_of_batch']:.1%}, no batch in hand {shares['no_batch']:.1%}")
    console.print("(b) the workers' backends (pg_stat_activity samples): " + ", ".join(
        f"{k} {v:.1%}" for k, v in s.stages.items() if v >= 0.005))
    console.print(f"(b) worker CPU: Python {1000 * cpu.get(WORKER_PROCESSES, 0) / s.chunks:.1f} ms/chunk, "
                  f"their PostgreSQL backends {1000 * cpu.get(WORKER_BACKENDS, 0) / s.chunks:.1f} ms/chunk")


def run(a: argparse.Namespace) -> Report:
    os.environ["OPSCTL_EMBED_PRECISION"] = a.precision
    docs = documents(a.pages, a.doc_chars, a.seed)
    with scratch_dir("opsctl-model-ingest-") as root, \
            running_stack(root, a.workers, (COMPANY,), "onnx") as stack, closing(LoadProcess()) as load:
        settings = stack.settings
        chunks = chunk_count(docs, settings)
        wait_for_workers(stack, a.workers)
        first = model_alone(settings, docs, a.workers)
        served = service(stack, load, docs, chunks)
        second = model_alone(settings, docs, a.workers)
        if {first.chunks, second.chunks} != {chunks}:
            raise RuntimeError(f"the model alone embedded {first.chunks} and {second.chunks} chunks, not {chunks}")
        keys = ("embedder", "embed_precision", "embed_threads", "embed_batch_size", "worker_batch_size",
                "chunk_size", "chunk_overlap")
        return Report({k: v for k, v in vars(a).items() if k != "output"}, {k: getattr(settings, k) for k in keys},
                      len(docs), chunks, [first, second], served, list(os.getloadavg()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_ingest", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="60 pages instead of 240")
    p.add_argument("--pages", type=int, help="manual pages (documents) to ingest (default 240; 60 with --quick)")
    p.add_argument("--doc-chars", type=int, default=4000, help="characters kept of each page (default 4000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, and processes of (a) (default 2)")
    p.add_argument("--precision", choices=("float32", "int8"), default="float32", help="the model's (default float32)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    a = p.parse_args(argv)
    a.pages = a.pages or (60 if a.quick else 240)
    report = run(a)
    render(report, Console(width=160))
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(report.to_json(), indent=2, default=str))
    print(f"JSON report: {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
