"""Gauges of the system's state for the alert rules, read from the database at scrape time.

Every daemon replica, leader or not, exports the same values, and a change of leader resets
nothing: the values come from the audit log and the catalog (the same rows ``opsctl status``
reads), not from what one process happened to do.

    opsctl_backup_last_success_timestamp_seconds{repo} the newest backup.create event (the local
                                                       repository), the newest verified backup.copy per
                                                       remote repository
    opsctl_partitions_premade_ahead{table}             partitions starting after this month
    opsctl_partition_default_rows{table}               rows in the default partition (capped)
    opsctl_vector_index_recall{index}                  the newest index.recall measurement
    opsctl_scale_current_replicas{service}             the newest scale.decide per service
    opsctl_scale_desired_replicas{service}
    opsctl_scale_max_replicas{service}
    opsctl_reembed_progress_ratio                      the re-embed's chunks embedded / to embed (1: none runs)
    opsctl_reembed_in_progress                         1 while `opsctl index reembed` builds a space
    opsctl_state_scrape_errors_total                   scrapes whose database read failed

The drill gauges (``opsctl_restore_drill_*``) are set by the drill itself (``opsctl.backup.metrics``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.clock import Clock, utcnow

log = logging.getLogger(__name__)

NAMES = ("opsctl_backup_last_success_timestamp_seconds", "opsctl_partitions_premade_ahead",
         "opsctl_partition_default_rows", "opsctl_vector_index_recall", "opsctl_scale_current_replicas",
         "opsctl_scale_desired_replicas", "opsctl_scale_max_replicas", "opsctl_reembed_progress_ratio",
         "opsctl_reembed_in_progress")
SCRAPE_ERRORS = Counter("opsctl_state_scrape_errors_total", "State gauge scrapes whose database read failed")


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def families(raw: dict[str, Any], summary: dict[str, Any]) -> list[GaugeMetricFamily]:
    """The gauges from ``opsctl status``'s rows (``raw``) and its summary (pure)."""
    out: list[GaugeMetricFamily] = []
    backups = GaugeMetricFamily("opsctl_backup_last_success_timestamp_seconds",
                                "Unix time of the newest successful backup (remote: verified copy) per repository",
                                labels=["repo"])
    if raw.get("backup"):
        backups.add_metric([str((raw["backup"].get("details") or {}).get("repo") or "local")],
                           raw["backup"]["at"].timestamp())
    for row in raw.get("offsite") or []:
        backups.add_metric([str(row["repo"])], row["at"].timestamp())
    if backups.samples:
        out.append(backups)
    ahead = GaugeMetricFamily("opsctl_partitions_premade_ahead", "Partitions that start after the current month",
                              labels=["table"])
    default = GaugeMetricFamily("opsctl_partition_default_rows", "Rows in the default partition (counted up to 1e6)",
                                labels=["table"])
    for table, part in sorted(summary.get("partitions", {}).items()):
        ahead.add_metric([table], part["premade_ahead"])
        default.add_metric([table], part["default_rows"])
    out += [ahead, default]
    recall = GaugeMetricFamily("opsctl_vector_index_recall", "recall@k of each vector index, newest measurement",
                               labels=["index"])
    measured = (summary.get("index_recall") or {}).get("recall")
    if isinstance(measured, dict):
        for index, value in sorted(measured.items()):
            number = _number(value)
            if number is not None:
                recall.add_metric([str(index)], number)
    out.append(recall)
    current = GaugeMetricFamily("opsctl_scale_current_replicas", "Replicas at the newest scaling decision",
                                labels=["service"])
    desired = GaugeMetricFamily("opsctl_scale_desired_replicas", "Replicas the newest scaling decision wanted",
                                labels=["service"])
    maximum = GaugeMetricFamily("opsctl_scale_max_replicas", "maxReplicas of the service's policy at that decision",
                                labels=["service"])
    for row in sorted(raw.get("scale", []), key=lambda r: r["target"] or ""):
        service, details = row["target"], row.get("details") or {}
        for family, value in ((current, row["from"]), (desired, row["to"]), (maximum, details.get("max_replicas"))):
            number = _number(value)
            if number is not None:
                family.add_metric([service], number)
    out += [current, desired, maximum]
    building = (summary.get("vector_space") or {}).get("building")
    ratio = building["ratio"] if building else 1
    out += [GaugeMetricFamily("opsctl_reembed_progress_ratio", "Chunks the re-embed in progress embedded / "
                              "chunks to embed (1 when none is in progress)", value=ratio),
            GaugeMetricFamily("opsctl_reembed_in_progress", "1 while a re-embed builds a vector space",
                              value=1 if building else 0)]
    return out


class StateCollector(Collector):
    """Reads the state when scraped, at most every ``min_interval`` seconds (then serves the last read)."""

    def __init__(self, connect: Callable[[], Any], min_interval: float = 15.0,
                 clock: Clock = utcnow) -> None:
        self.connect = connect
        self.min_interval = min_interval
        self.clock = clock
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def _read(self) -> list[GaugeMetricFamily] | None:
        from opsctl.daemon.status import fetch, summarize

        try:
            with self.connect() as conn:
                raw = fetch(conn, None)
        except Exception as exc:  # a scrape must never fail: count it and serve nothing stale
            SCRAPE_ERRORS.inc()
            log.warning("state gauges: cannot read the database: %s", exc)
            return None
        return families(raw, summarize(raw, self.clock()))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # registering must not read the database (nor import what registers metrics under the lock)
        for name in NAMES:
            yield GaugeMetricFamily(name, name)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= self.min_interval:
            read = self._read()
            self._cached = None if read is None else (now, read)
        if self._cached is not None:
            yield from self._cached[1]
