"""Several repositories, by tables: the policy's ``repositories:`` (validated as one), which
repositories hold a backup, and the local prune that never removes a backup whose remote copy is
not verified (pure: records in, plan out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsctl.backup.catalog import BackupRecord
from opsctl.backup.plan import plan_prune
from opsctl.backup.policy import BackupPolicy, Retention
from opsctl.backup.repoplan import holders, offsite_pins, repository_bytes
from tests.test_backup_plan import F1, F2, F3, I1, I2, I3, NOW, segment_name

S3 = {"name": "offsite", "type": "s3", "bucket": "b"}
LOCAL = {"name": "local", "type": "local"}


@pytest.mark.parametrize(("repositories", "extra", "error"), [
    ([LOCAL, S3], {}, None),
    ([{**LOCAL, "name": "disk", "path": "/srv/b"}, S3, {**S3, "name": "dr", "type": "gcs"}], {}, None),
    ([S3], {}, "exactly one local repository"),
    ([LOCAL, {**LOCAL, "name": "second"}], {}, "exactly one local repository"),
    ([LOCAL, S3, S3], {}, "used twice: offsite"),
    ([LOCAL, {"name": "offsite", "type": "s3"}], {}, "needs a bucket"),
    ([LOCAL, {**S3, "path": "/x"}], {}, "has no path"),
    ([{**LOCAL, "encryption": {"key_env": "K"}}, S3], {}, "a local repository has no encryption"),
    ([LOCAL, {**S3, "encryption": {"key_env": "K", "key_file": "/k"}}], {}, "exactly one of key_file and key_env"),
    ([LOCAL, {**S3, "encryption": {}}], {}, "exactly one of key_file and key_env"),
    ([LOCAL, {**S3, "compression": {"type": "zstd", "level": 23}}], {}, "less than or equal to 22"),
    ([LOCAL, {**S3, "name": "Off Site"}], {}, "should match pattern"),
    ([{**LOCAL, "path": "/srv/b"}, S3], {"repository": "/srv/a"}, "both say where backups go"),
    ([LOCAL, {**S3, "credentials": "x"}], {}, "Extra inputs are not permitted"),
])
def test_repositories_policy(repositories: list[dict[str, Any]], extra: dict[str, Any], error: str | None) -> None:
    data = {"repositories": repositories, **extra}
    if error is None:
        BackupPolicy.model_validate(data)
    else:
        with pytest.raises(ValidationError, match=error):
            BackupPolicy.model_validate(data)


def test_without_repositories_there_is_one_local_repository_named_local() -> None:
    policy = BackupPolicy.model_validate({"repository": "/srv/a"})
    assert policy.local_name == "local" and policy.remotes == []
    assert policy.repository_path(Path("/data")) == Path("/srv/a")
    assert BackupPolicy().repository_path(Path("/data")) == Path("/data/backups")


def test_repositories_name_their_paths_retention_and_remotes() -> None:
    policy = BackupPolicy.model_validate({
        "retention": {"type": "count", "full": 2},
        "repositories": [{"name": "disk", "type": "local", "path": "/srv/b"},
                         {**S3, "retention": {"type": "count", "full": 5}}, {**S3, "name": "dr"}]})
    assert policy.local_name == "disk" and [r.name for r in policy.remotes] == ["offsite", "dr"]
    assert policy.repository_path(Path("/data")) == Path("/srv/b")
    assert policy.retention_of("offsite").full == 5 and policy.retention_of("dr").full == 2
    assert policy.retention_of("disk").full == 2
    with pytest.raises(ValueError, match=r"no remote repository 'disk' \(the local one\).*remote: offsite, dr"):
        policy.remote("disk")


def copied(record: BackupRecord, **states: str) -> BackupRecord:
    from dataclasses import replace

    return replace(record, copies={name: {"state": s} for name, s in states.items()})


@pytest.mark.parametrize(("copies", "held"), [
    ({}, ["local"]),
    ({"offsite": "verified"}, ["local", "offsite"]),
    ({"offsite": "failed", "dr": "verified"}, ["local", "dr"]),
    ({"offsite": "pruned"}, ["local"]),
])
def test_holders(copies: dict[str, str], held: list[str]) -> None:
    assert holders(copied(F1, **copies), "local") == held


# the local repository, retention count 1 (only F3 and I3 would stay), with one remote "offsite"
@pytest.mark.parametrize(("backups", "removed", "wal_cutoff_seg"), [
    # every copy verified (or verified and since retired by the remote's own retention): retention rules
    ([copied(F1, offsite="pruned"), copied(I1, offsite="pruned"), copied(F2, offsite="verified"),
      copied(I2, offsite="verified"), copied(F3, offsite="verified"), copied(I3, offsite="verified")],
     {"F1", "I1", "F2", "I2"}, 10),
    # I2's copy failed: I2 stays, and F2 with it (its chain); WAL from F2's start
    ([copied(F1, offsite="verified"), copied(I1, offsite="verified"), copied(F2, offsite="verified"),
      copied(I2, offsite="failed"), copied(F3, offsite="verified"), copied(I3, offsite="verified")],
     {"F1", "I1"}, 6),
    # never copied (the store was unreachable since F1): nothing goes
    ([F1, I1, F2, I2, F3, I3], set(), 2),
])
def test_local_prune_keeps_what_is_not_verified_offsite(backups: list[BackupRecord], removed: set[str],
                                                         wal_cutoff_seg: int) -> None:
    pins = offsite_pins(backups, ["offsite"])
    plan = plan_prune(backups, [], Retention(type="count", full=1), NOW, pinned=pins)
    assert {i.name for i in plan.backups if i.action == "remove"} == removed
    assert plan.wal_cutoff == segment_name(1, wal_cutoff_seg, 16 * 1024 * 1024)
    reasons = {i.name: i.reason for i in plan.backups}
    for b in backups:
        if b.id in pins:
            assert "offsite" in reasons[b.id] or b.id in {"F3", "I3"}


def test_a_backup_that_failed_verification_is_not_pinned() -> None:
    bad = copied(F1, offsite="failed")
    bad.verify_result = "failed: corrupted"
    assert offsite_pins([bad, copied(F2)], ["offsite"]) == {"F2": "no verified copy on offsite yet "
                                                                  "(offsite_before_prune)"}


def test_two_remotes_each_must_hold_a_verified_copy() -> None:
    assert offsite_pins([copied(F1, offsite="verified"), copied(F2, offsite="verified", dr="verified")],
                        ["offsite", "dr"]) == {"F1": "no verified copy on dr yet (offsite_before_prune)"}


def test_repository_bytes_count_verified_copies_only() -> None:
    from dataclasses import replace

    a = replace(F1, size_bytes=100, copies={"offsite": {"state": "verified", "stored_bytes": 40},
                                            "dr": {"state": "failed", "stored_bytes": 7}})
    b = replace(F2, size_bytes=50, copies={"offsite": {"state": "pruned", "stored_bytes": 20},
                                           "gone": {"state": "verified", "stored_bytes": 5}})
    assert repository_bytes([a, b], "local", ["offsite", "dr"]) == {"local": 150, "offsite": 40, "dr": 0}
    assert repository_bytes([], "local", []) == {"local": 0}
