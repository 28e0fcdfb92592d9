"""The restore drill (``opsctl restore-test``): restore into a scratch server and prove it works.

Steps: verify the chain → pg_combinebackup into a scratch dir → recover from the archive (to a
target time, or the end of the archive) and promote → checks → stop → ``pg_checksums --check``.
The scratch server and directory are removed whatever happens (failure, Ctrl-C, SIGTERM).

The point in time is proven from the data: with ``track_commit_timestamp`` every row version
carries its commit time, so the restored database must hold no row committed after the point,
and every row version the source committed at or before it (same key, same xmin).
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.clock import Clock, utcnow
from core.errors import ConfigError, OperationFailed, OpsError
from core.threads import main_thread
from opsctl.backup.catalog import BackupRecord, Repository
from opsctl.backup.policy import BackupPolicy
from opsctl.backup.tools import Progress, no_progress


@dataclass
class Check:
    name: str
    passed: bool
    figure: str
    detail: str = ""


class _Interrupted(KeyboardInterrupt):
    """SIGTERM during a drill: unwind like Ctrl-C so the scratch server is cleaned up."""


# --- reading both databases ---------------------------------------------------------------------

def leaf_tables(conn: Any) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def primary_key(conn: Any, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        (f'public."{table}"',)).fetchall()
    return [r[0] for r in rows]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def row_versions(conn: Any, table: str, pk: list[str], until: datetime | None) -> dict[str, tuple[str, Any, Any]]:
    """key → (xmin, commit time, content digest) of each row (committed at or before ``until`` when given)."""
    key = "concat_ws('|', " + ", ".join(f"{_q(c)}::text" for c in pk) + ")"
    digest = "md5(concat_ws('|', title, body, metadata::text))" if table.startswith("documents") else "NULL"
    sql = (f"SELECT {key}, xmin::text, pg_xact_commit_timestamp(xmin), {digest} FROM public.{_q(table)}")
    rows = conn.execute(sql + (" WHERE coalesce(pg_xact_commit_timestamp(xmin) <= %s, true)" if until else ""),
                        (until,) if until else ()).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


# --- the checks ---------------------------------------------------------------------------------

@dataclass
class Context:
    source: Any
    restored: Any
    point: datetime  # the recovered point: the target time, or the last replayed commit
    target_given: bool
    policy: BackupPolicy
    hnsw_ef_search: int


def check_point_in_time(ctx: Context, tables: list[str], versions: dict[str, Any]) -> list[Check]:
    missing: list[str] = []
    later = 0
    expected = 0
    for table in tables:
        src, dst = versions[table]
        expected += len(src)
        missing += [f"{table}:{k}" for k, v in src.items() if k not in dst or dst[k][0] != v[0]]
        later += sum(1 for v in dst.values() if v[1] is not None and v[1] > ctx.point)
    passed = not missing and later == 0
    detail = (f"missing {missing[:3]}" if missing else "") + (f" {later} row(s) committed after the point" if later
                                                             else "")
    return [Check("point_in_time", passed, f"{expected - len(missing)}/{expected} rows at or before "
                  f"{ctx.point.isoformat()}, {later} after", detail.strip())]


def check_document_checksums(ctx: Context, versions: dict[str, Any]) -> Check:
    per_company_src: dict[str, Any] = {}
    per_company_dst: dict[str, Any] = {}
    for table, (src, dst) in versions.items():
        if not table.startswith("documents"):
            continue
        for key in sorted(src):
            company = key.split("|", 1)[0]
            per_company_src.setdefault(company, hashlib.sha256()).update(f"{key}={src[key][2]};".encode())
            got = dst.get(key)
            per_company_dst.setdefault(company, hashlib.sha256()).update(f"{key}={got[2] if got else None};".encode())
    bad = [c for c in per_company_src if per_company_src[c].digest() != per_company_dst[c].digest()]
    return Check("document_checksums", not bad, f"{len(per_company_src) - len(bad)}/{len(per_company_src)} companies",
                 f"companies differing: {bad}" if bad else "")


def check_heap_and_counts(ctx: Context, tables: list[str]) -> tuple[Check, Check]:
    """Read every heap tuple (with its TOAST: a whole-row value detoasts) and compare row counts with
    the source at the point (rows changed there later count once more here; fewer means loss)."""
    lower: list[str] = []
    total = 0
    errors = []
    for table in tables:
        try:
            row = ctx.restored.execute(f"SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0)"
                                       f" FROM public.{_q(table)} t").fetchone()
        except Exception as exc:  # a corrupt page raises: that is the finding
            errors.append(f"{table}: {str(exc).splitlines()[0]}")
            continue
        total += int(row[0])
        src = ctx.source.execute(f"SELECT count(*) FROM public.{_q(table)}"
                                 " WHERE coalesce(pg_xact_commit_timestamp(xmin) <= %s, true)",
                                 (ctx.point,)).fetchone()
        if int(row[0]) < int(src[0]):
            lower.append(f"{table} {row[0]} < {src[0]}")
    heap = Check("heap_read", not errors, f"{len(tables) - len(errors)}/{len(tables)} tables read",
                 "; ".join(errors))
    counts = Check("row_counts", not lower and not errors, f"{total} rows in {len(tables)} tables and partitions",
                   "; ".join(lower))
    return heap, counts


def check_index_vs_seq(ctx: Context, tables: list[str], sample: int) -> Check:
    """Per table: count via the primary key index (forced) = count via a sequential scan, and sampled
    keys found by the index."""
    bad = []
    checked = 0
    for table in tables:
        pk = primary_key(ctx.restored, table)
        if not pk:
            continue
        cols = ", ".join(_q(c) for c in pk)
        with ctx.restored.transaction():
            ctx.restored.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            by_index = ctx.restored.execute(f"SELECT count(*) FROM (SELECT {cols} FROM public.{_q(table)}"
                                            f" ORDER BY {cols}) s").fetchone()[0]
        with ctx.restored.transaction():
            ctx.restored.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off;"
                                 " SET LOCAL enable_bitmapscan = off")
            by_seq = ctx.restored.execute(f"SELECT count(*) FROM public.{_q(table)}").fetchone()[0]
            keys = ctx.restored.execute(f"SELECT {cols} FROM public.{_q(table)} LIMIT %s", (sample,)).fetchall()
        with ctx.restored.transaction():
            ctx.restored.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            cond = " AND ".join(f"{_q(c)} = %s" for c in pk)
            found = sum(ctx.restored.execute(f"SELECT count(*) FROM public.{_q(table)} WHERE {cond}",
                                             tuple(k)).fetchone()[0] for k in keys)
        checked += 1
        if by_index != by_seq or found != len(keys):
            bad.append(f"{table}: index {by_index} vs seq {by_seq}, {found}/{len(keys)} sampled keys")
    return Check("index_vs_seq", not bad, f"{checked - len(bad)}/{checked} primary keys agree", "; ".join(bad))


def check_vector_indexes(ctx: Context) -> Check:
    sql = ("SELECT c.relname, i.indisvalid AND i.indisready FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
           " JOIN pg_am a ON a.oid = c.relam WHERE a.amname IN ('hnsw', 'ivfflat')")
    source = {r[0] for r in ctx.source.execute(sql).fetchall()}
    restored = dict(ctx.restored.execute(sql).fetchall())
    missing = sorted(source - set(restored))
    invalid = sorted(n for n, ok in restored.items() if not ok)
    ok = len(restored) - len(invalid)
    return Check("vector_indexes", not missing and not invalid, f"{ok}/{len(source)} present and valid",
                 (f"missing {missing} " if missing else "") + (f"invalid {invalid}" if invalid else ""))


def _top(conn: Any, query: Any, k: int, exact: bool, where: str = "",
         args: tuple[Any, ...] = ()) -> list[tuple[str, float]]:
    """The ``k`` nearest chunks as (key, distance). Exact search breaks distance ties by key, so two
    servers holding the same rows agree on the order even when documents are near-duplicates."""
    order = "ORDER BY embedding <=> %s, company_id, id, created_at" if exact else "ORDER BY embedding <=> %s"
    with conn.transaction():
        if exact:
            conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        rows = conn.execute(f"SELECT concat_ws('|', company_id, id, created_at), embedding <=> %s FROM chunks {where}"
                            f" {order} LIMIT %s", (query, *args, query, k)).fetchall()
    return [(r[0], float(r[1])) for r in rows]


def recall_hits(exact: list[tuple[str, float]], approx: list[tuple[str, float]]) -> int:
    """Approximate results that are true neighbours: any result no farther than the k-th exact one
    counts (a tie at the k-th distance is as right as the row the exact scan happened to pick)."""
    if not exact:
        return 0
    kth = exact[-1][1]
    return min(len(exact), sum(1 for _, distance in approx if distance <= kth + 1e-9))


def sample_chunks(conn: Any, n: int) -> list[tuple[Any, Any]]:
    """About ``n`` random (company_id, embedding) pairs, sampling pages rather than sorting the table."""
    row = conn.execute("SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM pg_inherits i"
                       " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'chunks'::regclass").fetchone()
    total = float(row[0]) if row else 0.0
    if total > 20 * n:
        percent = min(100.0, 100.0 * 4 * n / total)
        rows = conn.execute(f"SELECT company_id, embedding FROM chunks TABLESAMPLE SYSTEM ({percent:.4f})"
                            " LIMIT %s", (n,)).fetchall()
        if len(rows) >= n // 2 and rows:
            return [(r[0], r[1]) for r in rows]
    rows = conn.execute("SELECT company_id, embedding FROM chunks ORDER BY random() LIMIT %s", (n,)).fetchall()
    return [(r[0], r[1]) for r in rows]


def check_vector_recall(ctx: Context) -> Check:
    ctx.restored.execute(f"SET hnsw.ef_search = {int(ctx.hnsw_ef_search)}")
    ctx.restored.execute("SET hnsw.iterative_scan = relaxed_order")
    sample = [(vec,) for _, vec in sample_chunks(ctx.restored, ctx.policy.drill.recall_sample)]
    if not sample:
        return Check("vector_recall", True, "no vectors stored")
    hits = total = 0
    for (vec,) in sample:
        exact = _top(ctx.restored, vec, 10, exact=True)
        hits += recall_hits(exact, _top(ctx.restored, vec, 10, exact=False))
        total += len(exact)
    recall = hits / total if total else 1.0
    minimum = ctx.policy.drill.recall_at_10_min
    return Check("vector_recall", recall >= minimum, f"recall@10 {recall:.3f} (min {minimum}) on {len(sample)} vectors")


def check_recorded_search(ctx: Context, versions: dict[str, Any]) -> Check:
    """A company-scoped vector search returns the same top 10 on the restored database as on the source
    at the point (restored rows the source changed later are left out)."""
    rows = sample_chunks(ctx.restored, 1)
    if not rows:
        return Check("recorded_search", True, "no chunks to search")
    company, vec = rows[0]
    at_point = "WHERE company_id = %s AND coalesce(pg_xact_commit_timestamp(xmin) <= %s, true)"
    src = [key for key, _ in _top(ctx.source, vec, 10, exact=True, where=at_point, args=(company, ctx.point))]
    known = set().union(*(src_rows.keys() for t, (src_rows, _) in versions.items() if t.startswith("chunks")))
    dst = [key for key, _ in _top(ctx.restored, vec, 50, exact=True, where="WHERE company_id = %s", args=(company,))
           if key in known][:10]
    return Check("recorded_search", src == dst, f"{sum(a == b for a, b in zip(src, dst, strict=False))}/{len(src)} "
                 f"top results identical (company {company})")


def check_accepts_write(ctx: Context) -> Check:
    try:
        ctx.restored.execute("CREATE TABLE opsctl_drill_probe (id int PRIMARY KEY, at timestamptz DEFAULT now())")
        ctx.restored.execute("INSERT INTO opsctl_drill_probe (id) SELECT generate_series(1, 100)")
        n = ctx.restored.execute("SELECT count(*) FROM opsctl_drill_probe").fetchone()[0]
        ctx.restored.execute("DROP TABLE opsctl_drill_probe")
    except Exception as exc:
        return Check("accepts_write", False, "write failed", str(exc).splitlines()[0])
    return Check("accepts_write", n == 100, f"{n}/100 rows written and read back")


# --- the drill ----------------------------------------------------------------------------------

def _fail_report(backup: BackupRecord | None, checks: list[Check], started: float, policy: BackupPolicy,
                 target: datetime | None, error: str) -> dict[str, Any]:
    return {"backup": backup.id if backup else None, "chain": [], "target_time": target.isoformat() if target else None,
            "recovered_point": None, "passed": False, "error": error, "checks": [asdict(c) for c in checks],
            "rto_seconds": time.monotonic() - started, "rto_target_seconds": policy.targets.rto_seconds,
            "rpo_seconds": None, "rpo_target_seconds": policy.targets.rpo_seconds, "steps": {}}


def run_drill(settings: Any, policy: BackupPolicy, *, backup_id: str = "latest", target_time: datetime | None = None,
              progress: Progress = no_progress, now: Clock = utcnow) -> dict[str, Any]:
    """Run one drill; returns the report (also stored in ops_events and exposed as gauges)."""
    from opsctl.backup.metrics import publish
    from opsctl.backup.service import audit, repository
    from opsctl.context import connect_db

    repo = repository(settings, policy)
    if backup_id != "latest":
        repo.require(backup_id)  # an unknown id is a typo, not a failed drill: NotFound, and nothing recorded
    started = time.monotonic()
    started_at = now()
    with connect_db(settings) as source:
        try:
            report = _drill(settings, policy, repo, source, backup_id, target_time, progress, started)
        except ConfigError:
            raise
        except Exception as exc:  # no backup, a tool failed, a check could not run: a failed drill, recorded
            message = exc.message if isinstance(exc, OpsError) else f"{type(exc).__name__}: {exc}"
            report = _fail_report(None, [], started, policy, target_time, message.strip().splitlines()[0])
        report["started_at"] = started_at.isoformat()
        report["duration_seconds"] = time.monotonic() - started
        publish(report, settings.data_dir)
        audit(source, "restore.drill", report.get("backup") or "none",
              "passed" if report["passed"] else f"failed: {failure_reason(report)}", report)
    return report


def failure_reason(report: dict[str, Any]) -> str:
    """Why a drill failed, in one line: the error that stopped it (a missing backup, a file that does
    not match its manifest, a tool that failed), else each failed check with its detail or figure."""
    if report.get("error"):
        return str(report["error"])
    failed = [c for c in report["checks"] if not c["passed"]]
    return "; ".join(f"{c['name']}: {c['detail'] or c['figure']}" for c in failed) or "no check passed"


def _seconds(value: float | None, target: float) -> str:
    shown = "not measured" if value is None else f"{value:.1f} s"
    return f"{shown} (target {target:.0f} s)"


def outcome_line(report: dict[str, Any]) -> str:
    """``RTO 4.2 s (target 900 s), RPO 0.0 s (target 300 s): PASSED`` (a drill that stopped early has
    no RPO: it says so)."""
    return (f"RTO {_seconds(report.get('rto_seconds'), report['rto_target_seconds'])}, "
            f"RPO {_seconds(report.get('rpo_seconds'), report['rpo_target_seconds'])}: "
            + ("PASSED" if report["passed"] else "FAILED"))


def _drill(settings: Any, policy: BackupPolicy, repo: Repository, source: Any, backup_id: str,
           target_time: datetime | None, progress: Progress, started: float) -> dict[str, Any]:
    import psycopg
    from pgvector.psycopg import register_vector

    from opsctl.backup.restore import ScratchServer, build_data_dir, load_logical, resolve_chain
    from opsctl.backup.tools import run_pg
    from opsctl.backup.verify import verify_backup

    steps: dict[str, float] = {}
    mark = time.monotonic()

    def step(name: str) -> None:
        nonlocal mark
        steps[name] = round(time.monotonic() - mark, 3)
        mark = time.monotonic()

    physical = policy.mode == "physical" if backup_id == "latest" else repo.get(backup_id).physical
    if not physical and target_time is not None:
        raise ConfigError("a logical backup restores to the moment of its dump only: drop --target-time")
    chain = resolve_chain(repo, backup_id, target_time, physical=physical)
    backup = chain[-1]
    progress(f"verifying {len(chain)} backup(s)", 0.05)
    results = [verify_backup(repo, b) for b in chain]
    bad = [r for r in results if not r.ok]
    if bad:
        figure = f"backup {bad[0].backup_id}: {len(bad[0].problems)} problem(s)"
        return _fail_report(backup, [Check("backup_verify", False, figure, "; ".join(bad[0].problems[:5]))],
                            started, policy, target_time, f"backup {bad[0].backup_id} {bad[0].summary()}")
    checks = [Check("backup_verify", True, f"{sum(r.files for r in results)} files, "
                    f"{sum(r.bytes for r in results)} bytes match their manifests")]
    step("verify")

    parent = Path(policy.drill.scratch_dir) if policy.drill.scratch_dir else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="opsctl-drill-", dir=parent))
    server: Any = ScratchServer(scratch / "data", scratch / "run") if physical else LogicalScratch(scratch, backup)
    wanted = set(policy.drill.checks) - (set() if physical else {"point_in_time"})
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread() else None
    try:
        if physical:
            progress("pg_combinebackup", 0.15)
            build_data_dir(repo, chain, server.data_dir, target_time, scratch=True)
            step("combine")
            progress("recovering from the archive", 0.35)
            server.start(policy.drill.timeout_seconds)
            step("start_to_consistent")
            server.wait_promoted(backup.database, policy.drill.timeout_seconds)
            step("consistent_to_promoted")
        else:
            progress("starting a scratch cluster", 0.15)
            server.start()
            step("start")
            progress("pg_restore", 0.35)
            load_logical(repo, backup, server.url(backup.database))
            step("pg_restore")
        progress("checks", 0.6)
        with psycopg.connect(server.url(backup.database), autocommit=True) as restored:
            register_vector(restored)
            register_vector(source)
            replayed = _one(restored, "SELECT pg_last_xact_replay_timestamp()") if physical else None
            # a dump holds what was committed when pg_dump took its snapshot, just after its start
            start_or_stop = backup.stop_time if physical else backup.start_time
            point = target_time or replayed or datetime.fromisoformat(start_or_stop)
            ctx = Context(source, restored, point, target_time is not None, policy, settings.hnsw_ef_search)
            tables = leaf_tables(restored)
            keyed = {t: primary_key(restored, t) for t in tables}
            versions = {t: (row_versions(source, t, pk, point), row_versions(restored, t, pk, None))
                        for t, pk in keyed.items() if pk}
            if "point_in_time" in wanted:
                checks += check_point_in_time(ctx, list(versions), versions)
            heap, counts = check_heap_and_counts(ctx, tables)
            checks += [c for c in (heap, counts) if c.name in wanted]
            if "index_vs_seq" in wanted:
                checks.append(check_index_vs_seq(ctx, tables, policy.drill.index_sample))
            if "document_checksums" in wanted:
                checks.append(check_document_checksums(ctx, versions))
            if "vector_indexes" in wanted:
                checks.append(check_vector_indexes(ctx))
            if "vector_recall" in wanted:
                checks.append(check_vector_recall(ctx))
            if "recorded_search" in wanted:
                checks.append(check_recorded_search(ctx, versions))
            if "accepts_write" in wanted:
                checks.append(check_accepts_write(ctx))
            newest_restored = (max((v[1] for _, dst in versions.values() for v in dst.values() if v[1]), default=None)
                               if physical else point)
            if target_time is None:
                newest = _one(source, "SELECT (pg_last_committed_xact()).timestamp")
            else:
                newest = max((v[1] for src, _ in versions.values() for v in src.values() if v[1]), default=None)
        step("checks")
        rto = time.monotonic() - started
        if "page_checksums" in wanted:
            progress("pg_checksums --check", 0.85)
            server.stop("fast")
            try:
                out = run_pg("pg_checksums", "--check", "-D", str(server.data_dir), timeout=None)
                blocks = next((ln.split(":")[1].strip() for ln in out.splitlines() if "Blocks scanned" in ln), "?")
                checks.append(Check("page_checksums", True, f"{blocks} blocks, 0 bad checksums"))
            except OperationFailed as exc:
                checks.append(Check("page_checksums", False, "bad checksums", exc.message))
            step("page_checksums")
    finally:
        progress("cleaning up the scratch server", 0.95)
        cleanup(server, scratch)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    rpo = max(0.0, (newest - newest_restored).total_seconds()) if newest and newest_restored else 0.0
    checks.append(Check("rto_target", rto <= policy.targets.rto_seconds,
                        f"{rto:.1f} s (target {policy.targets.rto_seconds:.0f} s)"))
    checks.append(Check("rpo_target", rpo <= policy.targets.rpo_seconds,
                        f"{rpo:.1f} s (target {policy.targets.rpo_seconds:.0f} s)"))
    return {"backup": backup.id, "chain": [b.id for b in chain],
            "target_time": target_time.isoformat() if target_time else None,
            "recovered_point": point.isoformat(), "last_replayed_commit": replayed.isoformat() if replayed else None,
            "passed": all(c.passed for c in checks), "checks": [asdict(c) for c in checks],
            "rto_seconds": round(rto, 3), "rto_target_seconds": policy.targets.rto_seconds,
            "rpo_seconds": round(rpo, 3), "rpo_target_seconds": policy.targets.rpo_seconds, "steps": steps}


class LogicalScratch:
    """A fresh scratch cluster (initdb) that a logical backup is loaded into."""

    def __init__(self, scratch: Path, backup: BackupRecord) -> None:
        from core.embedded import EmbeddedPostgres

        self.pg = EmbeddedPostgres(scratch / "data", database=backup.database,
                                   extra_conf=("shared_buffers = 128MB", "fsync = off", "track_commit_timestamp = on"))
        self.data_dir = self.pg.data_dir

    def start(self) -> None:
        self.pg.start()

    def url(self, database: str) -> str:
        from core.embedded import pg_url

        return pg_url(self.pg.socket_dir, self.pg.port, database)

    def stop(self, mode: str = "fast") -> None:
        self.pg.stop(mode)

    def kill(self) -> None:
        import contextlib

        from core.errors import OpsError

        with contextlib.suppress(OpsError):
            self.pg.stop("immediate")


def _one(conn: Any, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return row[0] if row else None


def _raise_interrupt(*_: Any) -> None:
    raise _Interrupted()




def cleanup(server: Any, scratch: Path) -> None:
    """Stop the scratch server and remove its directory; a second Ctrl-C cannot interrupt this."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread() else None
    try:
        server.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
