"""The WAL pusher's pure decisions, by tables: what to push next, what may leave the spool, the lag."""

from __future__ import annotations

import pytest

from opsctl.backup.plan import Item, PrunePlan
from opsctl.backup.walplan import SpoolFile, archivable, hold_unpushed, plan_push, retry_after

NOW = 10_000.0
S1, S2, S3 = "000000010000000000000001", "000000010000000000000002", "000000010000000000000003"
BK = "000000010000000000000002.00000028.backup"
H2 = "00000002.history"
T2 = "000000020000000000000003"


def spool(*entries: tuple[str, float]) -> list[SpoolFile]:
    return [SpoolFile(name, 16 << 20, mtime) for name, mtime in entries]


SPOOL = spool((S1, 9_000), (S2, 9_400), (BK, 9_401), (S3, 9_800))


@pytest.mark.parametrize(("name", "ok"), [
    (S1, True), (BK, True), (H2, True), (S1 + ".partial", True),
    (S1 + ".tmp", False),  # archive_command's half-written copy
    ("archive_status", False), ("00000001000000000000000", False), ("0000000100000000000000G1", False),
    ("000000010000000000000001.backup", False), ("README", False),
])
def test_only_files_postgresql_archives_are_pushed(name: str, ok: bool) -> None:
    assert archivable(name) is ok


@pytest.mark.parametrize(("files", "verified", "batch", "push", "waiting", "lag", "oldest"), [
    # nothing pushed yet: oldest first, the .backup label in its place; lag from the oldest mtime
    (SPOOL, set(), 16, (S1, S2, BK, S3), 4, 1_000.0, S1),
    # bounded: at most `batch` per cycle, still oldest first
    (SPOOL, set(), 2, (S1, S2), 4, 1_000.0, S1),
    # the oldest are verified: the lag is the age of the oldest one still waiting
    (SPOOL, {S1, S2}, 16, (BK, S3), 2, 599.0, BK),
    # a hole (S2 failed, later ones went): S2 is pushed first and the lag is S2's age
    (SPOOL, {S1, BK, S3}, 16, (S2,), 1, 600.0, S2),
    # everything verified: nothing to push, lag 0
    (SPOOL, {S1, S2, BK, S3}, 16, (), 0, 0.0, None),
    # half-written and foreign files are neither pushed nor counted
    (spool((S1, 9_000), (S2 + ".tmp", 9_500), ("notes.txt", 1)), set(), 16, (S1,), 1, 1_000.0, S1),
    # a timeline switch: the history file (archived first) goes before the new timeline's segments
    (spool((S2, 9_000), (H2, 9_500), (T2, 9_500)), {S2}, 16, (H2, T2), 2, 500.0, H2),
    # ties on mtime are broken by name; an mtime in the future is no negative lag
    (spool((S2, 10_500), (S1, 10_500)), set(), 16, (S1, S2), 2, 0.0, S1),
    # an empty spool: nothing waits
    ([], set(), 16, (), 0, 0.0, None),
])
def test_what_to_push_and_the_lag(files: list[SpoolFile], verified: set[str], batch: int, push: tuple[str, ...],
                                  waiting: int, lag: float, oldest: str | None) -> None:
    plan = plan_push(files, {"offsite": verified}, NOW, batch=batch)
    (repo,) = plan.repos
    got = (repo.repo, repo.push, repo.waiting, repo.lag_seconds, repo.oldest)
    assert got == ("offsite", push, waiting, lag, oldest)


def test_each_repository_has_its_own_queue_and_lag() -> None:
    plan = plan_push(SPOOL, {"gcs": {S1, S2, BK, S3}, "s3": {S1}}, NOW)
    assert [(r.repo, r.push, r.lag_seconds) for r in plan.repos] == [("gcs", (), 0.0), ("s3", (S2, BK, S3), 600.0)]
    assert [(r.waiting, r.oldest) for r in plan.repos] == [(0, None), (3, S2)]


def test_the_local_prune_keeps_what_is_not_yet_verified_remotely() -> None:
    prune = PrunePlan(wal=[Item(S1, "wal", "remove", "before F2"), Item(S2, "wal", "remove", "before F2"),
                           Item(S3, "wal", "keep", "needed by F2 or later")], wal_cutoff=S3)
    held = hold_unpushed(prune, {"a": {S1, S2}, "b": {S1}})
    assert [(i.name, i.action, i.reason) for i in held.wal] == [
        (S1, "remove", "before F2"), (S2, "keep", "not yet pushed to b"), (S3, "keep", "needed by F2 or later")]
    assert prune.wal[1].action == "remove"  # the plan given is not changed
    assert hold_unpushed(prune, {}).wal == prune.wal  # no remote repository: the retention alone decides


@pytest.mark.parametrize(("failures", "delay"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0),
                                                 (1000, 60.0)])
def test_a_failing_repository_is_retried_later_and_later_up_to_a_minute(failures: int, delay: float) -> None:
    assert retry_after(failures) == delay


def test_wal_order_puts_history_first_then_segments_by_position_across_timelines() -> None:
    from opsctl.backup.walplan import wal_order

    names = [T2, S3, H2, BK, S1, S2 + ".partial", S2]
    assert sorted(names, key=wal_order) == [H2, S1, S2, BK, S2 + ".partial", S3, T2]
