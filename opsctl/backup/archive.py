"""Continuous WAL archiving into the repository: the server settings ``opsctl up`` applies.

The ``archive_command`` runs as the server's system user. It copies to a temporary name, syncs
and renames, so a reader never sees half a segment; a segment already archived with the same
content is success (PostgreSQL retries after crashes), with different content a failure.

It writes only to a local directory (``cmp``, ``cp``, ``sync``, ``mv``: no network, so a slow or
unreachable object store never holds the database's archiving up): the local repository's WAL
dir, which doubles as the spool that ``opsctl wal push`` empties towards the remote
repositories (the local prune holds what they do not hold verified yet).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.embedded import prepare_for_pg_user
from core.errors import OperationFailed

if TYPE_CHECKING:
    from opsctl.backup.policy import BackupPolicy


def _conf_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def archive_command(wal_dir: Path) -> str:
    d = str(wal_dir).replace('"', '\\"')
    return (f'f="{d}/%f"; if [ -f "$f" ]; then cmp -s "%p" "$f"; '
            f'else cp "%p" "$f.tmp" && sync "$f.tmp" && mv "$f.tmp" "$f"; fi')


def restore_command(wal_dir: Path) -> str:
    return f'cp "{wal_dir}/%f" "%p"'


def server_conf(policy: BackupPolicy, data_dir: Path) -> tuple[str, ...]:
    """postgresql.conf lines for the embedded server (physical mode: archive into the repository).

    ``track_commit_timestamp`` lets a restore drill prove its point in time from the data itself.
    """
    lines = ["summarize_wal = on", "track_commit_timestamp = on"]
    if policy.mode != "physical":
        return tuple(lines)
    wal_dir = policy.wal_dir(data_dir).resolve()
    prepare_for_pg_user(wal_dir.parent)
    prepare_for_pg_user(wal_dir)
    lines += ["archive_mode = on", f"archive_command = {_conf_quote(archive_command(wal_dir))}",
              f"archive_timeout = {policy.archive_timeout_seconds}"]
    return tuple(lines)


def embedded_conf(data_dir: Path) -> tuple[str, ...]:
    """The settings from the policy in the policy dir (defaults when there is none)."""
    from opsctl.backup.policy import load_policy

    return server_conf(load_policy(), data_dir)


def switch_and_wait(conn: Any, wal_dir: Path, timeout: float = 60) -> str:
    """Close the current WAL segment and wait until it is in the archive ``wal_dir``; returns its name.

    The archive itself is the proof: ``pg_stat_archiver.last_archived_wal`` names the newest file
    archived, which can be a ``.backup`` history file named after an older segment."""
    # With no WAL written since the last switch the position stays just past the next segment's
    # header (or on its boundary): stepping back over a long page header names the closed segment.
    row = conn.execute("SELECT pg_walfile_name(pg_switch_wal() - 41)").fetchone()
    name = str(row[0])
    deadline = time.monotonic() + timeout
    while not (wal_dir / name).is_file():
        if time.monotonic() > deadline:
            row = conn.execute("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").fetchone()
            raise OperationFailed(f"WAL segment {name} did not reach {wal_dir} within {timeout:.0f} s "
                                  f"(last archived {row[0]}, last failed {row[1]}): check archive_command")
        time.sleep(0.05)
    return name
