"""Where a drill without ``--target-time`` recovers to: the last commit archived when it starts.

Recovering "to the end of the archive" made the point wherever the scratch server ran out of
segments: a gap in the archive looked like its end, and a drill passed on a restore that had lost
everything after the gap. The drill now reads the newest archived segment holding a commit after the
backup's end (``pg_waldump``) and names that commit as the recovery target (``recovery_target_xid``):
PostgreSQL then stops right after it, or refuses to finish recovery ("recovery ended before
configured recovery target was reached"). The source is only read: no restore point, no WAL switch,
so what the drill measures is what a disaster would have found in the archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import OperationFailed
from opsctl.backup.catalog import BackupRecord, Repository
from opsctl.backup.plan import format_lsn, is_wal_file, parse_lsn, segment_name, segment_number, segments_between
from opsctl.backup.point import WalCommit, parse_commits

SOURCE_SQL = ("SELECT (pg_last_committed_xact()).timestamp, (SELECT timeline_id FROM pg_control_checkpoint()),"
              " (SELECT last_archived_wal FROM pg_stat_archiver)")


@dataclass(frozen=True)
class ArchiveEnd:
    """The recovery target of a drill, found in the archive when the drill began."""

    commit: WalCommit | None  # None: nothing committed since the backup ended; recover to its end
    segment: str | None  # the archived segment holding ``commit``
    source_newest: datetime | None  # the source's newest commit at that moment (the RPO)

    def describe(self) -> str:
        if self.commit is None:
            return "the end of the backup (nothing committed after it was archived)"
        return f"the commit of transaction {self.commit.xid} at {format_lsn(self.commit.lsn)}, the last one archived"


def _segments(repo: Repository, timeline: int, size: int) -> dict[int, tuple[int, str]]:
    """segment number → (timeline, name) of the archived segments, the newest timeline up to ``timeline``."""
    found: dict[int, tuple[int, str]] = {}
    if not repo.wal_dir.is_dir():
        return found
    per_xlogid = 0x100000000 // size
    for path in repo.wal_dir.iterdir():
        name = path.name
        if len(name) != 24 or not is_wal_file(name) or int(name[:8], 16) > timeline:
            continue
        segno = int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)
        if segno not in found or found[segno][0] < int(name[:8], 16):
            found[segno] = (int(name[:8], 16), name)
    return found


def commits_in(repo: Repository, timeline: int, segno: int, size: int) -> list[WalCommit]:
    """The commits of one archived segment. Its last record may continue in a segment not archived
    yet (``pg_waldump`` then stops there, having printed every record before); any other error is a
    segment that does not parse, which a restore would stop at: the drill fails naming it."""
    from opsctl.backup.tools import run_pg_status, tail

    name = segment_name(timeline, segno, size)
    code, out = run_pg_status("pg_waldump", "-p", str(repo.wal_dir), "-t", str(timeline), "-s",
                              format_lsn(segno * size), "-e", format_lsn((segno + 1) * size), "--rmgr=Transaction",
                              timeout=600)
    if code != 0 and "could not find file" not in out:
        raise OperationFailed(f"{repo.wal_dir / name}: archived WAL does not parse: {tail(out, 2)}")
    return parse_commits(out)


def archive_end(repo: Repository, source: Any, backup: BackupRecord, size: int,
                archived_here: bool = True) -> ArchiveEnd:
    """The last commit in the archive after ``backup`` ended (walking back from the newest segment),
    checking that every segment from the backup's end to it is archived, whole. ``archived_here``:
    ``repo`` is the one the source archives into, so the segment it archived last must be there."""
    row = source.execute(SOURCE_SQL).fetchone()
    newest, timeline, last_archived = row[0], int(row[1]), row[2]
    if archived_here and last_archived and len(last_archived) == 24 and is_wal_file(last_archived) \
            and not (repo.wal_dir / last_archived).is_file():
        raise OperationFailed(f"{repo.wal_dir / last_archived}: the server archived this WAL segment but it is not "
                              "in the repository (the archive lost it)")
    if not backup.stop_lsn:
        raise OperationFailed(f"{backup.id}: the catalog has no stop LSN for this backup")
    stop = parse_lsn(backup.stop_lsn)
    segments = _segments(repo, timeline, size)
    for segno in sorted((n for n in segments if n >= segment_number(stop, size)), reverse=True):
        seg_timeline, name = segments[segno]
        commits = [c for c in commits_in(repo, seg_timeline, segno, size) if c.lsn >= stop]
        if commits:
            _require_archived(repo, backup, seg_timeline, stop, commits[-1].end, size)
            return ArchiveEnd(commits[-1], name, newest)
    return ArchiveEnd(None, None, newest)


def _require_archived(repo: Repository, backup: BackupRecord, timeline: int, stop: int, end: int, size: int) -> None:
    if backup.timeline != timeline:
        return  # a timeline switch since the backup: recovery follows the history files and says what it lacks
    for name in segments_between(timeline, stop, end, size):
        path = repo.wal_dir / name
        if not path.is_file():
            raise OperationFailed(f"{path}: WAL segment missing from the archive (needed from the backup's end "
                                  f"{format_lsn(stop)} to the last archived commit at {format_lsn(end)})")
        if path.stat().st_size != size:
            raise OperationFailed(f"{path}: WAL segment of {path.stat().st_size} bytes, expected {size}")
