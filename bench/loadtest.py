"""``make loadtest``: Locust (``bench/locustfile.py``) headless against the core, bounded in time.

By default it starts a core of its own in a temp dir (``bench.stack``: embedded PostgreSQL and Redis,
``--workers`` ingest worker processes, the API; the per-tenant rate limit lifted so the load, not
the limiter, is measured) and stops it afterwards. ``--running`` loads the system ``opsctl up``
runs instead (``make up`` in another terminal; found through its state file like every opsctl
command), whose rate limit stays: 100 requests/s per tenant and API process, hence ``--tenants``.

Either way it creates ``--tenants`` companies, ingests ``--seed-docs`` documents into each (waits
until they are searchable), runs Locust with the step or ramp shape, and writes to ``--out``
(default ``loadtest-results/<UTC time>/``): ``locust_stats.csv`` (one row per request name and an
``Aggregated`` row), ``locust_stats_history.csv`` (every few seconds), ``locust_failures.csv``,
``locust_exceptions.csv`` and ``report.html``. It prints the per-request summary and exits with
Locust's code (1 if any request failed).

    python -m bench.loadtest --users 50 --seconds 120 --shape step --steps 5
    python -m bench.loadtest --running --users 100 --shape ramp
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.loadmix import Tenant, seed_documents

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
RESULTS = Path("loadtest-results")
CSV_PREFIX = "locust"


@dataclass(frozen=True)
class Shape:
    kind: str = "step"  # step | ramp
    users: int = 50
    steps: int = 5
    seconds: float = 120.0
    think: float = 5.0  # mean seconds between a user's requests

    def env(self) -> dict[str, str]:
        return {"LOADTEST_SHAPE": self.kind, "LOADTEST_USERS": str(self.users), "LOADTEST_STEPS": str(self.steps),
                "LOADTEST_SECONDS": str(self.seconds), "LOADTEST_THINK": str(self.think)}


def create_tenants(db_url: str, n: int, prefix: str = "loadtest") -> list[Tenant]:
    import psycopg

    from core.tenants import create_company

    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    with psycopg.connect(db_url, autocommit=True) as conn:
        made = [create_company(conn, f"{prefix}-{stamp}-{i}", actor="loadtest") for i in range(n)]
    return [Tenant(m.company_id, m.api_key, m.webhook_secret) for m in made]


def seed(host: str, tenants: Sequence[Tenant], n: int, batch: int = 200) -> list[tuple[Tenant, list[int]]]:
    """Ingest the seed documents into every tenant; the job ids per tenant."""
    docs = seed_documents(n)
    queued = []
    with httpx.Client(base_url=host, timeout=120) as client:
        for tenant in tenants:
            ids: list[int] = []
            for start in range(0, len(docs), batch):
                r = client.post("/v1/documents", json={"documents": docs[start : start + batch]},
                                headers={"Authorization": f"Bearer {tenant.api_key}"})
                r.raise_for_status()
                ids += r.json()["job_ids"]
            queued.append((tenant, ids))
    return queued


def wait_done(host: str, queued: Sequence[tuple[Tenant, list[int]]], timeout: float = 600.0) -> None:
    """Until every seed job is done (the documents are readable and searchable): ``opsctl ingest``'s wait,
    one deadline for all tenants; RuntimeError when a job is dead or the deadline passes."""
    from opsctl.loader import wait_for_jobs

    deadline = time.monotonic() + timeout
    for tenant, ids in queued:
        with httpx.Client(base_url=host, timeout=30, headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
            counts = wait_for_jobs(client, ids, max(0.0, deadline - time.monotonic()))
        if counts.dead or counts.pending:
            raise RuntimeError(f"seed jobs of company {tenant.company_id}: {counts.dead} dead, {counts.pending} "
                               f"not done within {timeout:g} s")


@contextmanager
def locust_process(host: str, tenants: Sequence[Tenant], out: Path, shape: Shape, seed_docs: int,
                   classes: Sequence[str] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """Locust headless with ``shape`` (only ``classes`` of users, if named), CSV and HTML into ``out``;
    the tenants file (API keys) is removed when the block ends."""
    out.mkdir(parents=True, exist_ok=True)
    tenants_file = out / "tenants.json"
    fd = os.open(tenants_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # API keys: the owner's only
    with os.fdopen(fd, "w") as fh:
        json.dump([asdict(t) for t in tenants], fh)
    env = {**os.environ, **shape.env(), "LOADTEST_TENANTS": str(tenants_file), "LOADTEST_SEED_DOCS": str(seed_docs)}
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
           "--csv", str(out / CSV_PREFIX), "--csv-full-history", "--html", str(out / "report.html"),
           "--only-summary", "--loglevel", "WARNING", *classes]
    proc = subprocess.Popen(cmd, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
        tenants_file.unlink(missing_ok=True)


def run_locust(host: str, tenants: Sequence[Tenant], out: Path, shape: Shape, seed_docs: int,
               classes: Sequence[str] = ()) -> int:
    """``locust_process`` to its end; Locust's exit code (1 if any request failed)."""
    with locust_process(host, tenants, out, shape, seed_docs, classes) as proc:
        return proc.wait()


def summary(out: Path) -> list[dict[str, Any]]:
    """The rows of ``locust_stats.csv``: per request name (and ``Aggregated``) the counts, rate, latencies."""
    with (out / f"{CSV_PREFIX}_stats.csv").open(newline="") as fh:
        return [{"name": row["Name"], "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                 "rps": float(row["Requests/s"]), "p50_ms": float(row["50%"] or 0), "p95_ms": float(row["95%"] or 0)}
                for row in csv.DictReader(fh)]


def _print(rows: Sequence[dict[str, Any]], out: Path) -> None:
    print(f"{'request':<18} {'requests':>9} {'failures':>9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for r in rows:
        print(f"{r['name']:<18} {r['requests']:>9} {r['failures']:>9} {r['rps']:>8.1f} {r['p50_ms']:>8.0f} "
              f"{r['p95_ms']:>8.0f}")
    print(f"CSV and HTML report: {out}/")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--running", action="store_true", help="load the system `opsctl up` runs (default: start one)")
    p.add_argument("--workers", type=int, default=2, help="ingest workers of the core this starts")
    p.add_argument("--embedder", default="hash", help="embedder of the core this starts: hash, onnx, minilm")
    p.add_argument("--tenants", type=int, default=4)
    p.add_argument("--seed-docs", type=int, default=100, help="documents per tenant before the run")
    p.add_argument("--shape", choices=("step", "ramp"), default="step")
    p.add_argument("--users", type=int, default=50, help="users at the peak")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seconds", type=float, default=120.0, help="the run's length")
    p.add_argument("--think", type=float, default=5.0, help="mean seconds between a user's requests")
    p.add_argument("--out", type=Path, default=None, help="results dir (default loadtest-results/<UTC time>)")
    args = p.parse_args(argv)
    if min(args.users, args.steps, args.tenants, args.seed_docs) < 1 or args.seconds <= 0 or args.think < 0:
        p.error("--users, --steps, --tenants and --seed-docs must be at least 1, --seconds above 0, --think 0 or more")
    out = args.out or RESULTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shape = Shape(args.shape, args.users, args.steps, args.seconds, args.think)
    with ExitStack() as stack:
        if args.running:
            from core.config import load_settings

            settings = load_settings()
            if not (settings.api_url and settings.database_url):
                print("error: no running system found (start `make up`, or set OPSCTL_API_URL and "
                      "OPSCTL_DATABASE_URL)", file=sys.stderr)
                return 2
            host, db_url = settings.api_url, settings.database_url
        else:
            from bench.stack import running_stack

            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsctl-loadtest-")))
            core = stack.enter_context(running_stack(root, args.workers, (), embedder=args.embedder))
            host, db_url = core.api_url, core.pg.url
            print(f"started a core: {host}, {args.workers} workers, embedder {args.embedder}", file=sys.stderr)
        tenants = create_tenants(db_url, args.tenants)
        wait_done(host, seed(host, tenants, args.seed_docs))
        print(f"{len(tenants)} tenants, {args.seed_docs} documents each; Locust {shape.kind} to {shape.users} users "
              f"for {shape.seconds:.0f} s", file=sys.stderr)
        code = run_locust(host, tenants, out, shape, args.seed_docs)
    _print(summary(out), out)
    return code


if __name__ == "__main__":
    sys.exit(main())
