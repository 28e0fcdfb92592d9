"""Backup verification without pg_verifybackup (the embedded one crashes): every file of the
manifest present with its size and SHA-256, the manifest's own checksum, and the WAL the backup
needs present and parseable (pg_waldump)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import OperationFailed
from opsctl.backup.catalog import BackupRecord, Repository, megabytes
from opsctl.backup.plan import parse_lsn, segments_between
from opsctl.files import sha256_file

# files pg_basebackup writes outside the manifest, and ones a restore adds
NOT_IN_MANIFEST = {"backup_manifest", "backup.json", "recovery.signal", "standby.signal", "postgresql.auto.conf"}


@dataclass
class VerifyResult:
    backup_id: str
    problems: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    wal_segments: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.files} files, {megabytes(self.bytes)}, {self.wal_segments} WAL segments"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"failed: {self.problems[0]}{more}"




def _manifest_checksum_ok(raw: bytes) -> bool:
    """The manifest's last line is its own SHA-256 over everything before that line."""
    marker = raw.rfind(b'"Manifest-Checksum"')
    if marker < 0:
        return False
    expected = json.loads(raw)["Manifest-Checksum"]
    return bool(hashlib.sha256(raw[:marker]).hexdigest() == expected)


def read_manifest(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "backup_manifest"
    try:
        raw = path.read_bytes()
        manifest: dict[str, Any] = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise OperationFailed(f"{path}: unreadable backup manifest: {exc}") from exc
    manifest["_checksum_ok"] = _manifest_checksum_ok(raw)
    return manifest


def _entry_path(entry: dict[str, Any]) -> str:
    if "Path" in entry:
        return str(entry["Path"])
    return bytes.fromhex(entry["Encoded-Path"]).decode("utf-8", "surrogateescape")


def verify_files(root: Path, entries: list[tuple[str, int, str | None]], result: VerifyResult,
                 tick: Callable[[int], None] | None = None) -> None:
    """Each (relative path, size, sha256 or None) must exist with that size and digest."""
    for rel, size, digest in entries:
        path = root / rel
        if not path.is_file():
            result.problems.append(f"{path}: missing")
            continue
        actual = path.stat().st_size
        if actual != size:
            result.problems.append(f"{path}: size {actual}, manifest says {size}")
            continue
        if digest is not None and sha256_file(path) != digest:
            result.problems.append(f"{path}: SHA-256 differs from the manifest (corrupted)")
        result.files += 1
        result.bytes += size
        if tick:
            tick(size)


def verify_physical(repo: Repository, record: BackupRecord, tick: Callable[[int], None] | None = None,
                    check_wal: bool = True) -> VerifyResult:
    result = VerifyResult(record.id)
    data = repo.backup_dir(record.id) / "data"
    try:
        manifest = read_manifest(data)
    except OperationFailed as exc:
        result.problems.append(exc.message)
        return result
    if not manifest["_checksum_ok"]:
        result.problems.append(f"{data / 'backup_manifest'}: its checksum does not match (manifest corrupted)")
    entries = []
    listed = set()
    for entry in manifest.get("Files", []):
        rel = _entry_path(entry)
        listed.add(rel)
        algo = entry.get("Checksum-Algorithm")
        if algo not in (None, "NONE", "SHA256"):
            result.problems.append(f"{data / rel}: checksum algorithm {algo}; take backups with SHA256")
        entries.append((rel, int(entry["Size"]), entry.get("Checksum") if algo == "SHA256" else None))
    verify_files(data, entries, result, tick)
    for dirpath, _, names in os.walk(data):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), data)
            if rel not in listed and rel not in NOT_IN_MANIFEST and not rel.startswith("pg_wal/"):
                result.problems.append(f"{data / rel}: present but not in the manifest")
    if check_wal:
        verify_wal(repo, record, result)
    return result


def segment_size(repo: Repository) -> int:
    """The WAL segment size, from the archived segments (16 MB unless initdb said otherwise)."""
    from opsctl.backup.plan import is_wal_file

    if repo.wal_dir.is_dir():
        for p in repo.wal_dir.iterdir():
            if is_wal_file(p.name) and len(p.name) == 24:
                return p.stat().st_size
    return 16 * 1024 * 1024


def archived_segments(repo: Repository, timeline: int, start: str, stop: str,
                      size: int) -> tuple[list[str], list[str]]:
    """The names of the WAL segments holding ``[start, stop]``, and those of them not in the archive."""
    names = segments_between(timeline, parse_lsn(start), parse_lsn(stop), size)
    return names, [n for n in names if not (repo.wal_dir / n).is_file()]


def verify_wal(repo: Repository, record: BackupRecord, result: VerifyResult, stop_lsn: str | None = None) -> None:
    """Every segment from the backup's start to its stop LSN archived, full size, and parseable."""
    from opsctl.backup.tools import run_pg

    if not (record.start_lsn and record.stop_lsn and record.timeline):
        result.problems.append(f"{record.id}: the catalog has no WAL range for this backup")
        return
    size = segment_size(repo)
    start, stop = record.start_lsn, stop_lsn or record.stop_lsn
    names, missing = archived_segments(repo, record.timeline, start, stop, size)
    for name in missing:
        result.problems.append(f"{repo.wal_dir / name}: WAL segment missing (needed from {start} to {stop})")
    for name in names:
        path = repo.wal_dir / name
        if path.is_file() and path.stat().st_size != size:
            result.problems.append(f"{path}: WAL segment of {path.stat().st_size} bytes, expected {size}")
    if result.problems:
        return
    try:
        run_pg("pg_waldump", "-q", "-p", str(repo.wal_dir), "-t", str(record.timeline), "-s", start, "-e", stop,
               timeout=600)
    except OperationFailed as exc:
        result.problems.append(f"{repo.wal_dir}: WAL from {start} to {stop} does not parse: {exc.message}")
    result.wal_segments = len(names)


def verify_logical(repo: Repository, record: BackupRecord, tick: Callable[[int], None] | None = None) -> VerifyResult:
    result = VerifyResult(record.id)
    folder = repo.backup_dir(record.id)
    try:
        manifest = json.loads((folder / record.manifest).read_text())
    except (OSError, ValueError) as exc:
        result.problems.append(f"{folder / record.manifest}: unreadable manifest: {exc}")
        return result
    verify_files(folder, [(f["path"], int(f["size"]), f["sha256"]) for f in manifest["files"]], result, tick)
    return result


def verify_backup(repo: Repository, record: BackupRecord, tick: Callable[[int], None] | None = None) -> VerifyResult:
    return verify_physical(repo, record, tick) if record.physical else verify_logical(repo, record, tick)
