"""Pure decisions about several repositories: which repositories hold a backup, and which local
backups prune must keep because no remote repository has verified a copy of them yet.

A copy's state is written by ``opsctl.backup.offsite``: ``verified`` (uploaded, manifest last, every
object's size checked remotely), ``failed`` (the upload or its check failed: the message says why),
``pruned`` (the remote repository's retention removed it after it had been verified there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsctl.backup.catalog import BackupRecord

HELD = ("verified", "pruned")  # a copy that was verified there (and maybe later retired by that repo's retention)


def holders(record: BackupRecord, local: str) -> list[str]:
    """The repositories holding a verified copy of ``record``: the local one first."""
    return [local, *sorted(name for name, copy in record.copies.items() if copy.get("state") == "verified")]


def offsite_pins(backups: list[BackupRecord], remotes: list[str]) -> dict[str, str]:
    """Local backups prune must keep: every good one that some remote repository has not verified a
    copy of (nothing local is deleted before its remote copy is verified). A backup that failed
    verification is not pinned: there is nothing worth copying."""
    pins: dict[str, str] = {}
    for b in backups:
        if not b.good:
            continue
        missing = [r for r in remotes if b.copies.get(r, {}).get("state") not in HELD]
        if missing:
            pins[b.id] = f"no verified copy on {', '.join(missing)} yet (offsite_before_prune)"
    return pins


def repository_bytes(backups: list[BackupRecord], local: str, remotes: list[str]) -> dict[str, int]:
    """Bytes each repository holds, from the local catalog: the local backups' sizes, and per remote
    repository the stored (encoded) bytes of its verified copies (0 for a repository holding none)."""
    sizes = {local: sum(b.size_bytes for b in backups), **dict.fromkeys(remotes, 0)}
    for b in backups:
        for name, copy in b.copies.items():
            if name in sizes and name != local and copy.get("state") == "verified":
                sizes[name] += int(copy.get("stored_bytes") or 0)
    return sizes
