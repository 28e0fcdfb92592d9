"""Rebuilding a data directory from a backup chain, configured to recover from the archive.

Shared by the drill (a scratch server) and ``opsctl restore`` (a directory for the on-call engineer).
The recovery settings go last into ``postgresql.auto.conf``, so they win over the backed-up
configuration: ``archive_mode = off`` means a restored server never writes into the repository.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.embedded import _running_as_root, pg_command, pg_url, prepare_for_pg_user
from core.errors import ConfigError, OperationFailed
from opsctl.backup.archive import _conf_quote, restore_command
from opsctl.backup.catalog import BackupRecord, Repository
from opsctl.backup.tools import run_pg

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.config import Settings
    from opsctl.backup.policy import BackupPolicy


def recovery_conf(repo: Repository, target_time: datetime | None, *, scratch: bool,
                  immediate: bool = False, target_xid: int | None = None) -> list[str]:
    lines = ["", "# opsctl restore: recovery from the backup repository",
             "archive_mode = off", "archive_command = ''",
             f"restore_command = {_conf_quote(restore_command(repo.wal_dir))}",
             "recovery_target_timeline = 'latest'", "recovery_target_action = 'promote'"]
    if immediate:  # stop as soon as the backup is consistent: exactly its content
        lines += ["recovery_target = 'immediate'"]
    elif target_xid is not None:  # stop right after this transaction's commit
        lines += [f"recovery_target_xid = '{int(target_xid)}'", "recovery_target_inclusive = on"]
    elif target_time is not None:
        lines += [f"recovery_target_time = '{target_time.isoformat()}'", "recovery_target_inclusive = on"]
    if scratch:  # a drill is small and short-lived; nothing but the drill assigns transaction ids on it
        lines += ["shared_buffers = 128MB", "summarize_wal = off", "listen_addresses = ''", "autovacuum = off"]
    return lines


def _write_owned(path: Path, text: str, append: bool = False) -> None:
    with path.open("a" if append else "w") as fh:
        fh.write(text)
    if _running_as_root():
        shutil.chown(path, "pgserver", "pgserver")


def build_data_dir(repo: Repository, chain: list[BackupRecord], target: Path, target_time: datetime | None, *,
                   scratch: bool, immediate: bool = False, target_xid: int | None = None) -> None:
    """pg_combinebackup the chain into ``target`` (created), then configure recovery.

    A scratch copy is not fsynced (it lives for minutes; a crash just fails the drill)."""
    prepare_for_pg_user(target.parent)
    dirs = [str(repo.backup_dir(b.id) / "data") for b in chain]
    run_pg("pg_combinebackup", *(["--no-sync"] if scratch else []), "-o", str(target), *dirs, timeout=None)
    conf = recovery_conf(repo, target_time, scratch=scratch, immediate=immediate, target_xid=target_xid)
    _write_owned(target / "postgresql.auto.conf", "\n".join(conf) + "\n", append=True)
    _write_owned(target / "recovery.signal", "")


@dataclass
class ScratchServer:
    """A PostgreSQL on a restored data dir, on a private socket dir, logging to a file."""

    data_dir: Path
    socket_dir: Path
    port: int = 5432

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def url(self, database: str) -> str:
        return pg_url(self.socket_dir, self.port, database)

    def start(self, timeout: float) -> None:
        prepare_for_pg_user(self.socket_dir)
        _write_owned(self.log_file, "", append=True)
        opts = f"-k {self.socket_dir} -p {self.port}"
        try:
            run_pg("pg_ctl", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir), "-l", str(self.log_file),
                   "-o", opts, "start", timeout=timeout + 30)
        except OperationFailed as exc:
            raise OperationFailed(f"the restored server did not start: {self.log_tail()} ({exc.message})") from exc

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        important = [t for t in text if "FATAL" in t or "PANIC" in t or "ERROR" in t] or text
        return " | ".join(important[-lines:])

    def wait_promoted(self, database: str, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    if row and not row[0]:
                        return
            except psycopg.OperationalError:
                if not self.running():
                    raise OperationFailed(f"the restored server stopped during recovery: {self.log_tail()}") from None
            if time.monotonic() > deadline:
                raise OperationFailed(f"recovery did not finish within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.2)

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        from core.embedded import pid_alive

        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            run_pg("pg_ctl", "-w", "-t", "60", "-D", str(self.data_dir), "-m", mode, "stop", timeout=90)

    def kill(self) -> None:
        """Stop now whatever happens (used on failure and Ctrl-C)."""
        import signal

        try:
            self.stop("immediate")
        except OperationFailed:
            pid = self.pid()
            if pid is None:
                return
            # SIGQUIT: the postmaster kills its children and exits; SIGKILL if it does not
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + 10
                while self.running() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not self.running():
                    return


def resolve_chain(repo: Repository, backup_id: str, target_time: datetime | None,
                  physical: bool = True) -> list[BackupRecord]:
    from opsctl.backup.plan import chain_of, choose_backup

    backups = repo.list()
    chosen = choose_backup(backups, target=target_time, physical=physical,
                           backup_id=None if backup_id == "latest" else backup_id)
    return chain_of(backups, chosen.id)


def restore_to(settings: Settings, policy: BackupPolicy, *, backup_id: str, target: Path,
               target_time: datetime | None,
               progress: Callable[[str, float | None], None] | None = None) -> dict[str, Any]:
    """Restore into ``target`` for a human to start; audited when the database is reachable."""
    from opsctl.backup.service import audit, maybe_db, repository, require_ok
    from opsctl.backup.verify import verify_backup

    repo = repository(settings, policy)
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not empty: restore into a new directory")
    if target.exists():
        target.rmdir()
    chain = resolve_chain(repo, backup_id, target_time, physical=backup_id == "latest" or
                          repo.get(backup_id).physical)
    if chain[-1].type == "logical":
        raise ConfigError(f"restore --to is for physical backups; load a logical one into an empty database with: "
                          f"pg_restore --no-owner -d <url> {repo.backup_dir(chain[-1].id) / 'dump.pgdump'}")
    if progress:
        progress("verifying the backup chain", None)
    require_ok([verify_backup(repo, b) for b in chain])
    if progress:
        progress("pg_combinebackup", None)
    build_data_dir(repo, chain, target, target_time, scratch=False)
    start = " ".join(pg_command("pg_ctl", "-D", str(target), "-l", str(target.parent / "restored.log"), "start"))
    result = {"backup": chain[-1].id, "chain": [b.id for b in chain], "data_dir": str(target),
              "target_time": target_time.isoformat() if target_time else "end of archived WAL",
              "start_command": start}
    with maybe_db(settings) as conn:
        audit(conn, "restore.restore", str(target), f"restored {chain[-1].id}", result)
    return result


def load_logical(repo: Repository, record: BackupRecord, url: str, jobs: int = 2) -> None:
    """pg_restore a logical backup into the (empty) database at ``url``."""
    if record.type != "logical":
        raise ConfigError(f"{record.id} is a {record.type} backup, not a logical one")
    run_pg("pg_restore", "--no-owner", "--exit-on-error", "-j", str(jobs), "-d", url,
           str(repo.backup_dir(record.id) / "dump.pgdump"), timeout=None)
