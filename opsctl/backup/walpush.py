"""The WAL pusher: from the local spool to every remote repository, continuously, off the database's path.

``archive_command`` only copies each segment into the spool (a local directory: fast, and it never
touches the network). This pusher, a separate process (``opsctl wal push --loop``, a supervised
child of ``opsctl up``), takes what :func:`opsctl.backup.walplan.plan_push` says, and for each file:
encodes it as the repository's policy says (zstd, AES-256-GCM) into a temporary file, uploads it
under ``wal/<name>``, reads the object's size back (HEAD) and only when it is the size uploaded
writes the file's *mark* (``<state dir>/<repo>-<store hash>/<name>``, synced, renamed into place).
A mark is the only thing that counts a file as pushed: an upload killed half-way leaves no mark (and
an S3 PUT that never completed leaves no object), so the next run uploads it again; uploads are
idempotent by key, so doing one twice does not matter.

A few uploads run at once (``parallel``); a repository that fails is retried after a growing delay
(:func:`opsctl.backup.walplan.retry_after`) while the others go on. Files leave the spool only as
the local repository's prune removes them (it holds back what a remote repository lacks).
Every cycle returns one sentence and updates the metrics (served on ``--metrics-port`` and written
to ``<data dir>/metrics/opsctl_wal_push.prom``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import OperationFailed
from core.supervision import one_line
from opsctl.backup.offsite import Remote, open_remote, store_spec
from opsctl.backup.walplan import SpoolFile, WalPlan, archivable, plan_push, retry_after

log = logging.getLogger("opsctl.walpush")

def wal_key(name: str) -> str:
    return f"wal/{name}"


class UploadMismatch(OperationFailed):
    """The object read back is not what was uploaded."""


def _write_synced(path: Path, data: bytes) -> None:
    """``path`` with ``data``, whole or not at all: a temporary file synced and renamed, the directory synced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Marks:
    """The files one remote repository holds verified: one mark file each, named after it.

    The directory is named after the repository and a hash of its store's URL, so pointing a
    repository name at another bucket starts from nothing instead of trusting the old marks."""

    def __init__(self, state_dir: Path, repo: str, url: str) -> None:
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        self.dir = state_dir / f"{repo}-{digest}"

    def names(self) -> set[str]:
        if not self.dir.is_dir():
            return set()
        return {p.name for p in self.dir.iterdir() if archivable(p.name)}

    def add(self, name: str, size: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_synced(self.dir / name, f"{size}\n".encode())

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            (self.dir / name).unlink(missing_ok=True)


def read_spool(spool: Path) -> list[SpoolFile]:
    """The files in the spool that PostgreSQL archives (not the half-written ``*.tmp`` ones)."""
    out = []
    with contextlib.suppress(FileNotFoundError), os.scandir(spool) as entries:
        for entry in entries:
            if not archivable(entry.name):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # removed meanwhile (a prune)
                continue
            out.append(SpoolFile(entry.name, st.st_size, st.st_mtime))
    return out


def upload(remote: Remote, source: Path, scratch: Path) -> int:
    """Encode ``source``, upload it under ``wal/<name>`` and read its size back; returns the size.

    Raises when the store fails or holds another size than was uploaded (nothing is marked then)."""
    scratch.mkdir(parents=True, exist_ok=True)
    encoded = scratch / f"{remote.name}.{source.name}.{os.getpid()}.{threading.get_ident()}"
    try:
        with open(encoded, "wb") as out:
            for piece in remote.codec.encode_file(source):
                out.write(piece)
        size = encoded.stat().st_size
        key = wal_key(source.name)
        remote.store.put(key, encoded)
        info = remote.store.head(key)
        if info is None or info.size != size:
            got = "no object" if info is None else f"{info.size} bytes"
            raise UploadMismatch(f"{remote.url}/{key}: uploaded {size} bytes, the store holds {got}")
        return size
    finally:
        encoded.unlink(missing_ok=True)


def fetch(remote: Remote, name: str, dest: Path) -> bool:
    """Fetch ``name`` from the repository's WAL into ``dest`` (decoded, synced, renamed into place):
    False when the repository does not hold it (the end of the archive, for a restore)."""
    from opsctl.objectstore.codec import decode
    from opsctl.objectstore.store import ObjectMissing

    key = wal_key(name)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.fetch")
    try:
        with open(tmp, "wb") as f:
            try:
                for block in decode(remote.store.get(key), remote.codec.key, f"{remote.url}/{key}"):
                    f.write(block)
            except ObjectMissing:
                return False
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return True


@dataclass
class RepoState:
    """What the pusher remembers of one repository between cycles (not on disk: a restart retries at once)."""

    failures: int = 0  # consecutive
    retry_at: float = 0.0
    last_error: str | None = None
    last_push: float | None = None


@dataclass
class Pusher:
    """One spool, its remote repositories. ``clock`` gives seconds since the epoch (the files' mtimes
    are compared with it); only :meth:`loop` waits."""

    spool: Path
    remotes: list[Remote]
    state_dir: Path
    parallel: int = 4
    batch: int = 32
    clock: Callable[[], float] = time.time
    metrics: Any = None  # opsctl.backup.walmetrics.PushMetrics
    states: dict[str, RepoState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.marks = {r.name: Marks(self.state_dir, r.name, r.url) for r in self.remotes}
        self.states = {r.name: RepoState() for r in self.remotes}
        self.pushed_last_cycle = 0
        self._clean_scratch()

    def _clean_scratch(self) -> None:
        """Remove the encoded copies a killed pusher left (named ``<repo>.<file>.<pid>.<thread>``)."""
        from core.embedded import pid_alive

        scratch = self.state_dir / "tmp"
        if not scratch.is_dir():
            return
        for path in scratch.iterdir():
            parts = path.name.split(".")
            pid = int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else None
            if pid is None or pid == os.getpid() or not pid_alive(pid):
                path.unlink(missing_ok=True)

    def plan(self) -> WalPlan:
        files = read_spool(self.spool)
        verified = {name: marks.names() for name, marks in self.marks.items()}
        return plan_push(files, verified, self.clock(), batch=self.batch)

    def cycle(self) -> str:
        """Push what the plan says to every repository not waiting out a retry, update the metrics;
        returns what happened, in one sentence."""
        now = self.clock()
        plan = self.plan()
        due = [r for r in plan.repos if r.push and self.states[r.repo].retry_at <= now]
        by_name = {r.name: r for r in self.remotes}
        jobs = [(by_name[r.repo], name) for r in due for name in r.push]
        results: list[tuple[Remote, str, int | Exception]] = []
        if jobs:
            with ThreadPoolExecutor(max_workers=max(1, self.parallel), thread_name_prefix="wal-push") as pool:
                results = list(pool.map(lambda job: (job[0], job[1], self._push_one(*job)), jobs))
        pushed: dict[str, int] = {}
        failed: dict[str, list[str]] = {}
        for remote, name, outcome in results:
            if isinstance(outcome, Exception):
                failed.setdefault(remote.name, []).append(f"{name}: {one_line(str(outcome))}")
            else:
                pushed[remote.name] = pushed.get(remote.name, 0) + 1
        end = self.clock()
        for repo in {r.repo for r in due}:
            self._note(repo, pushed.get(repo, 0), failed.get(repo, []), end)
        self.pushed_last_cycle = sum(pushed.values())
        after = self.plan()
        self._forget_gone()
        if self.metrics is not None:
            self.metrics.update(after, self.states, {r: len(f) for r, f in failed.items()})
        return self._sentence(after, pushed, failed)

    def _push_one(self, remote: Remote, name: str) -> int | Exception:
        try:
            size = upload(remote, self.spool / name, self.state_dir / "tmp")
            self.marks[remote.name].add(name, size)
            return size
        except Exception as exc:  # a store error, a codec error, a full disk: counted, retried later
            return exc

    def _note(self, repo: str, pushed: int, failed: list[str], now: float) -> None:
        state = self.states[repo]
        if pushed:
            state.last_push = now
        if failed:
            state.failures += 1
            state.retry_at = now + retry_after(state.failures)
            state.last_error = failed[0]
            log.warning("wal push to %s: %d failed (%s); retrying in %.0f s", repo, len(failed), failed[0],
                        retry_after(state.failures))
        else:
            state.failures, state.retry_at, state.last_error = 0, 0.0, None

    def _forget_gone(self) -> None:
        """Drop the marks of files no longer in the spool (pruned from the local repository): what is
        not in the spool is never planned again."""
        present = {f.name for f in read_spool(self.spool)}
        for marks in self.marks.values():
            marks.forget(marks.names() - present)

    def _sentence(self, plan: WalPlan, pushed: dict[str, int], failed: dict[str, list[str]]) -> str:
        parts = []
        for r in plan.repos:
            bits = []
            if pushed.get(r.repo):
                bits.append(f"pushed {pushed[r.repo]}")
            if failed.get(r.repo):
                state = self.states[r.repo]
                bits.append(f"{len(failed[r.repo])} failed ({failed[r.repo][0]}; retry in "
                            f"{max(0.0, state.retry_at - self.clock()):.0f} s)")
            bits.append(f"{r.waiting} waiting, lag {r.lag_seconds:.0f} s" if r.waiting else "up to date")
            parts.append(f"{r.repo}: {', '.join(bits)}")
        if not parts:
            return "wal push: no remote repository configured"
        return "wal push: " + "; ".join(parts)

    def loop(self, stop: threading.Event, interval: float = 2.0,
             say: Callable[[str], None] = lambda text: log.info("%s", text)) -> None:
        """Cycle until ``stop`` is set: at once again while the last cycle pushed and more waits,
        else every ``interval`` seconds. A cycle's unexpected error is logged and survived."""
        last = ""
        while not stop.is_set():
            try:
                sentence = self.cycle()
                if sentence != last:
                    say(sentence)
                    last = sentence
            except Exception:
                log.exception("wal push cycle failed")
                self.pushed_last_cycle = 0
            if self.pushed_last_cycle and any(s.retry_at <= self.clock() for s in self.states.values()):
                continue
            stop.wait(interval)


# -- from the policy ---------------------------------------------------------------------------------
def state_dir(data_dir: Path) -> Path:
    return data_dir / "wal-push"


def verified(data_dir: Path, policy: Any) -> dict[str, set[str]]:
    """For each remote repository of ``policy``: the WAL files it holds verified (their marks)."""
    return {r.name: Marks(state_dir(data_dir), r.name, store_spec(r).url).names() for r in policy.remotes}


def pusher_for(data_dir: Path, policy: Any, *, parallel: int = 4, metrics: Any = None,
               clock: Callable[[], float] = time.time) -> Pusher:
    """The pusher of ``policy``'s spool to its remote repositories (ConfigError when there is none)."""
    from core.errors import ConfigError

    if not policy.remotes:
        raise ConfigError("the backup policy names no remote repository: there is nowhere to push WAL "
                          "(add one under `repositories:` in backup.yaml)")
    return Pusher(policy.wal_dir(data_dir), [open_remote(r) for r in policy.remotes], state_dir(data_dir),
                  parallel=parallel, metrics=metrics, clock=clock)


def fetch_wal(remote: Remote, segment: str, dest: Path) -> bool:
    """For restores: ``segment`` from the repository's WAL into ``dest`` (decrypted, decompressed).
    False when the repository does not hold it; raises when it cannot be read or decoded."""
    return fetch(remote, segment, dest)


def fetch_from(remote: Remote, dest_dir: Path, first: str | None = None, parallel: int = 4) -> list[str]:
    """Every WAL file the repository holds from segment ``first`` on (all of them without it; timeline
    history files always), fetched and decoded into ``dest_dir``: a local archive for a restore to
    read with a plain ``cp`` restore_command (no interpreter started per segment, and nothing the
    server's system user must be able to run). Returns the names, in WAL order; raises naming the
    first file that cannot be read or decoded."""
    from opsctl.backup.walplan import wal_order

    names = [info.key.removeprefix("wal/") for info in remote.store.list("wal/")]
    wanted = sorted((n for n in names if archivable(n) and (first is None or n.endswith(".history")
                                                            or wal_order(n) >= wal_order(first))), key=wal_order)
    dest_dir.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> None:
        if not fetch(remote, name, dest_dir / name):
            raise OperationFailed(f"{remote.url}/{wal_key(name)} was listed but is gone")

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="wal-fetch") as pool:
        list(pool.map(one, wanted))
    return wanted


def restore_command(repo: str, data_dir: Path, policy_path: Path | None = None) -> str:
    """A ``restore_command`` that fetches each WAL file from the remote repository ``repo``
    (``opsctl wal fetch``, with this interpreter): what a restore from that repository replays."""
    import shlex
    import sys

    argv = [sys.executable, "-m", "opsctl.cli", "--data-dir", str(data_dir), "wal", "fetch", "--repo", repo]
    if policy_path is not None:
        argv += ["--policy", str(policy_path.resolve())]
    return " ".join(shlex.quote(a) for a in argv) + ' "%f" "%p"'
