"""The daemon's jobs: APScheduler fires them on every replica; one starts only on the leader, and only
after claiming its scheduled time on the lock's connection (``daemon_runs``).

:class:`Jobs` owns the scheduler, the specs it runs, the runs under way, the catch-up of what a
previous leader missed and, at stop, the wait for the running ones (abandoned after the grace,
and recorded as failed). What one run does is :mod:`opsctl.daemon.runner`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.clock import Clock
from core.config import Settings
from core.db import first_line
from opsctl.daemon import metrics
from opsctl.daemon.leader import LeaderLock
from opsctl.daemon.runner import RunResult, execute, record
from opsctl.daemon.schedule import JobSpec, last_fire_time

log = logging.getLogger("opsctl.daemon")


def _key(spec: JobSpec) -> tuple[str, str, timedelta]:
    return spec.run, spec.when, spec.grace


class Jobs:
    """The scheduled jobs of one replica. ``snapshot`` gives the policy directory a run reads now;
    ``stopping`` says the daemon is stopping (no run starts then)."""

    def __init__(self, settings: Settings, url: str, lock: LeaderLock, runner: str, clock: Clock,
                 snapshot: Callable[[], Path], stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.url = url
        self.lock = lock
        self.runner = runner
        self.clock = clock
        self.snapshot = snapshot
        self.stopping = stopping
        self.specs: dict[str, JobSpec] = {}
        self.active: dict[str, datetime] = {}
        self._active_lock = threading.Lock()
        self.scheduler: Any = None

    def start(self, specs: Mapping[str, JobSpec]) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(16)},
            job_defaults={"coalesce": True, "max_instances": 1})
        self.scheduler.add_listener(self._on_skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self.apply(specs)
        self.scheduler.start()

    def apply(self, specs: Mapping[str, JobSpec]) -> list[str]:
        """Schedule ``specs`` in place of the current ones; returns the jobs added, changed or removed."""
        before = {name: _key(spec) for name, spec in self.specs.items()}
        after = {name: _key(spec) for name, spec in specs.items()}
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        for name in changed:
            if name not in specs:
                if self.scheduler.get_job(name) is not None:
                    self.scheduler.remove_job(name)
                continue
            spec = specs[name]
            self.scheduler.add_job(self._fire, spec.trigger, args=[name], id=name, name=name, replace_existing=True,
                                   misfire_grace_time=int(max(1, spec.grace.total_seconds())),
                                   coalesce=True, max_instances=1)
        self.specs = dict(specs)
        return changed

    def running(self) -> list[str]:
        with self._active_lock:
            return sorted(self.active)

    def catch_up(self, due: Mapping[str, datetime]) -> None:
        """Run now what a previous leader missed (``due_jobs``)."""
        for name in sorted(due):
            spec = self.specs[name]
            self.scheduler.add_job(self._fire, "date", run_date=self.clock(), args=[name], id=f"catch-up:{name}",
                                   name=f"{name} (catch-up)", replace_existing=True,
                                   misfire_grace_time=int(max(1, spec.grace.total_seconds())))

    def _on_skipped(self, event: Any) -> None:
        from apscheduler.events import EVENT_JOB_MISSED

        job = str(event.job_id).removeprefix("catch-up:")
        reason = "missed" if event.code == EVENT_JOB_MISSED else "overrun"
        metrics.JOBS_SKIPPED.labels(job, reason).inc()
        if reason == "overrun":
            log.warning("%s: the previous run is still going, so this scheduled run is skipped (overrun)", job)

    def _fire(self, name: str) -> None:
        """What APScheduler calls on every replica: only the leader, with a fresh claim, runs the job."""
        spec = self.specs.get(name)
        if spec is None or not self.lock.held or self.stopping():
            return
        now = self.clock()
        scheduled = last_fire_time(spec.trigger, now, spec.grace + timedelta(seconds=1)) or now
        with self._active_lock:
            if name in self.active:
                metrics.JOBS_SKIPPED.labels(name, "overrun").inc()
                log.warning("%s: the run started at %s is still going; skipping the run of %s (overrun)",
                            name, self.active[name].isoformat(timespec="seconds"),
                            scheduled.isoformat(timespec="seconds"))
                return
            self.active[name] = now
        try:
            if not self.lock.claim(name, scheduled, self.runner):
                log.debug("%s at %s: already claimed or not leader; skipping", name, scheduled)
                return
            result = execute(name, spec.run, self.settings, self.snapshot(), scheduled, self.clock)
            log.info("%s", result.summary)
            self._record(result)
        finally:
            with self._active_lock:
                self.active.pop(name, None)

    def _record(self, result: RunResult) -> None:
        try:
            record(self.url, result, self.runner)
        except Exception as exc:
            log.error("could not record the run of %s: %s", result.job, first_line(exc))

    def stop(self, grace_seconds: float) -> list[str]:
        """Start nothing more; wait up to ``grace_seconds`` for the runs under way, then record what is
        still running as failed (abandoned). Returns the abandoned jobs."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        running = self.running()
        if running:
            log.info("stopping: waiting up to %.0f s for %s", grace_seconds, ", ".join(running))
        deadline = time.monotonic() + grace_seconds
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._active_lock:
            abandoned = dict(self.active)
        now = self.clock()
        for job, started in abandoned.items():
            log.warning("abandoning %s after %.0f s: it did not finish within the stop grace period", job,
                        (now - started).total_seconds())
            spec = self.specs.get(job)
            scheduled = last_fire_time(spec.trigger, started, spec.grace + timedelta(seconds=1)) if spec else None
            self._record(RunResult(job, scheduled or started, started, now, "failed",
                                   error=f"abandoned at shutdown after {grace_seconds:.0f} s"))
        return sorted(abandoned)
