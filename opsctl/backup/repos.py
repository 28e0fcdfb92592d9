"""Several repositories (pgBackRest's repo1, repo2 …): the local one backups are taken into, and the
remote ones (object stores) every backup is copied to once it is complete. What the commands and
daemon jobs call for ``--repo NAME``; the remote work itself is in ``opsctl.backup.offsite``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, NotFound, OperationFailed
from opsctl.backup.catalog import BackupRecord, BrokenEntry, Repository
from opsctl.backup.tools import Progress, no_progress

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.backup.offsite import PushResult, Remote
    from opsctl.backup.plan import PrunePlan
    from opsctl.backup.policy import BackupPolicy
    from opsctl.backup.verify import VerifyResult


def remote(policy: BackupPolicy, name: str) -> Remote:
    """The remote repository ``name``, opened (its key loaded); ConfigError for an unknown name."""
    from opsctl.backup.offsite import open_remote

    try:
        config = policy.remote(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return open_remote(config)


def is_remote(policy: BackupPolicy, name: str | None) -> bool:
    if name is None or name == policy.local_name:
        return False
    remote(policy, name)  # an unknown name is a usage error, whichever command it came with
    return True


def _local(settings: Settings, policy: BackupPolicy) -> Repository:
    from opsctl.backup.service import repository

    return repository(settings, policy)


def copy_offsite(settings: Settings, policy: BackupPolicy, record: BackupRecord, progress: Progress = no_progress,
                 only: str | None = None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list[PushResult]:
    """Copy ``record`` to every remote repository (or ``only`` that one) and record each copy's state
    in the local catalog: ``verified`` once the remote check passed, else ``failed`` with the cause."""
    from opsctl.backup.offsite import push
    from opsctl.backup.service import audit, maybe_db

    repo = _local(settings, policy)
    results = []
    for config in policy.remotes:
        if only is not None and config.name != only:
            continue
        target = remote(policy, config.name)
        result = push(repo, record, target, progress)
        record.copies[config.name] = result.copy_state(target, now())
        repo.save(record)
        results.append(result)
    publish_sizes(settings, policy)
    with maybe_db(settings) as conn:
        for r in results:
            audit(conn, "backup.copy", f"{r.backup_id}@{r.repo}", "verified" if r.ok else f"failed: {r.problems[0]}",
                  {"repo": r.repo, "files": r.files, "plain_bytes": r.plain_bytes, "stored_bytes": r.stored_bytes,
                   "seconds": round(r.seconds, 3), "problems": r.problems})
    return results


def require_copied(record: BackupRecord, results: list[PushResult]) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise OperationFailed(f"backup {record.id} is in the local repository, but its copy to {bad[0].repo} "
                              f"failed: {bad[0].problems[0]}")


def push_missing(settings: Settings, policy: BackupPolicy, backup_id: str | None = None, only: str | None = None,
                 progress: Progress = no_progress) -> list[PushResult]:
    """Copy the backups that some remote repository has no verified copy of (or ``backup_id``, again)."""
    repo = _local(settings, policy)
    if only is not None:
        remote(policy, only)
    records = [repo.get(backup_id)] if backup_id else repo.list()
    results: list[PushResult] = []
    for record in records:
        wanted = [c.name for c in policy.remotes if (only is None or c.name == only)
                  and (backup_id or record.copies.get(c.name, {}).get("state") not in ("verified", "pruned"))]
        for name in wanted:
            results += copy_offsite(settings, policy, record, progress, only=name)
    return results


def list_in(settings: Settings, policy: BackupPolicy, name: str | None) -> tuple[list[BackupRecord],
                                                                                  list[BrokenEntry]]:
    """The backups of repository ``name``: the local catalog, or what the remote store holds."""
    from opsctl.backup.offsite import list_remote

    if is_remote(policy, name):
        assert name is not None
        return list_remote(remote(policy, name))
    return _local(settings, policy).scan()


def verify_in(settings: Settings, policy: BackupPolicy, name: str, backup_id: str | None = None,
              tick: Callable[[int], None] | None = None) -> list[VerifyResult]:
    """Verify the copies in remote repository ``name`` (downloaded, decrypted, decompressed, checksummed),
    one backup with its chain or all; the result goes into the local catalog's copy state."""
    from opsctl.backup.offsite import list_remote, verify_copy
    from opsctl.backup.plan import chain_of
    from opsctl.backup.service import audit, maybe_db
    from opsctl.backup.verify import VerifyResult

    target = remote(policy, name)
    records, broken = list_remote(target)
    if backup_id:
        try:
            ids = [b.id for b in chain_of(records, backup_id)]
        except NotFound as exc:
            raise NotFound(f"{exc.message} in repository {name} ({target.url})") from None
        broken = []
    else:
        ids = [b.id for b in records]
        if not ids and not broken:
            raise OperationFailed(f"no backups in repository {name} ({target.url}): nothing there proves the "
                                  "database can be restored")
    results = [verify_copy(target, i, tick) for i in ids]
    results += [VerifyResult(b.id, problems=[b.message]) for b in broken]
    repo = _local(settings, policy)
    at = datetime.now(UTC).isoformat()
    for result in results:
        try:
            local = repo.get(result.backup_id)
        except (NotFound, OperationFailed):
            continue  # a copy whose local backup is gone (pruned there, or the host is new)
        copy = local.copies.setdefault(name, {"state": "verified" if result.ok else "failed"})
        copy.update(verified_at=at, verify_result="ok" if result.ok else result.summary())
        repo.save(local)
    with maybe_db(settings) as conn:
        for result in results:
            audit(conn, "backup.verify", f"{result.backup_id}@{name}", result.summary(),
                  {"repo": name, "ok": result.ok, "problems": result.problems, "files": result.files,
                   "bytes": result.bytes})
    return results


def plan_prune_in(settings: Settings, policy: BackupPolicy, name: str, now: datetime | None = None) -> PrunePlan:
    """Remote repository ``name``'s prune plan, by its own retention (WAL there is walpush's)."""
    from opsctl.backup.offsite import list_remote
    from opsctl.backup.plan import plan_prune

    records, _ = list_remote(remote(policy, name))
    return plan_prune(records, [], policy.retention_of(name), now or datetime.now(UTC))


def apply_prune_in(settings: Settings, policy: BackupPolicy, name: str, plan: PrunePlan) -> None:
    """Remove the plan's backups from remote repository ``name``; the local catalog marks them pruned there."""
    from opsctl.backup.offsite import apply_remote_prune
    from opsctl.backup.service import audit, maybe_db

    apply_remote_prune(remote(policy, name), plan)
    repo = _local(settings, policy)
    gone = [i.name for i in plan.backups if i.action == "remove"]
    for backup_id in gone:
        try:
            local = repo.get(backup_id)
        except (NotFound, OperationFailed):
            continue
        if name in local.copies:
            local.copies[name]["state"] = "pruned"
            repo.save(local)
    publish_sizes(settings, policy)
    with maybe_db(settings) as conn:
        audit(conn, "backup.prune", name, plan.summary(), {"repo": name, "removed": gone})


def row_repos(record: BackupRecord, policy: BackupPolicy) -> dict[str, Any]:
    """The REPO column and its JSON fields: which repositories hold a verified copy, each copy's state."""
    from opsctl.backup.repoplan import holders

    held = holders(record, policy.local_name)
    pending = [f"{n}: {c.get('state')}" for n, c in sorted(record.copies.items()) if c.get("state") == "failed"]
    missing = [c.name for c in policy.remotes if c.name not in record.copies]
    shown = ",".join(held) + "".join(f" ({p})" for p in pending) + (f" (not copied: {','.join(missing)})"
                                                                    if missing else "")
    return {"repo": shown, "repos": held}


def publish_sizes(settings: Settings, policy: BackupPolicy) -> None:
    """``opsctl_backup_repository_bytes{repo}`` after anything that changed what a repository holds."""
    from opsctl.backup.metrics import publish_repository_bytes
    from opsctl.backup.repoplan import repository_bytes

    sizes = repository_bytes(_local(settings, policy).list(), policy.local_name, [r.name for r in policy.remotes])
    publish_repository_bytes(sizes, settings.data_dir)
