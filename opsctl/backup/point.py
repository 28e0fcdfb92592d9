"""What a restored database must hold: the point a drill recovers to, and which of the source's
transactions that point includes. Pure: inputs are ``pg_waldump`` text, transaction ids and times.

A drill used to decide "committed at or before the point" by commit timestamps. They are taken just
before a commit's WAL record is inserted, so WAL order and timestamp order differ (a busy or loaded
server, a logical-replication subscriber stamping the publisher's time): a row stamped before the
point but written to WAL after it counted as missing from a good backup. What a physical restore
holds is decided by WAL order alone, and the restored server's own commit log records it: a source
transaction is at the point exactly when the restored server knows it as committed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

XID_SPAN = 1 << 32
FIRST_NORMAL_XID = 3  # 0 invalid, 1 bootstrap, 2 frozen
MAXALIGN = 8
PAGE_HEADER, LONG_PAGE_HEADER, WAL_PAGE = 24, 40, 8192


@dataclass(frozen=True)
class WalCommit:
    """A commit record found in the archive: its transaction, where it starts and its length."""

    xid: int
    lsn: int
    length: int

    @property
    def end(self) -> int:
        """Where the next record may start when this one crosses no page boundary."""
        return self.lsn + -(-self.length // MAXALIGN) * MAXALIGN


_COMMIT = re.compile(r"^rmgr: Transaction\s+len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), "
                     r"lsn: ([0-9A-F]+)/([0-9A-F]+), .*desc: COMMIT ")


def parse_commits(waldump: str) -> list[WalCommit]:
    """The plain COMMIT records of ``pg_waldump --rmgr=Transaction`` output, in WAL order (prepared
    transactions' COMMIT PREPARED records are left out: a recovery target names a plain commit)."""
    found = []
    for line in waldump.splitlines():
        match = _COMMIT.match(line)
        if match and int(match[2]):
            found.append(WalCommit(int(match[2]), (int(match[3], 16) << 32) | int(match[4], 16), int(match[1])))
    return found


def stopped_after(commit: WalCommit, replay_end: int) -> bool:
    """Recovery stopped right after ``commit``: the restored server's last replayed position is the
    record's end, plus at most the page headers a record of that length can cross."""
    headers = LONG_PAGE_HEADER + PAGE_HEADER * (commit.length // (WAL_PAGE - PAGE_HEADER) + 1)
    return commit.end <= replay_end <= commit.end + headers


def widen_xid(xid: int, next_full: int) -> int:
    """The 64-bit id of the 32-bit ``xid`` as seen by a server whose next id is ``next_full``: the
    nearest one below it, or at or past it when ``xid`` is less than 2^31 ahead (a transaction the
    server has never seen). A result below 3 means older than any id in use: a frozen row."""
    ahead = (xid - next_full) % XID_SPAN
    return next_full + ahead if ahead < XID_SPAN // 2 else next_full - (XID_SPAN - ahead)


@dataclass(frozen=True)
class XidQuestions:
    """Which of the source's 32-bit transaction ids to ask the restored server about (by 64-bit id),
    and the answers known without asking."""

    ask: dict[int, int]  # 64-bit id → 32-bit id
    unseen: frozenset[int]  # at or past the restored server's next id: after the point
    ancient: frozenset[int]  # older than any id in use (frozen rows): before the point


def xid_questions(xids: Iterable[int], next_full: int) -> XidQuestions:
    ask: dict[int, int] = {}
    unseen, ancient = set(), set()
    for xid in set(xids):
        full = widen_xid(xid, next_full)
        if xid < FIRST_NORMAL_XID or full < FIRST_NORMAL_XID:
            ancient.add(xid)
        elif full >= next_full:
            unseen.add(xid)
        else:
            ask[full] = xid
    return XidQuestions(ask, frozenset(unseen), frozenset(ancient))


class AtPoint(Protocol):
    """Whether a row version the source holds was committed by the recovered point."""

    def includes(self, xid: int, committed_at: datetime | None) -> bool: ...


@dataclass(frozen=True)
class Recovered:
    """A physical restore: the source transactions the restored server's commit log has as committed
    (``pg_xact_status``). WAL order decides, never a timestamp."""

    committed: frozenset[int]

    def includes(self, xid: int, committed_at: datetime | None) -> bool:
        return xid in self.committed


def recovered(questions: XidQuestions, status: Mapping[int, str | None]) -> Recovered:
    """From the restored server's ``pg_xact_status`` of each asked 64-bit id ('committed',
    'aborted', 'in progress', or None: older than its commit log keeps, so frozen and committed).
    An id assigned before the point but committed after it reads 'aborted' there."""
    committed = {xid for full, xid in questions.ask.items() if status[full] in ("committed", None)}
    return Recovered(frozenset(committed | questions.ancient))


@dataclass(frozen=True)
class CommittedBy:
    """A logical restore shares no transaction ids with the source: commit times decide (a row
    without one, from before ``track_commit_timestamp`` was on, is older than any point)."""

    point: datetime

    def includes(self, xid: int, committed_at: datetime | None) -> bool:
        return committed_at is None or committed_at <= self.point


def listed(items: list[str], limit: int = 3) -> str:
    """``a, b, c and 4 more``: a few names for a one-line reason, never a Python list."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
