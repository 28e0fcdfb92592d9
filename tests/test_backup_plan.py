"""Pure backup decisions, by tables: the prune plan and the backup chosen for a point in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import NotFound
from opsctl.backup.catalog import BackupRecord, new_id
from opsctl.backup.plan import (
    choose_backup,
    format_lsn,
    parse_lsn,
    plan_prune,
    segment_name,
    segments_between,
)
from opsctl.backup.policy import Retention
from opsctl.policy import parse_duration

NOW = datetime(2026, 3, 1, tzinfo=UTC)
MB16 = 16 * 1024 * 1024


def rec(id_: str, kind: str, day: int, lsn_seg: int, parent: str | None = None, bad: bool = False) -> BackupRecord:
    at = (NOW - timedelta(days=30 - day)).isoformat()
    return BackupRecord(id=id_, type=kind, parent=parent, start_time=at, stop_time=at, database="opsctl",
                        start_lsn=format_lsn(lsn_seg * MB16 + 0x28), stop_lsn=format_lsn(lsn_seg * MB16 + 0x120),
                        timeline=1 if kind != "logical" else None,
                        verify_result="failed: x" if bad else "ok")


def wal(*segs: int) -> list[str]:
    return [segment_name(1, s, MB16) for s in segs]


F1, I1 = rec("F1", "full", 1, 2), rec("I1", "incr", 2, 4, "F1")
F2, I2 = rec("F2", "full", 8, 6), rec("I2", "incr", 9, 8, "F2")
F3, I3 = rec("F3", "full", 15, 10), rec("I3", "incr", 16, 12, "F3")
F4_BAD = rec("F4", "full", 22, 14, bad=True)
L1, L2 = rec("L1", "logical", 3, 0), rec("L2", "logical", 20, 0)


def actions(plan: object) -> dict[str, str]:
    return {i.name: i.action for i in plan.backups}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("backups", "retention", "removed", "wal_cutoff_seg"), [
    # count 2: the oldest full and its incremental go; WAL from F2's start stays
    ([F1, I1, F2, I2, F3, I3], Retention(type="count", full=2), {"F1", "I1"}, 6),
    # count 1: only the newest chain stays
    ([F1, I1, F2, I2, F3, I3], Retention(type="count", full=1), {"F1", "I1", "F2", "I2"}, 10),
    # a newer full that failed verification does not count and is kept for inspection
    ([F2, I2, F3, I3, F4_BAD], Retention(type="count", full=1), {"F2", "I2"}, 10),
    # time 10 days (now = day 30): F3 (day 15) is older than the cutoff (day 20) but needed for day 20
    ([F1, I1, F2, I2, F3, I3], Retention(type="time", full=10), {"F1", "I1", "F2", "I2"}, 10),
    # time 30 days: everything is within the window
    ([F1, I1, F2, I2, F3, I3], Retention(type="time", full=30), set(), 2),
    # the newest good backup is never removed, even when it is the only one and old
    ([F1], Retention(type="time", full=1), set(), 2),
    # an orphan incremental (its full is gone) is removed
    ([I1, F3], Retention(type="count", full=5), {"I1"}, 10),
    # logical backups follow the same rule among themselves, and keep no WAL back
    ([L1, F3, L2], Retention(type="count", full=1), {"L1"}, 10),
])
def test_prune_plan(backups: list[BackupRecord], retention: Retention, removed: set[str], wal_cutoff_seg: int) -> None:
    files = [*wal(*range(0, 16)), "00000002.history", "000000010000000000000006.00000028.backup"]
    plan = plan_prune(backups, files, retention, NOW, MB16)
    assert {n for n, a in actions(plan).items() if a == "remove"} == removed
    gone = {i.name for i in plan.wal if i.action == "remove"}
    assert gone == set(wal(*range(0, wal_cutoff_seg))) | ({"000000010000000000000006.00000028.backup"}
                                                          if wal_cutoff_seg > 6 else set())
    assert "00000002.history" not in gone
    # whatever stays restorable: the newest good chain and every segment from its start
    newest = max((b for b in backups if b.physical and b.good and b.parent is None), key=lambda b: b.stop_time)
    assert actions(plan)[newest.id] == "keep"


def test_prune_keeps_all_wal_without_a_physical_backup() -> None:
    plan = plan_prune([L1], wal(1, 2), Retention(), NOW, MB16)
    assert all(i.action == "keep" for i in plan.wal)


@pytest.mark.parametrize(("target_day", "expected"), [
    (None, "I3"), (16, "I3"), (15.5, "F3"), (9, "I2"), (8.5, "F2"), (1, "F1"),
])
def test_choose_backup_for_target(target_day: float | None, expected: str) -> None:
    backups = [F1, I1, F2, I2, F3, I3, F4_BAD]
    target = None if target_day is None else NOW - timedelta(days=30 - target_day)
    assert choose_backup(backups, target=target).id == expected


def test_no_good_backup_names_the_newest_one_that_failed_verification() -> None:
    bad = rec("F4", "full", 20, 14, bad=True)
    with pytest.raises(NotFound, match=r"no good physical backup \(F4 failed: x\): run `opsctl backup create`"):
        choose_backup([bad])
    with pytest.raises(NotFound, match=r"^no good physical backup: run"):
        choose_backup([])


def test_choose_backup_refuses_targets_before_every_backup_and_broken_chains() -> None:
    with pytest.raises(NotFound):
        choose_backup([F2], target=NOW - timedelta(days=29))
    assert choose_backup([I1, F2], target=None).id == "F2"  # I1's full is missing
    with pytest.raises(NotFound):
        choose_backup([F2], backup_id="F9")


@pytest.mark.parametrize(("start", "stop", "names"), [
    ("0/2000028", "0/2000120", ["000000010000000000000002"]),
    ("0/2000028", "0/4000000", ["000000010000000000000002", "000000010000000000000003"]),
    ("0/FF000028", "1/00000100", ["0000000100000000000000FF", "000000010000000100000000"]),
])
def test_segments_between(start: str, stop: str, names: list[str]) -> None:
    assert segments_between(1, parse_lsn(start), parse_lsn(stop), MB16) == names


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), (5, 5)])
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_ids_are_unique_within_a_second() -> None:
    first = new_id(NOW, "full", set())
    assert first == "20260301-000000F"
    assert new_id(NOW, "full", {first}) == "20260301-000000-2F"


@pytest.mark.parametrize(("exact", "approx", "hits"), [
    ([("a", 0.1), ("b", 0.2)], [("a", 0.1), ("b", 0.2)], 2),
    ([("a", 0.1), ("b", 0.2)], [("a", 0.1), ("c", 0.2)], 2),  # a tie at the k-th distance is a true neighbour
    ([("a", 0.1), ("b", 0.2)], [("a", 0.1), ("c", 0.3)], 1),
    ([("a", 0.1), ("b", 0.2)], [("c", 0.05), ("d", 0.1), ("e", 0.15)], 2),  # never more than k
    ([], [("a", 0.1)], 0),
])
def test_recall_hits_count_ties_at_the_kth_distance(exact: list[tuple[str, float]], approx: list[tuple[str, float]],
                                                    hits: int) -> None:
    from opsctl.backup.checks import recall_hits

    assert recall_hits(exact, approx) == hits
