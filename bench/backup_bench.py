"""Backup and restore-drill benchmark: `opsctl backup create` + `opsctl restore-test` against the raw
steps (pg_basebackup; pg_combinebackup; start to consistent and promoted; count(*) per table), all
measured in the same run on the same database.

Off the host (an S3-API server started for the run: moto_server, from the dev extra): a backup copied
to object storage (zstd 3 + AES-256-GCM) against pg_basebackup plus a plain upload (obstore put) of
the same bytes; `restore-test --repo` against a plain download plus pg_combinebackup; the
compressed size ratio. moto keeps objects in one Python process's memory: it is the slowest part
of these figures, for opsctl and the baselines alike.

    python -m bench.backup_bench [--size-gb 1] [--quick] [--no-offsite]

Target: drill wall time <= 1.2 x (raw combine + start + counts) + the checks' own cost (verify,
the drill's checks, pg_checksums), reported separately. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.scratch import scratch_dir

DIM = 384
BODY_WORDS = ["backup", "restore", "wal", "replica", "vector", "index", "drill", "archive", "segment", "chunk",
              "tenant", "search", "ingest", "latency", "recall", "partition", "checkpoint", "timeline"]


def _load(url: str, size_bytes: int, console: Console) -> dict[str, int]:
    """Documents (~4 KB bodies) and two chunks each (384-d vectors), by COPY, until ~size_bytes."""
    import numpy as np
    import psycopg
    from pgvector.psycopg import register_vector

    from core.tenants import create_company

    rng = random.Random(7)
    per_doc = 4096 + 2 * (DIM * 4 + 800) + 2 * DIM * 4  # body + chunks + HNSW entries, roughly
    docs = max(200, size_bytes // per_doc)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        companies = [create_company(conn, f"bench-{i}").company_id for i in range(4)]
        conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw_idx")
        now = datetime.now(UTC)
        # clustered like real embeddings (topics), not uniform noise, on which no ANN index has high recall
        gen = np.random.default_rng(7)
        centers = gen.standard_normal((64, DIM))
        vecs = (centers[gen.integers(0, 64, docs * 2)] + 0.35 * gen.standard_normal((docs * 2, DIM))).astype(np.float32)
        t0 = time.monotonic()
        with conn.cursor() as cur:
            with cur.copy("COPY documents (company_id, id, external_id, title, body, content_hash, created_at)"
                          " FROM STDIN") as copy:
                for i in range(docs):
                    body = " ".join(rng.choice(BODY_WORDS) + str(rng.randrange(1000)) for _ in range(500))
                    copy.write_row((companies[i % 4], i + 1, f"doc-{i}", f"title {i}", body, b"\x00" * 32,
                                    now - timedelta(seconds=i)))
            with cur.copy("COPY chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
                          " FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "text", "int4", "text", "vector", "timestamptz"])
                for i in range(docs):
                    for o in range(2):
                        copy.write_row((companies[i % 4], i + 1, f"doc-{i}", o,
                                        " ".join(rng.choice(BODY_WORDS) for _ in range(60)), vecs[i * 2 + o],
                                        now - timedelta(seconds=i)))
        console.print(f"loaded {docs} documents, {docs * 2} chunks in {time.monotonic() - t0:.0f} s; building HNSW…")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("CREATE INDEX chunks_embedding_hnsw_idx ON chunks USING hnsw (embedding vector_cosine_ops)"
                      " WITH (m = 16, ef_construction = 64)")
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return {"documents": docs, "chunks": docs * 2, "database_bytes": int(size[0]) if size else 0}


def _timed(fn: Any) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def raw_steps(url: str, work: Path, wal_dir: Path, database: str) -> dict[str, float]:
    """The steps a drill is made of, run by hand with no checks."""
    import psycopg

    from core.embedded import prepare_for_pg_user
    from opsctl.backup.archive import switch_and_wait
    from opsctl.backup.restore import ScratchServer, _write_owned
    from opsctl.backup.tools import run_pg

    prepare_for_pg_user(work)
    base, combined = work / "base", work / "combined"
    out: dict[str, float] = {}
    out["pg_basebackup"] = _timed(lambda: run_pg("pg_basebackup", "-d", url, "-D", str(base), "-Fp", "-X", "none",
                                                 "--manifest-checksums=SHA256", "-c", "fast"))
    with psycopg.connect(url, autocommit=True) as conn:
        switch_and_wait(conn, wal_dir)
    out["pg_combinebackup"] = _timed(lambda: run_pg("pg_combinebackup", "--no-sync", "-o", str(combined), str(base)))
    conf = (f"\narchive_mode = off\nrestore_command = 'cp \"{wal_dir}/%f\" \"%p\"'\n"
            "recovery_target_action = 'promote'\nshared_buffers = 128MB\n")
    _write_owned(combined / "postgresql.auto.conf", conf, append=True)
    _write_owned(combined / "recovery.signal", "")
    server = ScratchServer(combined, work / "run")
    try:
        def start() -> None:
            server.start(1800)
            server.wait_promoted(database, 1800)
        out["start_to_promoted"] = _timed(start)

        def counts() -> None:
            with psycopg.connect(server.url(database)) as conn:
                tables = [r[0] for r in conn.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind = 'r'")]
                for t in tables:
                    conn.execute(f'SELECT count(*) FROM public."{t}"')
        out["count_per_table"] = _timed(counts)
    finally:
        server.kill()
    return out


def plain_transfer(base: Path, endpoint: str, bucket: str, work: Path, parallel: int) -> dict[str, float]:
    """The baselines of the offsite figures: the raw base backup's files uploaded as they are (obstore
    put, ``parallel`` at a time, as opsctl copies), downloaded back, and pg_combinebackup on that."""
    from concurrent.futures import ThreadPoolExecutor

    from core.embedded import prepare_for_pg_user
    from opsctl.backup.tools import run_pg
    from opsctl.objectstore.store import StoreSpec, open_store

    store = open_store(StoreSpec("s3", bucket=bucket, prefix="plain", endpoint=endpoint))
    files = [p.relative_to(base).as_posix() for p in sorted(base.rglob("*")) if p.is_file()]
    dirs = [p.relative_to(base) for p in base.rglob("*") if p.is_dir()]
    down = work / "downloaded"
    prepare_for_pg_user(work)

    def put(rel: str) -> None:
        store.put(rel, (base / rel).read_bytes())

    def get(rel: str) -> None:
        (down / rel).write_bytes(b"".join(store.get(rel)))

    out: dict[str, float] = {"plain_bytes": float(sum((base / f).stat().st_size for f in files))}
    with ThreadPoolExecutor(parallel) as pool:
        out["plain_upload"] = _timed(lambda: list(pool.map(put, files)))
        for d in dirs:
            (down / d).mkdir(parents=True, exist_ok=True)
        out["plain_download"] = _timed(lambda: list(pool.map(get, files)))
    combined = work / "combined-download"
    out["pg_combinebackup_of_download"] = _timed(lambda: run_pg("pg_combinebackup", "--no-sync", "-o",
                                                                str(combined), str(down)))
    return out


def offsite(env: dict[str, str], root: Path, raw: dict[str, float], console: Console) -> dict[str, Any]:
    """opsctl backup create with an object-store repository, then restore-test --repo, and the plain
    baselines, against one moto_server started for the run."""
    from bench.s3server import MotoServer, fake_aws

    server = MotoServer()
    try:
        with fake_aws():
            fig = _offsite_run(server.endpoint, env, root)
    finally:
        server.stop()
    copy, report = fig["copy"], fig["report"]
    if copy["state"] != "verified" or not report["passed"]:
        console.print(f"[red]offsite: copy {copy['state']} {copy.get('error', '')}; drill "
                      f"{report.get('error') or 'failed checks'}[/red]")
    return {**fig, "pg_basebackup": raw["pg_basebackup"]}


def _offsite_run(endpoint: str, env: dict[str, str], root: Path) -> dict[str, Any]:
    from bench.s3server import FAKE_AWS, make_bucket

    bucket = make_bucket(endpoint)
    parallel = 4
    baseline = plain_transfer(root / "raw" / "base", endpoint, bucket, root / "raw-s3", parallel)
    env = {**env, **FAKE_AWS, "BENCH_BACKUP_KEY": os.urandom(32).hex()}
    (root / "backup.yaml").write_text(json.dumps({"repositories": [
        {"name": "local", "type": "local", "path": str(root / "repo")},
        {"name": "offsite", "type": "s3", "bucket": bucket, "prefix": "opsctl", "endpoint": endpoint,
         "parallel": parallel, "compression": {"type": "zstd", "level": 3},
         "encryption": {"type": "aes-256-gcm", "key_env": "BENCH_BACKUP_KEY"}}]}))
    t_create, out = opsctl(env, "backup", "create", "-o", "json")
    copy = json.loads(out)["copies"]["offsite"]
    t_drill, out = opsctl(env, "restore-test", "--repo", "offsite", "-o", "json")
    return {"baseline": baseline, "create_with_copy": t_create, "copy": copy, "drill": t_drill,
            "report": json.loads(out)}


def offsite_table(fig: dict[str, Any], console: Console) -> None:
    base, copy, report = fig["baseline"], fig["copy"], fig["report"]
    steps, rates = report.get("steps", {}), report.get("throughput", {})
    restore = steps.get("fetch", 0) + steps.get("combine", 0)
    rows = [
        ("backup to object storage: create + copy vs pg_basebackup + plain upload", fig["create_with_copy"],
         fig["pg_basebackup"] + base["plain_upload"]),
        ("copy (zstd 3 + AES-256-GCM, checked remotely) vs plain upload", copy["seconds"], base["plain_upload"]),
        ("restore from object storage: fetch + combine vs plain download + pg_combinebackup", restore,
         base["plain_download"] + base["pg_combinebackup_of_download"]),
        ("fetch (download, decrypt, decompress, SHA-256) vs plain download", steps.get("fetch", 0),
         base["plain_download"]),
    ]
    table = Table(title=f"off the host ({copy['plain_bytes'] / 1e6:.0f} MB backup + its WAL, moto_server, "
                        f"{rates.get('parallel', 4)} streams)")
    for col in ("figure", "opsctl s", "raw s", "ratio"):
        table.add_column(col)
    for name, ours, raw in rows:
        table.add_row(name, f"{ours:.2f}", f"{raw:.2f}", f"{ours / raw:.2f}x" if raw else "-")
    console.print(table)
    console.print(f"compressed size: {copy['stored_bytes'] / 1e6:.1f} MB stored for {copy['plain_bytes'] / 1e6:.1f} MB"
                  f" (ratio {copy['stored_bytes'] / copy['plain_bytes']:.3f}); the drill from the store "
                  f"{'passed' if report['passed'] else 'FAILED'} in {fig['drill']:.2f} s")
    shown = {k.removesuffix("_bytes_per_second"): f"{v / 1e6:.1f} MB/s" for k, v in rates.items()
             if k.endswith("_bytes_per_second") and v}
    console.print(f"restore-test --repo bytes/s per step (per stream; fetch: wall): {shown}")


def opsctl(env: dict[str, str], *args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", *args], env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    if proc.returncode != 0 and not proc.stdout.strip():
        raise SystemExit(f"opsctl {' '.join(args)} failed: {proc.stderr.strip()}")
    return took, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0, help="database size to load (default 1)")
    parser.add_argument("--quick", action="store_true", help="a 50 MB smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-offsite", action="store_true", help="skip the object-storage figures")
    args = parser.parse_args(argv)
    size = int((0.05 if args.quick else args.size_gb) * 1024**3)
    console = Console()

    from core.config import Settings
    from core.db import migrate
    from core.embedded import EmbeddedPostgres
    from opsctl.backup.archive import server_conf
    from opsctl.backup.policy import BackupPolicy

    with scratch_dir("opsctl-backup-bench-", say=console.print) as root:
        policy = BackupPolicy(repository=str(root / "repo"))
        pg = EmbeddedPostgres(root / "pg", extra_conf=server_conf(policy, root))
        try:
            url = pg.start()
            migrate(url, Settings(embedder="hash", embed_dim=DIM, data_dir=root))
            corpus = _load(url, size, console)
            console.print(f"database: {corpus['database_bytes'] / 1e9:.2f} GB")
            raw = raw_steps(url, root / "raw", root / "repo" / "wal", pg.database)

            pol_file = root / "backup.yaml"
            pol_file.write_text(f"repository: {root / 'repo'}\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
            env.update(OPSCTL_DATABASE_URL=url, OPSCTL_DATA_DIR=str(root), OPSCTL_POLICY_DIR=str(root))
            t_create, _ = opsctl(env, "backup", "create", "-o", "json")
            t_drill, out = opsctl(env, "restore-test", "-o", "json")
            report = json.loads(out)
            off = None if args.no_offsite else offsite(env, root, raw, console)
        finally:
            pg.stop(mode="immediate")

    steps = report["steps"]
    raw_restore = raw["pg_combinebackup"] + raw["start_to_promoted"] + raw["count_per_table"]
    checks_cost = steps.get("verify", 0) + steps.get("checks", 0) + steps.get("page_checksums", 0)
    budget = 1.2 * raw_restore + checks_cost
    rows = [
        ("backup: opsctl backup create vs pg_basebackup", t_create, raw["pg_basebackup"]),
        ("combine: drill vs pg_combinebackup", steps.get("combine", 0), raw["pg_combinebackup"]),
        ("recovery: drill vs start to promoted",
         steps.get("start_to_consistent", 0) + steps.get("consistent_to_promoted", 0), raw["start_to_promoted"]),
        ("drill wall minus checks vs raw restore steps", t_drill - checks_cost, raw_restore),
    ]
    table = Table(title=f"backup bench ({corpus['database_bytes'] / 1e9:.2f} GB, {corpus['chunks']} vectors)")
    for col in ("figure", "opsctl s", "raw s", "ratio"):
        table.add_column(col)
    for name, ours, base in rows:
        table.add_row(name, f"{ours:.2f}", f"{base:.2f}", f"{ours / base:.2f}x" if base else "-")
    console.print(table)
    for check in report["checks"]:
        if not check["passed"]:
            console.print(f"[red]check {check['name']} failed[/red]: {check['figure']} {check['detail']}")
    console.print(f"drill steps: {steps}; inside the drill {report['duration_seconds']:.2f} s, "
                  f"CLI process {t_drill:.2f} s")
    console.print(f"drill checks' own cost: verify {steps.get('verify', 0):.2f} s, "
                  f"checks {steps.get('checks', 0):.2f} s, pg_checksums {steps.get('page_checksums', 0):.2f} s; "
                  "count(*) per table (raw) "
                  f"{raw['count_per_table']:.2f} s")
    verdict = "met" if t_drill <= budget else "missed"
    console.print(f"target: drill wall {t_drill:.2f} s <= 1.2 x raw {raw_restore:.2f} s + checks {checks_cost:.2f} s"
                  f" = {budget:.2f} s: {verdict}; drill passed: {report['passed']}, RTO {report['rto_seconds']:.1f} s")
    figures = {"corpus": corpus, "raw": raw, "opsctl_backup_create": t_create,
               "opsctl_restore_test": t_drill, "drill_steps": steps, "budget": budget,
               "target_met": t_drill <= budget, "drill_passed": report["passed"]}
    if off is not None:
        offsite_table(off, console)
        figures["offsite"] = off
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    passed = report["passed"] and (off is None or (off["report"]["passed"] and off["copy"]["state"] == "verified"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
