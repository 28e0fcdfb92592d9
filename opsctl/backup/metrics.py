"""Prometheus gauges of the restore drill, per repository drilled (``repo``: the local one, or the
remote one of ``restore-test --repo``), in this process (the daemon's /metrics) and as a textfile
(``<data dir>/metrics/opsctl_restore_drill.prom``) for one-off CLI runs. The textfile keeps the
other repositories' series: a drill from the object store never overwrites the local drill's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

NAMES = {
    "success": ("opsctl_restore_drill_success", "1 if the last restore drill passed every check, else 0"),
    "last_success": ("opsctl_restore_drill_last_success_timestamp_seconds", "when a restore drill last passed"),
    "duration": ("opsctl_restore_drill_duration_seconds", "wall time of the last restore drill"),
    "rto": ("opsctl_restore_drill_rto_seconds", "RTO measured by the last restore drill"),
    "rpo": ("opsctl_restore_drill_rpo_seconds", "RPO measured by the last restore drill"),
}


def _gauges(registry: CollectorRegistry | None) -> dict[str, Gauge]:
    kwargs: dict[str, Any] = {"registry": registry} if registry is not None else {}
    return {key: Gauge(name, doc, ["repo"], **kwargs) for key, (name, doc) in NAMES.items()}


_PROCESS: dict[str, Gauge] = _gauges(None)


def textfile(data_dir: Path) -> Path:
    return data_dir / "metrics" / "opsctl_restore_drill.prom"


def read_textfile(path: Path) -> dict[str, dict[str, float]]:
    """repo → {key of NAMES: value} of a drill textfile (empty when there is none or it does not parse;
    series without a ``repo`` label, from before drills had one, are left out)."""
    by_name = {name: key for key, (name, _) in NAMES.items()}
    found: dict[str, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(path.read_text()))
    except (OSError, ValueError):
        return found
    for family in families:
        for sample in family.samples:
            if sample.name in by_name and "repo" in sample.labels:
                found.setdefault(sample.labels["repo"], {})[by_name[sample.name]] = float(sample.value)
    return found


def publish(report: dict[str, Any], data_dir: Path) -> None:
    """The gauges of the drill of ``report["repo"]``; the textfile keeps every other repository's."""
    path = textfile(data_dir)
    repo = str(report["repo"])
    previous = read_textfile(path)
    last = time.time() if report["passed"] else previous.get(repo, {}).get("last_success", 0.0)
    values = {"success": 1.0 if report["passed"] else 0.0, "last_success": last,
              "duration": float(report.get("duration_seconds") or 0), "rto": float(report.get("rto_seconds") or 0),
              "rpo": float(report.get("rpo_seconds") or 0)}
    registry = CollectorRegistry()
    in_file = _gauges(registry)
    for other, kept in previous.items():
        if other != repo:
            for key, value in kept.items():
                in_file[key].labels(other).set(value)
    for gauges in (_PROCESS, in_file):
        for key, value in values.items():
            if key != "last_success" or value:
                gauges[key].labels(repo).set(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


REPOSITORY_BYTES = ("opsctl_backup_repository_bytes", "bytes held by each backup repository (remote: the stored, "
                    "encoded bytes of its verified copies, from the local catalog)")
_REPO_GAUGE = Gauge(*REPOSITORY_BYTES, ["repo"])


def repository_textfile(data_dir: Path) -> Path:
    return data_dir / "metrics" / "opsctl_backup_repository.prom"


def publish_repository_bytes(sizes: dict[str, int], data_dir: Path) -> None:
    """``opsctl_backup_repository_bytes{repo}`` in this process and in a textfile (as the drill's gauges)."""
    registry = CollectorRegistry()
    textfile_gauge = Gauge(*REPOSITORY_BYTES, ["repo"], registry=registry)
    for repo, size in sizes.items():
        _REPO_GAUGE.labels(repo).set(size)
        textfile_gauge.labels(repo).set(size)
    path = repository_textfile(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
