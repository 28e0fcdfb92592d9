"""What the commands and daemon jobs call: open the repository and the database, act, audit."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, OperationFailed, ServiceUnavailable
from opsctl.backup.catalog import BackupRecord, BrokenEntry, Repository
from opsctl.backup.policy import BackupPolicy, load_policy
from opsctl.backup.tools import Progress, no_progress

if TYPE_CHECKING:
    from collections.abc import Iterator

    from core.config import Settings
    from opsctl.backup.plan import PrunePlan
    from opsctl.backup.verify import VerifyResult


def repository(settings: Settings, policy: BackupPolicy) -> Repository:
    return Repository(policy.repository_path(settings.data_dir.resolve()))


def policy_for(policy_path: Path | None = None, policy_dir: Path | None = None) -> BackupPolicy:
    return load_policy(policy_path, policy_dir)


@contextmanager
def maybe_db(settings: Settings) -> Iterator[Any]:
    """A connection to the database when it is reachable, else None (the catalog needs no database)."""
    if not settings.direct_url:
        yield None
        return
    from core.db import connect

    try:
        conn = connect(settings.direct_url, autocommit=True)
    except ServiceUnavailable:
        yield None
        return
    with conn:
        yield conn


def audit(conn: Any, action: str, target: str, reason: str, details: dict[str, Any]) -> None:
    if conn is None:
        return
    from opsctl.audit import record

    record(conn, action, target=target, reason=reason, details=details)


def create_backup(settings: Settings, policy: BackupPolicy, *, incremental: bool = False, logical: bool | None = None,
                  from_standby: bool | None = None, progress: Progress = no_progress) -> BackupRecord:
    """A backup into the repository; ``from_standby`` (default: the policy's ``from_standby``): a
    physical one streamed from the first replica of ``database_replica_urls``."""
    from opsctl.backup.create import create_logical, create_physical
    from opsctl.context import connect_db, database_url

    repo = repository(settings, policy)
    if policy.remotes:  # a remote repository's configuration (its key) fails now, not after the backup
        from opsctl.backup.repos import remote

        for config in policy.remotes:
            remote(policy, config.name)
    url = database_url(settings)
    use_logical = policy.mode == "logical" if logical is None else logical
    standby_url = None
    if (policy.from_standby if from_standby is None else from_standby) and not use_logical:
        if not settings.database_replica_urls:
            raise ConfigError("a backup from a standby needs a replica: start `opsctl up --replicas 1`, or set "
                              "OPSCTL_DATABASE_REPLICA_URLS")
        standby_url = settings.database_replica_urls[0]
    with connect_db(settings) as conn:
        if use_logical:
            record = create_logical(conn, url, repo, policy, progress=progress)
        else:
            record = create_physical(conn, url, repo, incremental=incremental, fsync=policy.fsync, progress=progress,
                                     standby_url=standby_url)
        audit(conn, "backup.create", record.id, f"{record.type} backup{' from a standby' if standby_url else ''}",
              {**record.to_json(), "repo": policy.local_name, "from_standby": standby_url is not None})
    if policy.remotes:  # off the host: a copy in every remote repository, verified there
        from opsctl.backup.repos import copy_offsite, require_copied

        require_copied(record, copy_offsite(settings, policy, record, progress))
    else:
        from opsctl.backup.repos import publish_sizes

        publish_sizes(settings, policy)
    return record


def list_backups(settings: Settings, policy: BackupPolicy) -> tuple[list[BackupRecord], list[BrokenEntry]]:
    """The readable backups, oldest first, and the entries whose backup.json is unreadable."""
    return repository(settings, policy).scan()


def verify_backups(settings: Settings, policy: BackupPolicy, backup_id: str | None = None,
                   tick: Callable[[int], None] | None = None) -> list[VerifyResult]:
    """Verify one backup and the chain it needs (or every backup); record the result in the catalog."""
    from opsctl.backup.verify import VerifyResult, verify_backup

    repo = repository(settings, policy)
    broken: list[BrokenEntry] = []
    if backup_id:
        records = repo.chain(repo.get(backup_id))
    else:
        records, broken = repo.scan()
        if not records and not broken:
            raise OperationFailed(f"no backups in {repo.root}: nothing proves the database can be restored; "
                                  "take one with `opsctl backup create`")
    results = [verify_backup(repo, record, tick) for record in records]
    record_verified(repo, records, results, datetime.now(UTC))
    results += [VerifyResult(b.id, problems=[b.message]) for b in broken]
    with maybe_db(settings) as conn:
        for result in results:
            audit(conn, "backup.verify", result.backup_id, result.summary(),
                  {"ok": result.ok, "problems": result.problems, "files": result.files, "bytes": result.bytes,
                   "wal_segments": result.wal_segments})
    return results


def record_verified(repo: Repository, records: list[BackupRecord], results: list[VerifyResult],
                    at: datetime) -> None:
    """Write each backup's verification (when, ok or the problem) into its catalog entry, which
    ``backup list`` shows: ``backup verify`` and every drill verify the same way."""
    for record, result in zip(records, results, strict=True):
        record.verified_at = at.isoformat()
        record.verify_result = "ok" if result.ok else result.summary()
        repo.save(record)


def plan_prune(settings: Settings, policy: BackupPolicy, now: datetime | None = None) -> PrunePlan:
    from opsctl.backup.plan import plan_prune as plan
    from opsctl.backup.repoplan import offsite_pins
    from opsctl.backup.verify import segment_size
    from opsctl.backup.walplan import hold_unpushed
    from opsctl.backup.walpush import verified

    repo = repository(settings, policy)
    wal = sorted(p.name for p in repo.wal_dir.iterdir()) if repo.wal_dir.is_dir() else []
    records = repo.list()
    # nothing local is deleted before a remote copy of it is verified
    pins = offsite_pins(records, [r.name for r in policy.remotes]) if policy.offsite_before_prune else {}
    planned = plan(records, wal, policy.retention, now or datetime.now(UTC), segment_size(repo), pinned=pins)
    # the local WAL dir is the remote repositories' spool: nothing leaves it before they hold it verified
    return hold_unpushed(planned, verified(settings.data_dir.resolve(), policy))


def apply_prune(settings: Settings, policy: BackupPolicy, plan: PrunePlan) -> None:
    repo = repository(settings, policy)
    for item in plan.backups:
        if item.action == "remove":
            path = repo.backup_dir(item.name)
            (path / "backup.json").unlink(missing_ok=True)  # uncatalogue first: a half-removed backup is no backup
            shutil.rmtree(path)
    for item in plan.wal:
        if item.action == "remove":
            (repo.wal_dir / item.name).unlink(missing_ok=True)
    from opsctl.backup.repos import publish_sizes

    publish_sizes(settings, policy)
    with maybe_db(settings) as conn:
        audit(conn, "backup.prune", str(repo.root), plan.summary(),
              {"removed": [i.name for i in plan.backups if i.action == "remove"],
               "wal_removed": len([i for i in plan.wal if i.action == "remove"]), "wal_cutoff": plan.wal_cutoff})


def require_ok(results: list[VerifyResult]) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise OperationFailed(f"backup {bad[0].backup_id} {bad[0].summary()}")
