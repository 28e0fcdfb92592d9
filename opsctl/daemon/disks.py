"""Free space of the volumes whose filling up stops the database, exported by the daemon (alerts
``DiskNearlyFull``, ``DiskFillingUp``).

    opsctl_disk_free_bytes{volume}   bytes an unprivileged process can still write (statvfs f_bavail)
    opsctl_disk_size_bytes{volume}   the filesystem's size (f_blocks)

``volume`` is one of:

* ``data``: the embedded PostgreSQL's data directory (``<data dir>/pg``), when this host runs it;
* ``wal``: its ``pg_wal`` (followed when it is a symlink to a volume of its own);
* ``spool``: the WAL push spool, when WAL is pushed to a remote repository (the directory exists);
* ``repository``: the local backup repository of ``policies/backup.yaml`` (``repository:``).

Which path is which volume is a pure function of the settings and the backup policy
(:func:`volume_paths`); the adapter (:func:`statvfs`) measures each path, or the nearest existing
directory above it (a repository not created yet fills the filesystem it will be created on). A
database on another host (managed, CloudNativePG) has no ``data``/``wal`` volume here: its own
node_exporter (``node_filesystem_avail_bytes``) covers it, and the same alerts read that too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.throttle import EveryInterval

log = logging.getLogger(__name__)

VOLUMES = ("data", "wal", "spool", "repository")
NAMES = ("opsctl_disk_free_bytes", "opsctl_disk_size_bytes")


def volume_paths(data_dir: Path, repository: Path, spool: Path | None, embedded_pg: bool) -> dict[str, Path]:
    """Each volume's path (pure): ``embedded_pg`` says whether ``<data dir>/pg`` is this host's
    database; ``spool`` is None when no WAL is pushed."""
    paths: dict[str, Path] = {}
    if embedded_pg:
        paths["data"] = data_dir / "pg"
        paths["wal"] = data_dir / "pg" / "pg_wal"
    if spool is not None:
        paths["spool"] = spool
    paths["repository"] = repository
    return paths


def spool_path(policy: Any, data_dir: Path) -> Path | None:
    """The WAL push spool (the local repository's WAL dir) when WAL is pushed to a remote repository, else None."""
    return policy.wal_dir(data_dir) if policy.remotes else None


def host_volumes(data_dir: Path, policy: Any) -> dict[str, Path]:
    """The volumes of this host (reads only whether directories exist)."""
    data_dir = data_dir.resolve()
    spool = spool_path(policy, data_dir)
    return volume_paths(data_dir, policy.repository_path(data_dir), spool if spool and spool.is_dir() else None,
                        embedded_pg=(data_dir / "pg" / "PG_VERSION").is_file())


def statvfs(path: Path) -> tuple[int, int] | None:
    """(free bytes for unprivileged writers, size in bytes) of the filesystem holding ``path``, or of
    the nearest existing directory above it; None when nothing can be measured."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(os.path.realpath(candidate))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            log.warning("disk gauges: cannot measure %s: %s", candidate, exc)
            return None
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return None


def disk_families(measured: Mapping[str, tuple[int, int] | None]) -> list[GaugeMetricFamily]:
    """The two families from each volume's (free, size) (pure); an unmeasured volume is left out."""
    free = GaugeMetricFamily("opsctl_disk_free_bytes", "Bytes still writable on the volume (statvfs f_bavail)",
                             labels=["volume"])
    size = GaugeMetricFamily("opsctl_disk_size_bytes", "Size of the volume's filesystem in bytes",
                             labels=["volume"])
    for volume, numbers in sorted(measured.items(), key=lambda item: VOLUMES.index(item[0])):
        if numbers is not None:
            free.add_metric([volume], numbers[0])
            size.add_metric([volume], numbers[1])
    return [free, size]


class DiskCollector(Collector):
    """Measures the volumes when scraped, at most every ``min_interval`` seconds."""

    def __init__(self, volumes: Callable[[], dict[str, Path]], min_interval: float = 5.0,
                 measure: Callable[[Path], tuple[int, int] | None] = statvfs,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.volumes = volumes
        self.measure = measure
        self._families = EveryInterval(self._read, min_interval, monotonic)

    def _read(self) -> list[GaugeMetricFamily]:
        try:
            paths = self.volumes()
        except Exception as exc:  # a scrape must never fail (an unreadable policy file: no volumes)
            log.warning("disk gauges: cannot tell the volumes: %s", exc)
            paths = {}
        return disk_families({volume: self.measure(path) for volume, path in paths.items()})

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name in NAMES:
            yield GaugeMetricFamily(name, name)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families.get()
