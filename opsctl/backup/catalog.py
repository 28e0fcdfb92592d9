"""The backup catalog, kept inside the repository: one ``backup.json`` per backup.

Like pgBackRest's ``backup.info`` it survives losing the database: ``opsctl backup list`` and
``opsctl restore`` read only the repository.
"""

from __future__ import annotations

import builtins
import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import NotFound, OperationFailed
from core.humanize import format_bytes

CATALOG_FILE = "backup.json"


def megabytes(n: int) -> str:
    """A size for people, as every table shows one: ``32.6 MiB`` (JSON and YAML keep the bytes)."""
    return format_bytes(n)


@dataclass
class BackupRecord:
    id: str
    type: str  # full | incr | logical
    parent: str | None
    start_time: str
    stop_time: str
    database: str
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    size_bytes: int = 0
    files: int = 0
    system_identifier: str | None = None
    pg_version: str | None = None
    manifest: str = ""  # path of the manifest, relative to the backup dir
    verified_at: str | None = None
    verify_result: str | None = None  # "ok" or "failed: <reason>"
    extra: dict[str, Any] = field(default_factory=dict)
    # remote repository name -> its copy: state (verified | failed | pruned), at, key_id, compression,
    # stored_bytes, files, error, verified_at, verify_result (opsctl.backup.offsite writes it)
    copies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def physical(self) -> bool:
        return self.type in ("full", "incr")

    @property
    def good(self) -> bool:
        """Not known to be broken (never verified counts as good until a verify says otherwise)."""
        return not (self.verify_result or "").startswith("failed")

    @property
    def stopped(self) -> datetime:
        return datetime.fromisoformat(self.stop_time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class CatalogCorrupt(OperationFailed):
    """A backup.json that cannot be read: the message names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: unreadable catalog entry ({reason})")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class BrokenEntry:
    """A backup directory whose catalog entry cannot be read (listed as broken, never restored from)."""

    id: str
    path: Path
    reason: str

    @property
    def message(self) -> str:
        return str(CatalogCorrupt(self.path, self.reason))


REQUIRED = ("id", "type", "start_time", "stop_time", "database")


def read_entry(path: Path) -> BackupRecord:
    """The record in ``path``; CatalogCorrupt naming the file and what is wrong with it."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise CatalogCorrupt(path, exc.strerror or str(exc)) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CatalogCorrupt(path, f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogCorrupt(path, f"a JSON {type(data).__name__}, not an object")
    missing = [k for k in REQUIRED if not isinstance(data.get(k), str)]
    if missing:
        raise CatalogCorrupt(path, f"no {', '.join(missing)}")
    if data["id"] != path.parent.name:
        raise CatalogCorrupt(path, f"it describes backup {data['id']!r}, not {path.parent.name!r}")
    return BackupRecord.from_json(data)


def new_id(now: datetime, kind: str, taken: set[str]) -> str:
    """pgBackRest-style ids: ``20260101-120000F`` / ``…I`` / ``…L`` (a suffix when the second is taken)."""
    base = now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    letter = {"full": "F", "incr": "I", "logical": "L"}[kind]
    candidate, n = f"{base}{letter}", 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}{letter}"
    return candidate


class Repository:
    """A backup repository directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def backups_dir(self) -> Path:
        return self.root / "backups"

    @property
    def wal_dir(self) -> Path:
        return self.root / "wal"

    def backup_dir(self, backup_id: str) -> Path:
        return self.backups_dir / backup_id

    def scan(self) -> tuple[builtins.list[BackupRecord], builtins.list[BrokenEntry]]:
        """Every catalogued backup, oldest first, and the entries whose backup.json cannot be read."""
        found, broken = [], []
        if self.backups_dir.is_dir():
            for entry in sorted(self.backups_dir.iterdir()):
                path = entry / CATALOG_FILE
                if path.is_file():
                    try:
                        found.append(read_entry(path))
                    except CatalogCorrupt as exc:
                        broken.append(BrokenEntry(entry.name, path, exc.reason))
        return sorted(found, key=lambda r: (r.stop_time, r.id)), broken

    def list(self) -> builtins.list[BackupRecord]:
        """Every readable catalogued backup, oldest first (a backup without a readable backup.json is
        not a backup: ``scan()`` names those)."""
        return self.scan()[0]

    def require(self, backup_id: str) -> Path:
        """The catalog entry of ``backup_id`` (readable or not), or NotFound naming the known ids."""
        path = self.backup_dir(backup_id) / CATALOG_FILE
        if not path.is_file():
            known = ", ".join(r.id for r in self.list()) or "none"
            raise NotFound(f"no backup {backup_id!r} in {self.root} (backups: {known})")
        return path

    def get(self, backup_id: str) -> BackupRecord:
        return read_entry(self.require(backup_id))

    def save(self, record: BackupRecord) -> None:
        """Write the catalog entry atomically (written last: it is what makes a backup exist)."""
        path = self.backup_dir(record.id) / CATALOG_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def chain(self, record: BackupRecord) -> builtins.list[BackupRecord]:
        """The full backup and the incrementals up to ``record``, oldest first."""
        out = [record]
        while out[0].parent:
            out.insert(0, self.get(out[0].parent))
        return out
