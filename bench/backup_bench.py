"""Backup and restore-drill benchmark: `opsctl backup create` + `opsctl restore-test` against the raw
steps (pg_basebackup; pg_combinebackup; start to consistent and promoted; count(*) per table), all
measured in the same run on the same database.

    python -m bench.backup_bench [--size-gb 1] [--quick]

Target: drill wall time <= 1.2 x (raw combine + start + counts) + the checks' own cost (verify,
the drill's checks, pg_checksums), reported separately. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

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
    args = parser.parse_args(argv)
    size = int((0.05 if args.quick else args.size_gb) * 1024**3)
    console = Console()

    from core.config import Settings
    from core.db import migrate
    from core.embedded import EmbeddedPostgres
    from opsctl.backup.archive import server_conf
    from opsctl.backup.policy import BackupPolicy

    root = Path(tempfile.mkdtemp(prefix="opsctl-backup-bench-"))
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
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)

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
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
