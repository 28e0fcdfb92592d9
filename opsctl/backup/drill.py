"""The restore drill (``opsctl restore-test``): restore into a scratch server and prove it works.

Steps: verify the chain (and record it in the catalog) → find the recovery target → pg_combinebackup
into a scratch dir → recover from the archive and promote → checks → stop → ``pg_checksums --check``.
The scratch server and directory are removed whatever happens (failure, Ctrl-C, SIGTERM).

The point is chosen, not found: without ``--target-time`` the drill recovers to the last commit in
the archive when it starts (``opsctl.backup.target``), so PostgreSQL either reaches it or refuses.
Which source rows the restored database must hold is decided by its own commit log, never by
comparing commit timestamps (``opsctl.backup.point``); the source is read in one snapshot
(``opsctl.backup.checks``).
"""

from __future__ import annotations

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
from opsctl.backup.catalog import BackupRecord, Repository, megabytes
from opsctl.backup.checks import Check
from opsctl.backup.policy import BackupPolicy
from opsctl.backup.target import ArchiveEnd
from opsctl.backup.tools import Progress, no_progress


class _Interrupted(KeyboardInterrupt):
    """SIGTERM during a drill: unwind like Ctrl-C so the scratch server is cleaned up."""


# --- the drill ----------------------------------------------------------------------------------

def _fail_report(backup: BackupRecord | None, checks: list[Check], started: float, policy: BackupPolicy,
                 target: datetime | None, error: str) -> dict[str, Any]:
    return {"backup": backup.id if backup else None, "chain": [], "target_time": target.isoformat() if target else None,
            "recovered_point": None, "passed": False, "error": error, "checks": [asdict(c) for c in checks],
            "rto_seconds": time.monotonic() - started, "rto_target_seconds": policy.targets.rto_seconds,
            "rpo_seconds": None, "rpo_target_seconds": policy.targets.rpo_seconds, "steps": {}}


def run_drill(settings: Any, policy: BackupPolicy, *, backup_id: str = "latest", target_time: datetime | None = None,
              progress: Progress = no_progress, now: Clock = utcnow, repo_name: str | None = None) -> dict[str, Any]:
    """Run one drill; returns the report (also stored in ops_events and exposed as gauges).

    With a remote ``repo_name`` the chain is first downloaded from that repository into a clean scratch
    directory (decrypted, decompressed, checksummed), with the WAL pushed there from the backup's start
    on (opsctl.backup.walpush), and restored from there alone: what a lost host would have. It
    recovers to the last commit in that WAL (or to ``target_time``)."""
    from opsctl.backup.metrics import publish
    from opsctl.backup.repos import is_remote
    from opsctl.backup.service import audit, repository
    from opsctl.context import connect_db

    remote = is_remote(policy, repo_name)
    repo = repository(settings, policy)
    if backup_id != "latest" and not remote:
        repo.require(backup_id)  # an unknown id is a typo, not a failed drill: NotFound, and nothing recorded
    started = time.monotonic()
    started_at = now()
    with connect_db(settings) as source:
        fetched: Path | None = None
        try:
            extra: dict[str, Any] = {}
            if remote:
                assert repo_name is not None
                fetched, repo, extra = _fetch_remote(policy, repo_name, backup_id, target_time, progress)
            report = _drill(settings, policy, repo, source, backup_id, target_time, progress, started, now,
                            archived_here=not remote)
            report["steps"] = {**extra.get("steps", {}), **report["steps"]}
            if remote:
                report["throughput"] = {**extra["throughput"], **_combine_rate(report, extra)}
        except ConfigError:
            raise
        except Exception as exc:  # no backup, a tool failed, a check could not run: a failed drill, recorded
            message = exc.message if isinstance(exc, OpsError) else f"{type(exc).__name__}: {exc}"
            report = _fail_report(None, [], started, policy, target_time, message.strip().splitlines()[0])
        finally:
            if fetched is not None:
                shutil.rmtree(fetched, ignore_errors=True)
        report["repo"] = repo_name or policy.local_name
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


def _scratch_parent(policy: BackupPolicy) -> Path:
    parent = Path(policy.drill.scratch_dir) if policy.drill.scratch_dir else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _fetch_remote(policy: BackupPolicy, name: str, backup_id: str, target_time: datetime | None,
                  progress: Progress) -> tuple[Path, Repository, dict[str, Any]]:
    """Download the chain from remote repository ``name`` into a clean scratch repository, then the WAL
    pushed there from the chosen backup's start on into that repository's WAL dir (which the restore
    reads with its plain ``cp`` restore_command); the steps' seconds and bytes/s (download, decrypt,
    decompress, write, WAL)."""
    from opsctl.backup.offsite import download_chain
    from opsctl.backup.repos import remote

    target = remote(policy, name)
    folder = Path(tempfile.mkdtemp(prefix="opsctl-fetch-", dir=_scratch_parent(policy)))
    wall = time.monotonic()
    try:
        got = download_chain(target, backup_id, folder / "repo", progress, target=target_time)
        wall = time.monotonic() - wall
        wal_wall = time.monotonic()
        wal_files, wal_bytes = _fetch_wal(target, got.repo, got.chain[-1], progress)
        wal_wall = time.monotonic() - wal_wall
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    seconds = got.seconds
    per_step = {"download": got.stored_bytes, "decrypt": got.stored_bytes if target.key else 0,
                "decompress": got.plain_bytes if target.codec.compression == "zstd" else 0,
                "write": got.plain_bytes}
    # per step: its bytes over the seconds spent in it, summed over the parallel streams (a per-stream
    # rate); fetch: the stored bytes over the wall time of the whole download
    throughput = {f"{step}_bytes_per_second": round(n / seconds[step]) if seconds.get(step) else None
                  for step, n in per_step.items() if n}
    throughput.update(fetch_bytes_per_second=round(got.stored_bytes / wall) if wall else None,
                      stored_bytes=got.stored_bytes, plain_bytes=got.plain_bytes, parallel=target.config.parallel,
                      wal_files=wal_files, wal_bytes=wal_bytes,
                      fetch_wal_bytes_per_second=round(wal_bytes / wal_wall) if wal_bytes and wal_wall else None)
    steps = {"fetch": round(wall, 3), **{f"fetch_{k}_stream_seconds": round(v, 3) for k, v in seconds.items()},
             "fetch_wal": round(wal_wall, 3)}
    return folder, got.repo, {"throughput": throughput, "steps": steps, "plain_bytes": got.plain_bytes}


def _fetch_wal(target: Any, repo: Repository, backup: BackupRecord, progress: Progress) -> tuple[int, int]:
    """The WAL the remote repository holds from ``backup``'s first segment on (and every history
    file), decoded into ``repo``'s WAL dir; (files, plain bytes). Nothing for a logical backup."""
    from opsctl.backup.plan import parse_lsn, segment_name, segment_number
    from opsctl.backup.verify import segment_size
    from opsctl.backup.walpush import fetch_from

    if not (backup.physical and backup.start_lsn and backup.timeline):
        return 0, 0
    size = segment_size(repo)
    first = segment_name(backup.timeline, segment_number(parse_lsn(backup.start_lsn), size), size)
    progress(f"fetching WAL from {target.name} (from {first} on)", None)
    names = fetch_from(target, repo.wal_dir, first=first, parallel=target.config.parallel)
    return len(names), sum((repo.wal_dir / n).stat().st_size for n in names)


def _combine_rate(report: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Bytes/s of the restore's own steps, over the bytes downloaded (the backup chain's plain size)."""
    out: dict[str, Any] = {}
    for step in ("combine", "start_to_consistent"):
        seconds = report["steps"].get(step)
        out[f"{step}_bytes_per_second"] = round(extra["plain_bytes"] / seconds) if seconds else None
    return out


def _drill(settings: Any, policy: BackupPolicy, repo: Repository, source: Any, backup_id: str,
           target_time: datetime | None, progress: Progress, started: float, now: Clock,
           archived_here: bool = True) -> dict[str, Any]:
    """``archived_here``: ``repo`` is where the source archives its WAL (the local repository), so the
    segment it archived last must be there; a copy fetched from a remote repository holds what was
    pushed, which may lag (the push lag shows in the RPO)."""
    from opsctl.backup.restore import ScratchServer, build_data_dir, load_logical, resolve_chain
    from opsctl.backup.service import record_verified
    from opsctl.backup.target import archive_end
    from opsctl.backup.verify import segment_size, verify_backup

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
    record_verified(repo, chain, results, now())
    bad = [r for r in results if not r.ok]
    if bad:
        figure = f"backup {bad[0].backup_id}: {len(bad[0].problems)} problem(s)"
        return _fail_report(backup, [Check("backup_verify", False, figure, "; ".join(bad[0].problems[:5]))],
                            started, policy, target_time, f"backup {bad[0].backup_id} {bad[0].summary()}")
    checks = [Check("backup_verify", True, f"{sum(r.files for r in results)} files, "
                    f"{megabytes(sum(r.bytes for r in results))} match their manifests")]
    step("verify")
    end: ArchiveEnd | None = None
    if physical and target_time is None:
        progress("finding the last archived commit", 0.1)
        end = archive_end(repo, source, backup, segment_size(repo), archived_here=archived_here)
        step("find_target")
    # the RPO's reference, taken now, before anything is restored (with --target-time: the data at the target)
    newest_source = end.source_newest if end else None if physical else _one(source, NEWEST_COMMIT_SQL)

    scratch = Path(tempfile.mkdtemp(prefix="opsctl-drill-", dir=_scratch_parent(policy)))
    server: Any = ScratchServer(scratch / "data", scratch / "run") if physical else LogicalScratch(scratch, backup)
    wanted = set(policy.drill.checks) - (set() if physical else {"point_in_time"})
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread() else None
    try:
        if physical:
            progress("pg_combinebackup", 0.15)
            build_data_dir(repo, chain, server.data_dir, target_time, scratch=True,
                           immediate=end is not None and end.commit is None,
                           target_xid=end.commit.xid if end and end.commit else None)
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
        found = _check(settings, policy, source, server.url(backup.database), backup, end, target_time, wanted,
                       physical, newest_source)
        checks += found.checks
        step("checks")
        rto = time.monotonic() - started
        if "page_checksums" in wanted:
            progress("pg_checksums --check", 0.85)
            server.stop("fast")
            checks.append(_page_checksums(server.data_dir))
            step("page_checksums")
    finally:
        progress("cleaning up the scratch server", 0.95)
        cleanup(server, scratch)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    checks.append(Check("rto_target", rto <= policy.targets.rto_seconds,
                        f"{rto:.1f} s (target {policy.targets.rto_seconds:.0f} s)"))
    checks.append(_rpo_check(found.rpo, policy))
    return {"backup": backup.id, "chain": [b.id for b in chain],
            "target_time": target_time.isoformat() if target_time else None,
            "recovery_target": end.describe() if end else (target_time.isoformat() if target_time
                                                           else "the end of the dump"),
            "recovered_point": found.point.isoformat() if found.point else None,
            "last_replayed_commit": found.replayed.isoformat() if found.replayed else None,
            "passed": all(c.passed for c in checks), "checks": [asdict(c) for c in checks],
            "rto_seconds": round(rto, 3), "rto_target_seconds": policy.targets.rto_seconds,
            "rpo_seconds": None if found.rpo is None else round(found.rpo, 3),
            "rpo_target_seconds": policy.targets.rpo_seconds, "steps": steps}


NEWEST_COMMIT_SQL = "SELECT (pg_last_committed_xact()).timestamp"


def _rpo_check(rpo: float | None, policy: BackupPolicy) -> Check:
    target = policy.targets.rpo_seconds
    if rpo is None:  # no commit time anywhere on the source (track_commit_timestamp off): nothing to measure
        return Check("rpo_target", True, f"not measured: the source records no commit times (target {target:.0f} s)")
    return Check("rpo_target", rpo <= target, f"{rpo:.1f} s (target {target:.0f} s)")


def _page_checksums(data_dir: Path) -> Check:
    from opsctl.backup.tools import run_pg

    try:
        out = run_pg("pg_checksums", "--check", "-D", str(data_dir), timeout=None)
    except OperationFailed as exc:
        return Check("page_checksums", False, "bad checksums", exc.message)
    blocks = next((ln.split(":")[1].strip() for ln in out.splitlines() if "Blocks scanned" in ln), "?")
    return Check("page_checksums", True, f"{blocks} blocks, 0 bad checksums")


@dataclass
class _Found:
    checks: list[Check]
    point: datetime | None  # the recovered point's time: the target time, the last replayed commit, the dump
    replayed: datetime | None
    rpo: float | None


def _check(settings: Any, policy: BackupPolicy, source: Any, url: str, backup: BackupRecord, end: ArchiveEnd | None,
           target_time: datetime | None, wanted: set[str], physical: bool, newest_source: datetime | None) -> _Found:
    """Every check that needs the restored server running, and the RPO."""
    import psycopg
    from pgvector.psycopg import register_vector

    from opsctl.backup import checks as c
    from opsctl.backup.plan import parse_lsn
    from opsctl.backup.point import CommittedBy, stopped_after

    with psycopg.connect(url, autocommit=True) as restored:
        register_vector(restored)
        register_vector(source)
        # first, before anything could assign a transaction id on the restored server
        state = _row(restored, RESTORED_SQL) if physical else None
        next_xid, replay_end, replayed = state if state else (0, "", None)
        tables = c.leaf_tables(restored)
        keys = {t: c.primary_key(restored, t) for t in tables}
        query = next(iter(c.sample_chunks(restored, 1)), None) if "recorded_search" in wanted else None
        start = datetime.fromisoformat(backup.start_time)
        view = c.read_source(source, tables, keys, (lambda xmins: c.recovered_in(restored, xmins, int(next_xid)))
                             if physical else (lambda _: CommittedBy(start)), query)
        restored_rows = {t: c.row_versions(restored, t, keys[t]) for t in tables if keys[t]}
        found: list[Check] = []
        if "point_in_time" in wanted:
            if target_time is not None:  # PostgreSQL replays WAL in order up to the first transaction after it
                to, overshoot = target_time.isoformat(), ""
                if replayed and replayed > target_time:
                    overshoot = f"recovery replayed a transaction of {replayed.isoformat()}, after the target"
            else:
                assert end is not None  # a physical drill without a target time has found its target
                to, overshoot = end.describe(), ""
                if end.commit and not stopped_after(end.commit, parse_lsn(replay_end)):
                    overshoot = f"recovery did not stop right after it (replayed to {replay_end})"
            found.append(c.check_point_in_time(view, restored_rows, set(tables), to, overshoot))
        heap, counts = c.check_heap_and_counts(restored, tables, view)
        found += [x for x in (heap, counts) if x.name in wanted]
        if "index_vs_seq" in wanted:
            found.append(c.check_index_vs_seq(restored, tables, policy.drill.index_sample))
        if "document_checksums" in wanted:
            found.append(c.check_document_checksums(view, restored_rows))
        if "vector_indexes" in wanted:
            found.append(c.check_vector_indexes(restored, view))
        if "vector_recall" in wanted:
            found.append(c.check_vector_recall(restored, policy, settings.hnsw_ef_search))
        if "recorded_search" in wanted:
            found.append(c.check_recorded_search(restored, view, query))
        if "accepts_write" in wanted:
            found.append(c.check_accepts_write(restored))
    restored_times = [v[1] for rows in restored_rows.values() for v in rows.values() if v[1]]
    newest_restored = max([*restored_times, *([replayed] if replayed else [])], default=None) if physical else start
    if target_time is not None:  # the newest source data the target asked for
        newest_source = max((v[1] for rows in view.rows.values() for v in rows.values()
                             if v[1] and v[1] <= target_time), default=None)
    elif newest_source is None:  # no commit since the source started: its newest row is its newest data
        newest_source = max((v[1] for rows in view.rows.values() for v in rows.values() if v[1]), default=None)
    rpo = max(0.0, (newest_source - newest_restored).total_seconds()) if newest_source and newest_restored else None
    point = target_time or replayed or (None if physical else start)
    return _Found(found, point, replayed, rpo)


RESTORED_SQL = ("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, pg_last_wal_replay_lsn()::text,"
                " pg_last_xact_replay_timestamp()")


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


def _row(conn: Any, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row


def _one(conn: Any, sql: str) -> Any:
    return _row(conn, sql)[0]


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
