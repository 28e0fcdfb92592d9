"""Pure decisions about backups: the restore chain for a point in time, and the prune plan.

No I/O here: inputs are catalog records, WAL file names and the clock; the adapters act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from core.errors import NotFound
from opsctl.backup.point import listed

if TYPE_CHECKING:
    from opsctl.backup.catalog import BackupRecord
    from opsctl.backup.policy import Retention

WAL_NAME_LEN = 24


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_number(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def segment_of_name(name: str, segment_size: int) -> int:
    """The segment number of a WAL file name (``.partial``/``.backup`` suffixes allowed)."""
    per_xlogid = 0x100000000 // segment_size
    return int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)


def segments_between(timeline: int, start_lsn: int, stop_lsn: int, segment_size: int) -> list[str]:
    """Names of the WAL segments holding ``[start_lsn, stop_lsn]`` on one timeline."""
    first = segment_number(start_lsn, segment_size)
    last = segment_number(max(stop_lsn - 1, start_lsn), segment_size)
    return [segment_name(timeline, n, segment_size) for n in range(first, last + 1)]


def is_wal_file(name: str) -> bool:
    head = name[:WAL_NAME_LEN]
    return len(head) == WAL_NAME_LEN and all(c in "0123456789ABCDEF" for c in head)


def chain_of(backups: list[BackupRecord], backup_id: str) -> list[BackupRecord]:
    by_id = {b.id: b for b in backups}
    if backup_id not in by_id:
        raise NotFound(f"no backup {backup_id!r}")
    out = [by_id[backup_id]]
    while out[0].parent:
        if out[0].parent not in by_id:
            raise NotFound(f"backup {out[0].id} needs {out[0].parent}, which is missing from the repository")
        out.insert(0, by_id[out[0].parent])
    return out


def choose_backup(backups: list[BackupRecord], *, target: datetime | None = None, physical: bool = True,
                  backup_id: str | None = None) -> BackupRecord:
    """The backup a restore starts from: the one named, else the newest good one whose whole chain is
    good and which ended at or before ``target`` (a backup is only consistent from its stop point)."""
    if backup_id and backup_id != "latest":
        chosen = next((b for b in backups if b.id == backup_id), None)
        if chosen is None:
            raise NotFound(f"no backup {backup_id!r}")
        if target is not None and chosen.stopped > target:
            raise NotFound(f"backup {chosen.id} ended at {chosen.stop_time}, after the target time "
                           f"{target.isoformat()}: choose an older backup")
        return chosen
    candidates = [b for b in backups if b.physical == physical and _chain_good(backups, b)
                  and (target is None or b.stopped <= target)]
    if not candidates:
        kind = "physical" if physical else "logical"
        when = f" ending before {target.isoformat()}" if target else ""
        bad = [f"{b.id} {b.verify_result}" for b in reversed(backups) if b.physical == physical and not b.good
               and (target is None or b.stopped <= target)]
        why = f" ({listed(bad, 1)})" if bad else ""
        raise NotFound(f"no good {kind} backup{when}{why}: run `opsctl backup create`")
    return max(candidates, key=lambda b: (b.stop_time, b.id))


def _chain_good(backups: list[BackupRecord], b: BackupRecord) -> bool:
    try:
        return all(c.good for c in chain_of(backups, b.id))
    except NotFound:
        return False


@dataclass(frozen=True)
class Item:
    name: str
    kind: str  # full | incr | logical | wal
    action: str  # keep | remove
    reason: str


@dataclass
class PrunePlan:
    backups: list[Item] = field(default_factory=list)
    wal: list[Item] = field(default_factory=list)
    wal_cutoff: str | None = None  # segments before this one go

    @property
    def removals(self) -> list[Item]:
        return [i for i in [*self.backups, *self.wal] if i.action == "remove"]

    def summary(self) -> str:
        gone = [i for i in self.backups if i.action == "remove"]
        wal_gone = [i for i in self.wal if i.action == "remove"]
        kept = [i for i in self.backups if i.action == "keep"]
        return (f"prune: remove {len(gone)} backup(s) and {len(wal_gone)} WAL file(s), keep {len(kept)} backup(s)"
                + (f"; WAL kept from {self.wal_cutoff}" if self.wal_cutoff else ""))


def _kept_fulls(fulls: list[BackupRecord], retention: Retention, now: datetime) -> dict[str, str]:
    """Which full (or logical) backups stay, and why. ``fulls`` is oldest first."""
    good = [b for b in fulls if b.good]
    keep: dict[str, str] = {}
    if retention.type == "count":
        for rank, b in enumerate(reversed(good)):
            if rank < retention.full:
                keep[b.id] = f"one of the newest {retention.full} good full backups"
    else:
        cutoff = now - timedelta(days=retention.full)
        older = [b for b in good if b.stopped < cutoff]
        for b in good:
            if b.stopped >= cutoff:
                keep[b.id] = f"within the last {retention.full} days"
        if older:
            keep[older[-1].id] = f"needed to restore to {retention.full} days ago"
    if good:
        keep.setdefault(good[-1].id, "the newest good backup is never removed")
    # a backup newer than every kept one that failed verification stays for inspection
    newest_kept = max((b.stop_time for b in fulls if b.id in keep), default="")
    for b in fulls:
        if not b.good and b.stop_time > newest_kept:
            keep[b.id] = "failed verification but is newer than every good backup: kept for inspection"
    return keep


def plan_prune(backups: list[BackupRecord], wal_files: list[str], retention: Retention, now: datetime,
               segment_size: int = 16 * 1024 * 1024, pinned: dict[str, str] | None = None) -> PrunePlan:
    """What goes and what stays: fulls by the retention rule, incrementals with their chain, WAL
    from the start of the oldest kept physical backup (history files always stay). ``pinned``
    backups stay whatever the rule says (with the chain they need), for the reason given."""
    plan = PrunePlan()
    by_id = {b.id: b for b in backups}
    keep: dict[str, str] = {}
    for physical in (True, False):
        roots = [b for b in backups if b.physical == physical and b.parent is None]
        keep.update(_kept_fulls(roots, retention, now))
    for pin_id, why in (pinned or {}).items():
        node = by_id.get(pin_id)
        while node is not None:
            keep.setdefault(node.id, why if node.id == pin_id else f"{pin_id} needs it: {why}")
            node = by_id.get(node.parent) if node.parent else None
    for b in backups:  # incrementals, oldest first so parents are decided before children
        if b.parent is None:
            continue
        parent = by_id.get(b.parent)
        if parent is not None and parent.id in keep:
            keep.setdefault(b.id, f"its chain ({_root_id(by_id, b)}) is kept")
    for b in backups:
        if b.id in keep:
            plan.backups.append(Item(b.id, b.type, "keep", keep[b.id]))
        else:
            why = ("its parent is removed" if b.parent else
                   "failed verification" if not b.good else f"beyond retention ({retention.type} {retention.full})")
            plan.backups.append(Item(b.id, b.type, "remove", why))

    kept_physical = [b for b in backups if b.physical and b.id in keep and b.start_lsn and b.timeline]
    if not kept_physical:
        plan.wal = [Item(n, "wal", "keep", "no physical backup is kept: WAL is left alone") for n in sorted(wal_files)]
        return plan
    oldest = min(kept_physical, key=lambda b: parse_lsn(b.start_lsn or "0/0"))
    cutoff = segment_number(parse_lsn(oldest.start_lsn or "0/0"), segment_size)
    plan.wal_cutoff = segment_name(oldest.timeline or 1, cutoff, segment_size)
    for name in sorted(wal_files):
        if name.endswith(".history") or not is_wal_file(name):
            plan.wal.append(Item(name, "wal", "keep", "timeline history and other files are kept"))
        elif segment_of_name(name, segment_size) < cutoff:
            plan.wal.append(Item(name, "wal", "remove", f"before the start of the oldest kept backup {oldest.id}"))
        else:
            plan.wal.append(Item(name, "wal", "keep", f"needed by {oldest.id} or later"))
    return plan


def _root_id(by_id: dict[str, BackupRecord], b: BackupRecord) -> str:
    while b.parent and b.parent in by_id:
        b = by_id[b.parent]
    return b.id
