"""``python -m bench.ingest_cost``: the service's ingest CPU per chunk, measured apart per code version.

Wall-clock chunks/s on a shared machine moves with the neighbours' load; the CPU seconds each
benchmark process spends per chunk do not (much). Each run starts a fresh stack (the core bench's:
embedded PostgreSQL and Redis, ``--workers`` worker processes, the API in a thread), POSTs the
core bench's corpus with ``--clients`` clients (``bench.ingest.service_ingest``) and reads the CPU
time of every process of the stack during the ingest phase (``bench.profile.CpuMeter``: the
workers' Python, their PostgreSQL backends, the API process and its backends).

``--tree NAME=DIR`` names a checkout to measure (a git worktree of an older commit, say); every run
is a child process whose ``PYTHONPATH`` is that checkout, so the stack, the workers and the API
are that version's code, measured by that version's ``bench`` (its ``service_ingest`` and meter).
The trees run interleaved, round after round, each round in a rotated order, so a change of the
machine's load falls on every tree alike. Prints each tree's mean and spread (min to max) and writes
every run as JSON.

Example::

    git worktree add /tmp/before-0014 faca40b
    python -m bench.ingest_cost --chunks 20000 --rounds 3 --tree before-0014=/tmp/before-0014 --tree main=.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "ingest_cost.json"

# the meter's component names (bench.profile) → this report's columns
COMPONENTS = {
    "workers": ("worker processes (Python)",),
    "worker PG": ("PostgreSQL backends of workers",),
    "API": ("bench process (API, raw COPY client, polling)",),
    "API PG": ("PostgreSQL backends of the API",),
    "PG other": ("PostgreSQL other (WAL writer, checkpointer, autovacuum, ...)",
                 "PostgreSQL processes that exited (short sessions, autovacuum workers)"),
}
OTHERS = "other processes on the machine (not the benchmark)"

# One run, executed in a child process with the measured tree first on sys.path (uses only what
# every measured version's bench offers: running_stack, build_corpus, LoadProcess, service_ingest).
ONE_RUN = """
import json, shutil, sys, tempfile
from contextlib import closing
from pathlib import Path
from bench.corpus import COMPANIES, build_corpus
from bench.ingest import service_ingest
from bench.load import LoadProcess
from bench.stack import running_stack

def main(chunks, seed, workers, clients):
    root = Path(tempfile.mkdtemp(prefix="opsctl-ingest-cost-"))
    try:
        with running_stack(root, workers, COMPANIES) as stack, closing(LoadProcess()) as load:
            s = stack.settings
            corpus = build_corpus(chunks, seed, s.chunk_size, s.chunk_overlap)
            out = service_ingest(stack, corpus, load, clients, max(600.0, corpus.n_chunks / 20))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"chunks": out.chunks, "seconds": out.seconds, "cpu": out.cpu, "stages": out.stages}))

if __name__ == "__main__":
    main(*map(int, sys.argv[1:5]))
"""


@dataclass(frozen=True)
class Run:
    tree: str
    round: int
    chunks: int
    seconds: float
    cpu_ms_per_chunk: dict[str, float]
    others_share: float  # of the machine's CPUs taken by processes outside the benchmark
    stages: dict[str, float]  # the workers' backends sampled: the share of samples per stage (bench.profile)

    @property
    def rate(self) -> float:
        return self.chunks / self.seconds


def per_chunk(cpu: dict[str, Any], chunks: int) -> dict[str, float]:
    """CPU milliseconds per chunk of each report column, and their ``total`` (pure)."""
    seconds = cpu.get("cpu_seconds", {})
    out = {column: 1000 * sum(seconds.get(name, 0.0) for name in names) / chunks
           for column, names in COMPONENTS.items()}
    out["total"] = sum(out.values())
    return out


def rotated(names: list[str], round_no: int) -> list[str]:
    """The trees' order in round ``round_no``: rotated by one each round (pure)."""
    k = round_no % len(names) if names else 0
    return names[k:] + names[:k]


def summary(values: list[float]) -> tuple[float, float, float]:
    """(mean, min, max) (pure)."""
    return statistics.fmean(values), min(values), max(values)


def spread(values: list[float], number: str) -> str:
    """``mean (min-max)`` of ``values``, each written with the format ``number`` (pure)."""
    mean, low, high = summary(values)
    return f"{number.format(mean)} ({number.format(low)}-{number.format(high)})"


def run_once(tree: Path, chunks: int, seed: int, workers: int, clients: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", ONE_RUN, str(chunks), str(seed), str(workers), str(clients)],
                          cwd=tree, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the run in {tree} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def parse_tree(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--tree takes NAME=DIR, got {text!r}")
    directory = Path(path).resolve()
    if not (directory / "bench" / "ingest.py").is_file():
        raise argparse.ArgumentTypeError(f"{directory} is not a checkout of this repository (no bench/ingest.py)")
    return name, directory


def render(runs: list[Run], names: list[str]) -> str:
    columns = [*COMPONENTS, "total"]
    head = ["tree", "runs", "chunks/s", *[f"{c} ms" for c in columns], "others' CPU"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name in names:
        mine = [r for r in runs if r.tree == name]
        if not mine:
            continue
        cells = [name, str(len(mine)), spread([r.rate for r in mine], "{:.0f}")]
        cells += [spread([r.cpu_ms_per_chunk[c] for r in mine], "{:.3f}") for c in columns]
        cells.append(f"{statistics.fmean(r.others_share for r in mine):.0%}")
        lines.append(" | ".join(cells))
    return "\n".join(f"| {line} |" for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", type=parse_tree, required=True,
                   help="NAME=DIR: a checkout to measure (repeat; runs interleave in the given order, rotated)")
    p.add_argument("--chunks", type=int, default=20000, help="corpus size in chunks (default 20000)")
    p.add_argument("--rounds", type=int, default=3, help="runs per tree (default 3)")
    p.add_argument("--workers", type=int, default=2, help="ingest worker processes (default 2, as python -m bench)")
    p.add_argument("--clients", type=int, default=4, help="POST clients (default 4, as python -m bench)")
    p.add_argument("--seed", type=int, default=20240601, help="corpus seed (python -m bench's default)")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON of every run (default {RESULTS})")
    a = p.parse_args(argv)
    if min(a.chunks, a.rounds, a.workers, a.clients) < 1:
        p.error("sizes and counts must be positive")
    trees: dict[str, Path] = dict(a.tree)
    names = list(trees)
    runs: list[Run] = []
    a.output.parent.mkdir(parents=True, exist_ok=True)
    for round_no in range(a.rounds):
        for name in rotated(names, round_no):
            out = run_once(trees[name], a.chunks, a.seed, a.workers, a.clients)
            run = Run(name, round_no, int(out["chunks"]), float(out["seconds"]), per_chunk(out["cpu"], out["chunks"]),
                      float(out["cpu"].get("other_processes_share") or 0.0), dict(out.get("stages") or {}))
            runs.append(run)
            print(f"round {round_no + 1}/{a.rounds} {name}: {run.rate:.0f} chunks/s, "
                  f"{run.cpu_ms_per_chunk['total']:.3f} CPU ms/chunk, others {run.others_share:.0%}",
                  file=sys.stderr, flush=True)
            a.output.write_text(json.dumps([{**r.__dict__, "rate": r.rate} for r in runs], indent=1))
    print(render(runs, names))
    print(f"JSON: {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
