"""Copies of backups in remote repositories (object stores): push, check, verify, list, download, prune.

Layout of a remote repository (under its bucket and prefix)::

    backups/<id>/files/<path>          each file of the local backup, encoded (opsctl.objectstore.codec:
                                       zstd and/or AES-256-GCM per the repository's policy)
    backups/<id>/files/wal/<segment>   a physical backup's WAL from its start to its end (pgBackRest's
                                       archive-copy): the copy restores to its end point on its own
    backups/<id>/opsctl-manifest.json  written LAST: the catalog entry, the encoding, the key id, and per
                                       file its plain size and SHA-256 and its stored size (plain JSON:
                                       names, sizes and digests are not secret; the content is)
    wal/…                              continuous WAL (opsctl.backup.walpush, not this module)

A backup exists in a remote repository when its manifest does. After an upload every object's
size is checked against the manifest (a listing, HEAD for what it lacks) and the manifest is read back; only then
does the local catalog record the copy as ``verified`` (``BackupRecord.copies``). ``verify --repo``
goes further: it downloads, decrypts, decompresses and checksums every file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, OperationFailed, OpsError
from opsctl.backup.catalog import CATALOG_FILE, BackupRecord, BrokenEntry, Repository
from opsctl.backup.tools import Progress, no_progress
from opsctl.objectstore.codec import Codec, Key, Stats, decode, load_key
from opsctl.objectstore.store import ObjectMissing, Store, StoreSpec, open_store

if TYPE_CHECKING:
    from opsctl.backup.plan import PrunePlan
    from opsctl.backup.policy import RepositoryConfig
    from opsctl.backup.verify import VerifyResult

MANIFEST = "opsctl-manifest.json"
FORMAT = "opsctl-remote-1"
SMALL = 8 << 20  # files up to this size are encoded in memory and sent in one PUT (no multipart upload)


@dataclass
class Remote:
    """A remote repository, opened: its store, how it encodes, and its key (if it encrypts)."""

    config: RepositoryConfig
    store: Store
    codec: Codec
    key: Key | None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        return self.store.url


def store_spec(config: RepositoryConfig) -> StoreSpec:
    """Where ``config``'s objects live (its ``url`` names the store without opening it)."""
    return StoreSpec(config.type, bucket=config.bucket, prefix=config.prefix, endpoint=config.endpoint,
                     region=config.region, timeout_seconds=config.timeout_seconds, retries=config.retries)


def open_remote(config: RepositoryConfig) -> Remote:
    """Open ``config``'s store and load its key (a key problem is a configuration error, exit 2)."""
    key = load_key(config.encryption.key_file, config.encryption.key_env) if config.encryption else None
    return Remote(config, open_store(store_spec(config)), Codec(config.compression.type, config.compression.level, key),
                  key)


def file_key(backup_id: str, rel: str) -> str:
    return f"backups/{backup_id}/files/{rel}"


def manifest_key(backup_id: str) -> str:
    return f"backups/{backup_id}/{MANIFEST}"


def _map(remote: Remote, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
    """``fn`` over ``items``, ``parallel`` at a time (obstore releases the GIL while it waits)."""
    if remote.config.parallel == 1 or len(items) < 2:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(remote.config.parallel) as pool:
        yield from pool.map(fn, items)


def local_files(repo: Repository, record: BackupRecord) -> list[tuple[str, Path]]:
    """(remote path, local file) of everything a copy of ``record`` holds: the backup's files but its
    catalog entry, and for a physical backup the archived WAL from its start to its end."""
    from opsctl.backup.verify import archived_segments, segment_size

    folder = repo.backup_dir(record.id)
    files = [(p.relative_to(folder).as_posix(), p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.relative_to(folder).as_posix() != CATALOG_FILE]
    if record.physical and record.start_lsn and record.stop_lsn and record.timeline:
        names, missing = archived_segments(repo, record.timeline, record.start_lsn, record.stop_lsn,
                                           segment_size(repo))
        if missing:
            raise OperationFailed(f"{record.id}: WAL segment(s) {', '.join(missing)} it needs are not in "
                                  f"{repo.wal_dir}: nothing to copy them from")
        files += [(f"wal/{n}", repo.wal_dir / n) for n in names]
    return files


@dataclass
class PushResult:
    """One copy: what was sent and how long it took; ``problems`` empty when it is verified."""

    repo: str
    backup_id: str
    files: int = 0
    plain_bytes: int = 0
    stored_bytes: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def copy_state(self, remote: Remote, at: datetime) -> dict[str, Any]:
        state: dict[str, Any] = {"state": "verified" if self.ok else "failed", "at": at.isoformat(),
                                 "key_id": remote.key.id if remote.key else None,
                                 "compression": remote.codec.compression, "files": self.files,
                                 "stored_bytes": self.stored_bytes, "plain_bytes": self.plain_bytes,
                                 "seconds": round(self.seconds, 3)}
        if not self.ok:
            state["error"] = self.problems[0]
        return state


def push(repo: Repository, record: BackupRecord, remote: Remote, progress: Progress = no_progress) -> PushResult:
    """Copy ``record`` to ``remote``: every file encoded, the manifest last, then the remote check.
    A failure is returned (the copy is ``failed``, the message names the cause), not raised."""
    result = PushResult(remote.name, record.id)
    started = time.monotonic()
    try:
        files = local_files(repo, record)
        total = sum(p.stat().st_size for _, p in files) or 1
        done = 0

        def send(item: tuple[str, Path]) -> dict[str, Any]:
            rel, path = item
            stats = Stats()
            if path.stat().st_size <= SMALL:
                remote.store.put(file_key(record.id, rel), b"".join(remote.codec.encode_file(path, stats)))
            else:
                remote.store.put(file_key(record.id, rel), remote.codec.encode_file(path, stats))
            return {"path": rel, "size": stats.plain_bytes, "sha256": stats.sha256, "stored_size": stats.stored_bytes}

        entries = []
        for entry in _map(remote, send, files):
            entries.append(entry)
            done += entry["size"]
            progress(f"copying {record.id} to {remote.name}", min(done / total, 0.99))
        folder = repo.backup_dir(record.id)
        dirs = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir())
        manifest = {"format": FORMAT, "backup": _portable(record), "compression": remote.codec.compression,
                    "level": remote.codec.level, "key_id": remote.key.id if remote.key else None, "files": entries,
                    "dirs": dirs}  # an object store keeps no empty directory (pg_tblspc …): restored from here
        raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
        remote.store.put(manifest_key(record.id), raw)  # last: the copy exists from here on
        result.files = len(entries)
        result.plain_bytes = sum(e["size"] for e in entries)
        result.stored_bytes = sum(e["stored_size"] for e in entries) + len(raw)
        progress(f"checking the copy on {remote.name}", 0.99)
        result.problems = check_copy(remote, record.id, manifest)
    except OpsError as exc:
        result.problems = [exc.message]
    result.seconds = time.monotonic() - started
    return result


def _portable(record: BackupRecord) -> dict[str, Any]:
    """The catalog entry a remote copy carries: without the local verification and the other copies."""
    data = record.to_json()
    data.update(copies={}, verified_at=None, verify_result=None)
    return data


def check_copy(remote: Remote, backup_id: str, expected: dict[str, Any] | None = None) -> list[str]:
    """The copy's manifest readable (and, when given, what was written), every object there with the
    stored size the manifest says (a listing, HEAD requests for what it lacks; no download)."""
    try:
        manifest = read_manifest(remote, backup_id)
    except OpsError as exc:
        return [exc.message]
    if expected is not None and manifest != expected:
        return [f"{remote.url}/{manifest_key(backup_id)}: differs from the manifest just written"]

    try:
        # one LIST gives every object's stored size (S3, GCS and Azure list consistently); an object
        # the listing lacks is asked for by HEAD before it is called missing
        listed = {o.key: o.size for o in remote.store.list(f"backups/{backup_id}/files/")}

        def size_of(entry: dict[str, Any]) -> str | None:
            key = file_key(backup_id, entry["path"])
            if listed.get(key) == entry["stored_size"]:
                return None
            return _size_problem(remote, key, entry)

        return [p for p in _map(remote, size_of, manifest["files"]) if p]
    except OpsError as exc:
        return [exc.message]


def _size_problem(remote: Remote, key: str, entry: dict[str, Any]) -> str | None:
    """What is wrong with the object's size (a HEAD request), None when it is what the manifest says."""
    info = remote.store.head(key)
    if info is None:
        return f"{remote.url}/{key}: missing (half-written copy)"
    if info.size != entry["stored_size"]:
        return f"{remote.url}/{key}: {info.size} bytes stored, the manifest says {entry['stored_size']}"
    return None


def read_manifest(remote: Remote, backup_id: str) -> dict[str, Any]:
    key = manifest_key(backup_id)
    try:
        raw = b"".join(remote.store.get(key))
    except ObjectMissing as exc:
        raise OperationFailed(f"{remote.url}/{key}: no manifest: the copy of {backup_id} is incomplete "
                              "(half-written) or absent") from exc
    try:
        manifest: dict[str, Any] = json.loads(raw)
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), list):
            raise ValueError(f"format {manifest.get('format')!r}")
        BackupRecord.from_json(manifest["backup"])
    except (ValueError, TypeError, KeyError) as exc:
        raise OperationFailed(f"{remote.url}/{key}: unreadable manifest ({exc})") from exc
    return manifest


def list_remote(remote: Remote) -> tuple[list[BackupRecord], list[BrokenEntry]]:
    """The backups the remote repository holds (a manifest each), oldest first, and the incomplete
    ones (objects without a manifest: an upload that failed or is running)."""
    objects = remote.store.list("backups/")
    ids = sorted({o.key.split("/")[1] for o in objects if o.key.count("/") >= 2})
    complete = {o.key.split("/")[1] for o in objects if o.key.endswith("/" + MANIFEST)}
    records, broken = [], []
    for backup_id in ids:
        if backup_id not in complete:
            broken.append(BrokenEntry(backup_id, Path(f"{remote.url}/{manifest_key(backup_id)}"),
                                      "no manifest: an incomplete (half-written) copy"))
            continue
        try:
            records.append(BackupRecord.from_json(read_manifest(remote, backup_id)["backup"]))
        except OperationFailed as exc:
            broken.append(BrokenEntry(backup_id, Path(f"{remote.url}/{manifest_key(backup_id)}"), exc.message))
    return sorted(records, key=lambda r: (r.stop_time, r.id)), broken


def _fetch(remote: Remote, key: str, stats: Stats) -> Iterator[bytes]:
    return decode(remote.store.get(key), remote.key, f"{remote.url}/{key}", stats)


def verify_copy(remote: Remote, backup_id: str, tick: Callable[[int], None] | None = None) -> VerifyResult:
    """The copy that is there: manifest, then every file downloaded, decrypted, decompressed and
    checked against its plain size and SHA-256 (nothing local is read)."""
    from opsctl.backup.verify import VerifyResult

    result = VerifyResult(backup_id)
    try:
        manifest = read_manifest(remote, backup_id)
    except OpsError as exc:
        result.problems.append(exc.message)
        return result

    def check(entry: dict[str, Any]) -> tuple[str | None, int]:
        key = file_key(backup_id, entry["path"])
        stats = Stats()
        try:
            problem = _size_problem(remote, key, entry)
            if problem:
                return problem, 0
            for _ in _fetch(remote, key, stats):
                pass
        except ConfigError:
            raise
        except OpsError as exc:
            return exc.message, 0
        if stats.stored_bytes != entry["stored_size"]:
            return f"{remote.url}/{key}: {stats.stored_bytes} bytes stored, the manifest says " \
                   f"{entry['stored_size']}", 0
        if stats.plain_bytes != entry["size"] or stats.sha256 != entry["sha256"]:
            return f"{remote.url}/{key}: its content differs from the manifest (SHA-256)", 0
        return None, entry["size"]

    for problem, size in _map(remote, check, manifest["files"]):
        if problem:
            result.problems.append(problem)
        else:
            result.files += 1
            result.bytes += size
            if tick:
                tick(size)
    result.wal_segments = sum(1 for e in manifest["files"] if e["path"].startswith("wal/"))
    return result


@dataclass
class Download:
    """A chain downloaded into a scratch repository, and where the time went."""

    repo: Repository
    chain: list[BackupRecord]
    stored_bytes: int = 0
    plain_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"download": 0.0, "decrypt": 0.0,
                                                               "decompress": 0.0, "write": 0.0})


def download_chain(remote: Remote, backup_id: str, into: Path, progress: Progress = no_progress,
                   target: datetime | None = None) -> Download:
    """Download ``backup_id`` (``latest``: the newest good one that ended by ``target``) and the chain
    it needs from ``remote`` into a new local repository at ``into`` (catalog entries, files, and each
    backup's WAL in the repository's wal/), checking every file's size and SHA-256 against the
    manifest as it lands."""
    from core.embedded import prepare_for_pg_user
    from opsctl.backup.plan import chain_of

    records, _ = list_remote(remote)
    chosen = _choose(records, backup_id, remote, target)
    chain = chain_of(records, chosen.id)
    repo = Repository(into)
    for path in (repo.root, repo.backups_dir, repo.wal_dir):
        prepare_for_pg_user(path)
    out = Download(repo, chain)
    manifests = [read_manifest(remote, b.id) for b in chain]
    total = sum(e["size"] for m in manifests for e in m["files"]) or 1
    done = 0
    for record, manifest in zip(chain, manifests, strict=True):
        folder = repo.backup_dir(record.id)
        folder.mkdir(parents=True, exist_ok=True)
        for rel in manifest.get("dirs", []):
            (folder / rel).mkdir(parents=True, exist_ok=True)

        def fetch(entry: dict[str, Any], record: BackupRecord = record, folder: Path = folder) -> Stats:
            rel = entry["path"]
            target = repo.wal_dir / rel[4:] if rel.startswith("wal/") else folder / rel
            return _download_file(remote, file_key(record.id, rel), target, entry)

        for stats in _map(remote, fetch, manifest["files"]):
            out.stored_bytes += stats.stored_bytes
            out.plain_bytes += stats.plain_bytes
            for step, seconds in stats.seconds.items():
                out.seconds[step] = out.seconds.get(step, 0.0) + seconds
            done += stats.plain_bytes
            progress(f"downloading {record.id} from {remote.name}", min(done / total, 0.99))
        repo.save(BackupRecord.from_json(manifest["backup"]))
    return out


def _download_file(remote: Remote, key: str, target: Path, entry: dict[str, Any]) -> Stats:
    stats = Stats()
    stats.seconds["write"] = 0.0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as fh:
        for block in _fetch(remote, key, stats):
            started = time.perf_counter()
            fh.write(block)
            stats.seconds["write"] += time.perf_counter() - started
    if stats.plain_bytes != entry["size"] or stats.sha256 != entry["sha256"]:
        raise OperationFailed(f"{remote.url}/{key}: its content differs from the manifest (SHA-256)")
    return stats


def _choose(records: list[BackupRecord], backup_id: str, remote: Remote, target: datetime | None) -> BackupRecord:
    from core.errors import NotFound
    from opsctl.backup.plan import choose_backup

    if not records:
        raise NotFound(f"no backup in repository {remote.name} ({remote.url}): `opsctl backup create` copies "
                       "each new backup there")
    try:
        if backup_id != "latest":
            return choose_backup(records, backup_id=backup_id)
        return choose_backup(records, target=target, physical=any(r.physical for r in records))
    except NotFound as exc:
        raise NotFound(f"{exc.message} (repository {remote.name})") from exc


def apply_remote_prune(remote: Remote, plan: PrunePlan) -> None:
    """Remove what the plan says from the remote repository: the manifest first (a copy without one is
    no copy), then its objects."""
    for item in plan.backups:
        if item.action != "remove":
            continue
        remote.store.delete(manifest_key(item.name))
        for obj in remote.store.list(f"backups/{item.name}/"):
            remote.store.delete(obj.key)
