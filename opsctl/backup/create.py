"""Taking backups: physical (pg_basebackup, full or incremental, WAL from the archive) and logical
(pg_dump custom format with a SHA-256 manifest). The catalog entry is written last."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from core.clock import Clock, utcnow
from core.embedded import pg_command, prepare_for_pg_user
from core.errors import ConfigError, OperationFailed
from core.humanize import format_bytes
from opsctl.backup.catalog import BackupRecord, Repository, new_id
from opsctl.backup.policy import BackupPolicy
from opsctl.backup.tools import Progress, dir_size, no_progress, tail


def _database_facts(conn: Any) -> dict[str, Any]:
    row = conn.execute("SELECT current_database(), current_setting('server_version'),"
                       " (SELECT system_identifier::text FROM pg_control_system()),"
                       " (SELECT sum(pg_database_size(oid)) FROM pg_database),"
                       " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')").fetchone()
    return {"database": row[0], "pg_version": row[1], "system_identifier": row[2], "cluster_bytes": int(row[3]),
            "wal_segment_size": int(row[4])}


def check_archiving(conn: Any, repo: Repository) -> None:
    mode = conn.execute("SELECT current_setting('archive_mode'), current_setting('archive_command')").fetchone()
    if mode[0] == "off" or str(repo.wal_dir) not in mode[1]:
        raise ConfigError(
            f"physical backups need WAL archiving into {repo.wal_dir} (archive_mode is {mode[0]}): "
            "restart `opsctl up` with the backup policy in place, or set mode: logical in policies/backup.yaml")


def _claim(repo: Repository, started: datetime, kind: str) -> tuple[str, Path]:
    """A new backup id and its directory, created atomically (two concurrent backups never share one)."""
    prepare_for_pg_user(repo.root)
    prepare_for_pg_user(repo.backups_dir)
    while True:
        taken = {p.name for p in repo.backups_dir.iterdir()}
        backup_id = new_id(started, kind, taken)
        folder = repo.backup_dir(backup_id)
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        prepare_for_pg_user(folder)
        return backup_id, folder


def _failure(label: str, returncode: int, output: str) -> OperationFailed:
    return OperationFailed(f"{label} failed (exit {returncode}): {tail(output)}")


def _run_watched(argv: list[str], watch: Path, total: int, progress: Progress, label: str) -> None:
    """Run a long tool, reporting the size of ``watch`` against ``total`` bytes as progress."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        try:
            while proc.poll() is None:
                if watch.exists() and total:
                    progress(label, min(dir_size(watch)[0] / total, 0.99))
                time.sleep(0.5)
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise _failure(label, proc.returncode, text)
    progress(label, 1.0)


_PROGRESS_LINE = re.compile(r"(\d+)/(\d+) kB \(\d+%\), (\d+)/(\d+) tablespace")


def basebackup_progress(line: str) -> tuple[int, int, bool] | None:
    """(bytes streamed, bytes in all, finished) from a ``pg_basebackup --progress`` line, else None.

    While it streams, "in all" is the server's estimate (of the whole cluster, even for an
    incremental backup); its last line (every tablespace done, the WAL archived) has the total."""
    match = _PROGRESS_LINE.search(line)
    if not match:
        return None
    done, estimate = int(match[1]) * 1024, int(match[2]) * 1024
    finished = match[3] == match[4]
    return done, done if finished else max(estimate, done), finished


def _run_basebackup(argv: list[str], progress: Progress) -> None:
    """Run ``pg_basebackup --progress`` and report its own count of the bytes it has streamed (it
    reports once a second; its last line, 100 %, comes once the server has archived the WAL)."""
    label = "pg_basebackup"
    lines: list[str] = []
    last = -1.0
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True)  # text mode: a terminal's "\r" ends a line too
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines = [*lines[-20:], line.rstrip()]
            counted = basebackup_progress(line)
            if counted is None or not counted[1]:
                continue
            done, total, finished = counted
            # every file streamed is not the end yet: the server still waits for the WAL archive
            fraction = 1.0 if finished else min(done / total, 0.99)
            if fraction > last:
                last = fraction
                progress(f"{label} {format_bytes(done)} of {format_bytes(total)}", fraction)
        proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise _failure(label, proc.returncode, "\n".join(ln for ln in lines if basebackup_progress(ln) is None))
    if last < 1.0:
        progress(label, 1.0)




def _one_value(conn: Any, statement: str, *args: Any) -> Any:
    row = conn.execute(statement, args or None).fetchone()
    assert row is not None
    return row[0]


STANDBY_REPLAY_TIMEOUT = 600.0  # seconds for a standby to replay the primary's checkpoint


def checkpoint_replayed(primary: Any, standby_url: str, progress: Progress,
                        timeout: float = STANDBY_REPLAY_TIMEOUT) -> None:
    """A checkpoint on the primary, replayed by the standby, before an incremental backup from it.

    A standby cannot checkpoint: a backup from it starts at its last restartpoint, made at a
    checkpoint record it replayed. After little activity that is older than where the parent backup
    ended, and PostgreSQL refuses the incremental ("manifest requires WAL from final timeline …").
    A fresh checkpoint, once replayed, lets ``-c fast`` make the restartpoint the backup starts at."""
    import psycopg

    progress("a checkpoint on the primary, for the standby to start the backup at", None)
    primary.execute("CHECKPOINT")
    target = _one_value(primary, "SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby_url, autocommit=True) as standby:
        while not _one_value(standby, "SELECT coalesce(pg_last_wal_replay_lsn() >= %s, false)", target):
            if time.monotonic() > deadline:
                raise OperationFailed(f"the standby did not replay the primary's checkpoint (at {target}) within "
                                      f"{timeout:.0f} s: is its replay paused or lagging? (runbook ReplicaLagHigh)")
            time.sleep(0.05)


def create_physical(conn: Any, url: str, repo: Repository, *, incremental: bool = False, fsync: bool = True,
                    progress: Progress = no_progress, now: Clock = utcnow,
                    standby_url: str | None = None) -> BackupRecord:
    """A base backup of the cluster ``conn`` (the primary) is connected to, streamed from ``url``, or
    from the streaming standby at ``standby_url`` (docs/replicas.md): the same files, the standby's
    disk and CPU instead of the primary's. A standby does not archive WAL, so once the copy ends the
    primary closes its current segment and the backup waits until the WAL it needs is archived."""
    from opsctl.backup.archive import switch_and_wait
    from opsctl.backup.verify import archived_segments, read_manifest

    check_archiving(conn, repo)
    facts = _database_facts(conn)
    backups = repo.list()
    parent = None
    if incremental:
        same = [b for b in backups if b.physical and b.good and b.system_identifier == facts["system_identifier"]]
        parent = same[-1] if same else None
    kind = "incr" if parent is not None else "full"
    started = now()
    backup_id, folder = _claim(repo, started, kind)
    data = folder / "data"
    args = ["-d", standby_url or url, "-D", str(data), "-Fp", "-X", "none", "--manifest-checksums=SHA256", "-c", "fast",
            "--progress", "-l", f"opsctl {backup_id}", *([] if fsync else ["--no-sync"])]
    if parent is not None:
        args.append(f"--incremental={repo.backup_dir(parent.id) / 'data' / 'backup_manifest'}")
    try:
        if parent is not None and standby_url:
            checkpoint_replayed(conn, standby_url, progress)
        _run_basebackup(pg_command("pg_basebackup", *args), progress)
        manifest = read_manifest(data)
        ranges = manifest["WAL-Ranges"]
        # pg_basebackup returns once the server has archived the WAL the backup needs (no -X, no
        # --no-wait): nothing to switch or wait for, only to confirm it reached this repository
        def missing_wal() -> list[str]:
            return archived_segments(repo, int(ranges[-1]["Timeline"]), ranges[0]["Start-LSN"],
                                     ranges[-1]["End-LSN"], facts["wal_segment_size"])[1]

        missing = missing_wal()
        if missing and standby_url:  # the primary still writes the segment where the standby's copy ended
            progress("archiving the WAL the backup needs (on the primary)", None)
            switch_and_wait(conn, repo.wal_dir)
            missing = missing_wal()
        if missing:
            raise OperationFailed(f"the server archived WAL segment(s) {', '.join(missing)} but they are not in "
                                  f"{repo.wal_dir}: check archive_command")
        size, files = dir_size(folder)
        record = BackupRecord(
            id=backup_id, type=kind, parent=parent.id if parent else None, start_time=started.isoformat(),
            stop_time=now().isoformat(), database=facts["database"], start_lsn=ranges[0]["Start-LSN"],
            stop_lsn=ranges[-1]["End-LSN"], timeline=int(ranges[-1]["Timeline"]), size_bytes=size, files=files,
            system_identifier=facts["system_identifier"], pg_version=facts["pg_version"],
            manifest="data/backup_manifest",
        )
        repo.save(record)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return record


def create_logical(conn: Any, url: str, repo: Repository, policy: BackupPolicy, *, progress: Progress = no_progress,
                   now: Clock = utcnow) -> BackupRecord:
    from opsctl.files import sha256_file

    facts = _database_facts(conn)
    started = now()
    backup_id, folder = _claim(repo, started, "logical")
    dump = folder / "dump.pgdump"
    compress = "none" if policy.compression == "none" else f"gzip:{policy.compression_level}"
    db_bytes = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    try:
        sync = [] if policy.fsync else ["--no-sync"]
        _run_watched(pg_command("pg_dump", "-Fc", f"--compress={compress}", *sync, "-f", str(dump), "-d", url), dump,
                     db_bytes // 3, progress, "pg_dump")
        manifest = {"format": "opsctl-logical-1", "files": [
            {"path": dump.name, "size": dump.stat().st_size, "sha256": sha256_file(dump)}]}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        size, files = dir_size(folder)
        record = BackupRecord(
            id=backup_id, type="logical", parent=None, start_time=started.isoformat(), stop_time=now().isoformat(),
            database=facts["database"], size_bytes=size, files=files, system_identifier=facts["system_identifier"],
            pg_version=facts["pg_version"], manifest="manifest.json",
        )
        repo.save(record)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return record
