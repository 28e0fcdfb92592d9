"""Which source rows a restored database must hold, by tables: the target a drill reads from the
archive, 32-bit transaction ids against the restored server's commit log, and the reasons it gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsctl.backup.checks import SourceView, check_document_checksums, check_point_in_time
from opsctl.backup.point import (
    CommittedBy,
    Recovered,
    WalCommit,
    listed,
    parse_commits,
    recovered,
    stopped_after,
    widen_xid,
    xid_questions,
)

WALDUMP = """\
rmgr: Transaction len (rec/tot):     34/    34, tx:        775, lsn: 0/03000550, prev 0/030004A8, desc: COMMIT 2026-11-26 18:19:35.202062 UTC
rmgr: Transaction len (rec/tot):    530/   530, tx:        776, lsn: 0/03009460, prev 0/03009358, desc: COMMIT 2026-11-26 18:19:35.207055 UTC; inval msgs: catcache 55
rmgr: Transaction len (rec/tot):     34/    34, tx:        778, lsn: 0/03009708, prev 0/03009680, desc: ABORT 2026-11-26 18:19:35.207368 UTC
rmgr: Transaction len (rec/tot):     66/    66, tx:          0, lsn: 0/03009790, prev 0/03009708, desc: COMMIT_PREPARED 780: 2026-11-26 18:19:35.3 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        781, lsn: 1/0000A000, prev 0/03009790, desc: COMMIT 2026-11-26 18:19:36.1 UTC
pg_waldump: error: could not find file "000000010000000100000001": No such file or directory
"""  # noqa: E501


def test_parse_commits_keeps_plain_commits_in_wal_order() -> None:
    assert parse_commits(WALDUMP) == [WalCommit(775, 0x03000550, 34), WalCommit(776, 0x03009460, 530),
                                      WalCommit(781, (1 << 32) | 0xA000, 34)]
    assert parse_commits("") == []


@pytest.mark.parametrize(("commit", "replay_end", "stopped"), [
    (WalCommit(777, 0x03009708, 34), 0x03009730, True),  # measured: 34 bytes, aligned to 40
    (WalCommit(777, 0x03009708, 34), 0x0300972A, False),  # inside the record: not replayed
    (WalCommit(777, 0x03009708, 34), 0x03009708, False),  # stopped before it
    (WalCommit(777, 0x03001FF0, 34), 0x03001FF0 + 40 + 24, True),  # crossed a page: a page header more
    (WalCommit(777, 0x03009708, 34), 0x03009730 + 8192, False),  # went on past it
])
def test_stopped_after(commit: WalCommit, replay_end: int, stopped: bool) -> None:
    assert stopped_after(commit, replay_end) is stopped


EPOCH = 1 << 32


@pytest.mark.parametrize(("xid", "next_full", "full"), [
    (777, 778, 777),
    (3, 778, 3),
    (778, 778, 778),  # the next id: not assigned yet
    (900, 778, 900),  # ahead: never seen by that server
    (EPOCH - 10, EPOCH + 5, EPOCH - 10),  # before the wrap, seen after it
    (4, EPOCH + 5, EPOCH + 4),  # after the wrap
    (3_000_000_000, 778, 778 - (EPOCH - 3_000_000_000 + 778)),  # older than any id in use: below 3
])
def test_widen_xid(xid: int, next_full: int, full: int) -> None:
    assert widen_xid(xid, next_full) == full


def test_xid_questions_and_the_restored_answers() -> None:
    questions = xid_questions([775, 776, 777, 779, 900, 2, 3_000_000_000], next_full=778)
    assert questions.ask == {775: 775, 776: 776, 777: 777}
    assert questions.unseen == {779, 900}
    assert questions.ancient == {2, 3_000_000_000}
    point = recovered(questions, {775: "committed", 776: "aborted", 777: None})
    # 776 was running at the point and committed later: the restored server has it aborted
    assert point.committed == {775, 777, 2, 3_000_000_000}
    assert point.includes(775, None) and not point.includes(776, datetime(2000, 1, 1, tzinfo=UTC))
    assert not point.includes(779, None)


T = datetime(2026, 11, 26, 18, 5, 30, tzinfo=UTC)


def test_a_logical_point_is_a_commit_time() -> None:
    point = CommittedBy(T)
    assert point.includes(1, T) and point.includes(1, None) and not point.includes(1, T + timedelta(microseconds=1))


def view(rows: dict[str, dict[str, tuple[int, datetime | None, str | None]]], committed: set[int]) -> SourceView:
    tables = {t: (1, None, None) for t in rows}
    return SourceView(Recovered(frozenset(committed | {1})), tables, rows, {}, set(), [])


def test_point_in_time_compares_by_the_restored_commit_log_not_by_timestamps() -> None:
    # the newcomer's case: rows stamped before the point, committed after it (31, 32 by transaction 801)
    early = T - timedelta(seconds=1)
    source = {"ops_decisions": {"30": (800, early, None), "31": (801, early, None), "32": (801, early, None)}}
    restored = {"ops_decisions": {"30": (800, early, None)}}
    check = check_point_in_time(view(source, {800}), restored, {"ops_decisions"}, "the last archived commit", "")
    assert check.passed, check
    assert check.figure == "1/1 rows committed by the point restored; the point: the last archived commit"


def test_point_in_time_names_what_is_missing_without_python_reprs() -> None:
    source = {"companies": {str(i): (800 + i, None, None) for i in range(1, 6)}}
    restored = {"companies": {"1": (801, None, None), "2": (999, None, None)}}  # 2: an older version
    check = check_point_in_time(view(source, {801, 802, 803, 804, 805}), restored, {"companies"}, "X", "")
    assert not check.passed
    assert check.detail == "4 missing: companies 2, companies 3, companies 4 and 1 more"
    assert "[" not in check.detail and "'" not in check.detail
    # a table the point includes that is not restored at all
    gone = check_point_in_time(view({"api_keys": {}}, set()), {}, set(), "X", "")
    assert not gone.passed and gone.detail == "1 missing: table api_keys"
    overshoot = check_point_in_time(view({}, set()), {}, set(), "X", "recovery did not stop right after it")
    assert not overshoot.passed and overshoot.detail == "recovery did not stop right after it"


def test_document_checksums_name_the_companies_plainly() -> None:
    source = {"documents_default": {"7|1|t": (801, None, "a"), "9|1|t": (801, None, "b")}}
    restored = {"documents_default": {"7|1|t": (801, None, "changed"), "9|1|t": (801, None, "b")}}
    check = check_document_checksums(view(source, {801}), restored)
    assert not check.passed and check.detail == "companies differing: 7"


@pytest.mark.parametrize(("items", "text"), [
    ([], ""), (["a"], "a"), (["a", "b", "c"], "a, b, c"), (["a", "b", "c", "d", "e"], "a, b, c and 2 more"),
])
def test_listed(items: list[str], text: str) -> None:
    assert listed(items) == text
