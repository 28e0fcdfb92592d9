"""The control loop of ``opsctl daemon`` (patroni's skeleton: flags, cycles, one sentence each).

Every ``cycle_seconds`` the main thread: reloads policies if SIGHUP arrived or a policy file
changed; then, as leader, verifies its lock connection (a dead one means it stops acting at
once), or, as follower, tries to take the lock. APScheduler's threads fire the jobs on every
replica; a job starts only on the leader, and only after claiming its scheduled time on the
lock's connection. Signal handlers only set flags; the loop acts on them.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.config import Settings
from core.db import first_line
from core.errors import ConfigError
from opsctl.daemon import metrics
from opsctl.daemon.leader import LeaderLock, application_name
from opsctl.daemon.policies import PolicySet, load_policy_set, signature
from opsctl.daemon.runner import RunResult, execute, record
from opsctl.daemon.schedule import JobSpec, due_jobs, job_specs, last_fire_time, next_fire_time
from opsctl.policy import PolicyError

log = logging.getLogger("opsctl.daemon")

PRUNE_EVERY = timedelta(hours=1)
FLAG_POLL_SECONDS = 0.2  # how often a sleeping loop looks at the signal flags
KEEP_RUNS = timedelta(days=30)


def utcnow() -> datetime:
    return datetime.now(UTC)



@dataclass
class DaemonConfig:
    policy_dir: Path
    cycle_seconds: float = 5.0
    stop_grace_seconds: float = 60.0
    metrics_port: int = 0  # 0: no /metrics server
    metrics_host: str = "0.0.0.0"


class Daemon:
    def __init__(self, settings: Settings, config: DaemonConfig, clock: Callable[[], datetime] = utcnow) -> None:
        from opsctl.audit import default_actor
        from opsctl.context import database_url

        self.settings = settings
        self.config = config
        self.clock = clock
        self.url = database_url(settings)
        self.actor = default_actor()
        self.name = application_name(self.actor)
        self.lock = LeaderLock(self.url, self.name)
        self.stop_requested = False
        self.reload_requested = False
        self.leading = False  # what this replica last acted as; the lock may drop it from any thread
        self.cycle_no = 0
        self.scheduler: Any = None
        self.specs: dict[str, JobSpec] = {}
        self.active: dict[str, datetime] = {}
        self._active_lock = threading.Lock()
        self._snapshot_root = Path(tempfile.mkdtemp(prefix="opsctl-daemon-"))
        self._seen_signature: Any = None
        self._last_prune: datetime | None = None
        self._metrics_server: Any = None
        self.policies: PolicySet

    def _register_state_gauges(self) -> None:
        """Backup age, partitions, recall and scaling gauges for the alert rules, read when scraped."""
        from prometheus_client import REGISTRY

        from core.db import connect
        from opsctl.daemon.state_metrics import StateCollector

        self._state_collector = StateCollector(lambda: connect(self.url, autocommit=True, connect_timeout=5))
        REGISTRY.register(self._state_collector)

    # -- signals: flags only -------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: Any) -> None:
        # nothing but assignments: even Event.set() takes a lock the interrupted main thread may hold
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_requested = True

    def _sleep(self, seconds: float) -> None:
        """Sleep until the next cycle, or until a signal has set a flag."""
        deadline = time.monotonic() + seconds
        while not (self.stop_requested or self.reload_requested):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(FLAG_POLL_SECONDS, remaining))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Load policies (invalid ones at start are a config error), start /metrics and the scheduler."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        try:
            self.policies = load_policy_set(self.config.policy_dir, self._snapshot_root)
        except PolicyError:
            shutil.rmtree(self._snapshot_root, ignore_errors=True)
            raise
        self._seen_signature = self.policies.signature
        if not self.policies.schedule_from_file:
            log.warning("no %s: using the built-in schedule", self.config.policy_dir / "schedule.yaml")
        if self.config.metrics_port:
            from prometheus_client import start_http_server

            try:
                self._metrics_server, _ = start_http_server(self.config.metrics_port, self.config.metrics_host)
            except OSError as exc:
                raise ConfigError(f"cannot serve /metrics on port {self.config.metrics_port}: {exc}") from exc
            self._register_state_gauges()
        metrics.LEADER.set(0)
        self.scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(16)},
            job_defaults={"coalesce": True, "max_instances": 1})
        self.scheduler.add_listener(self._on_skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self._apply_schedule()
        self.scheduler.start()
        log.info("daemon %s started: %d jobs from %s, cycle %.1f s", self.name, len(self.specs),
                 self.config.policy_dir, self.config.cycle_seconds)

    def run(self) -> list[str]:
        """Serve until SIGTERM/SIGINT; returns the jobs abandoned at shutdown (normally none)."""
        handlers = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.loop()
        finally:
            abandoned = self.shutdown()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return abandoned

    def loop(self) -> None:
        while not self.stop_requested:
            began = time.monotonic()
            self.maybe_reload()
            try:
                sentence = self.cycle(self.clock())
            except Exception as exc:  # a cycle's surprise must not end the daemon
                log.exception("cycle %d failed", self.cycle_no)
                sentence = f"cycle failed: {first_line(exc)}"
            log.info("cycle %d: %s", self.cycle_no, sentence)
            elapsed = time.monotonic() - began
            if elapsed > self.config.cycle_seconds:
                metrics.CYCLE_OVERRUNS.inc()
                log.warning("cycle %d took %.1f s, longer than the %.1f s cycle", self.cycle_no, elapsed,
                            self.config.cycle_seconds)
            self._sleep(self.config.cycle_seconds - elapsed)

    def shutdown(self) -> list[str]:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + self.config.stop_grace_seconds
        with self._active_lock:
            running = sorted(self.active)
        if running:
            log.info("stopping: waiting up to %.0f s for %s", self.config.stop_grace_seconds, ", ".join(running))
        while time.monotonic() < deadline:
            with self._active_lock:
                if not self.active:
                    break
            time.sleep(0.1)
        with self._active_lock:
            abandoned = dict(self.active)
        now = self.clock()
        for job, started in abandoned.items():
            log.warning("abandoning %s after %.0f s: it did not finish within the stop grace period", job,
                        (now - started).total_seconds())
            spec = self.specs.get(job)
            scheduled = (last_fire_time(spec.trigger, started, spec.grace + timedelta(seconds=1)) if spec else None)
            self._record(RunResult(job, scheduled or started, started, now, "failed",
                                   error=f"abandoned at shutdown after {self.config.stop_grace_seconds:.0f} s"))
        was_leader = self.lock.held
        self.lock.release()
        metrics.LEADER.set(0)
        if was_leader:
            self._audit("daemon.leader", from_state="leader", to_state="stopped",
                        reason="stopped: released the leader lock")
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
            from prometheus_client import REGISTRY

            REGISTRY.unregister(self._state_collector)
        shutil.rmtree(self._snapshot_root, ignore_errors=True)
        log.info("daemon %s stopped%s", self.name,
                 f"; abandoned {', '.join(abandoned)}" if abandoned else "")
        return sorted(abandoned)

    # -- one cycle -----------------------------------------------------------------------------
    def cycle(self, now: datetime) -> str:
        self.cycle_no += 1
        if self.leading:
            if not self.lock.verify():  # False too when a job's claim already found the connection dead
                self.leading = False
                metrics.LEADER.set(0)
                running = self._running()
                self._audit("daemon.leader", from_state="leader", to_state="follower",
                            reason="lost the leader lock: its connection failed", details={"cycle": self.cycle_no})
                return ("lost leadership: the lock's connection failed; no job starts here until the lock "
                        "is retaken" + (f" ({running} still finishing)" if running else ""))
            self._prune(now)
            return f"leader: {self._next_runs(now)}" + (f"; running {self._running()}" if self._running() else "")
        try:
            acquired = self.lock.try_acquire()
        except Exception as exc:
            return f"follower: cannot reach PostgreSQL ({first_line(exc)}); retrying"
        if not acquired:
            holder = self.lock.holder()
            who = holder["application_name"] if holder else "another replica"
            return f"follower: {who} leads"
        try:
            last_runs = self.lock.last_runs()
        except Exception as exc:  # without them no catch-up is possible: let go and retry next cycle
            self.lock.release()
            return f"follower: cannot read past runs ({first_line(exc)}); retrying"
        self.leading = True
        metrics.LEADER.set(1)
        due = due_jobs(self.specs, last_runs, now)
        self._audit("daemon.leader", from_state="follower", to_state="leader",
                    reason="acquired the leader lock", details={"cycle": self.cycle_no, "caught_up": sorted(due)})
        for job in sorted(due):
            self._submit_now(job)
        caught = f"; catching up on {', '.join(sorted(due))}" if due else ""
        return f"became leader: {len(self.specs)} jobs scheduled{caught}"

    def _running(self) -> str:
        with self._active_lock:
            return ", ".join(sorted(self.active))

    def _next_runs(self, now: datetime) -> str:
        upcoming = sorted(((next_fire_time(spec.trigger, now), name) for name, spec in self.specs.items()),
                          key=lambda item: (item[0] is None, item[0] or now))
        if not upcoming or upcoming[0][0] is None:
            return "no jobs scheduled"
        at, name = upcoming[0]
        assert at is not None
        return f"{len(self.specs)} jobs scheduled, next {name} in {max(0.0, (at - now).total_seconds()):.0f} s"

    def _prune(self, now: datetime) -> None:
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        from core.db import connect

        try:
            with connect(self.url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("DELETE FROM daemon_runs WHERE scheduled_at < %s", (now - KEEP_RUNS,))
        except Exception as exc:
            log.warning("pruning daemon_runs failed: %s", first_line(exc))

    # -- policies ------------------------------------------------------------------------------
    def maybe_reload(self) -> None:
        if self.reload_requested:
            self.reload_requested = False
            self.reload("SIGHUP")
        elif signature(self.config.policy_dir) != self._seen_signature:
            self.reload("policy files changed")

    def reload(self, why: str) -> bool:
        self._seen_signature = signature(self.config.policy_dir)
        try:
            new = load_policy_set(self.config.policy_dir, self._snapshot_root)
        except PolicyError as exc:
            metrics.RELOAD_ERRORS.inc()
            reasons = [str(p) for p in exc.problems]
            log.error("policy reload (%s) refused, keeping the previous policies: %s", why, "; ".join(reasons))
            self._audit("daemon.reload", to_state="refused", reason=exc.message,
                        details={"trigger": why, "problems": reasons}, change=False)
            return False
        old, self.policies = self.policies, new
        before = {name: (spec.run, spec.when, spec.grace) for name, spec in self.specs.items()}
        self._apply_schedule()
        after = {name: (spec.run, spec.when, spec.grace) for name, spec in self.specs.items()}
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        if not self._running():  # a running job may still read the old snapshot; shutdown removes it then
            shutil.rmtree(old.snapshot, ignore_errors=True)
        log.info("policies reloaded (%s): %s", why, f"jobs changed: {', '.join(changed)}" if changed else
                 "schedule unchanged")
        self._audit("daemon.reload", to_state="loaded", reason=f"policies reloaded ({why})",
                    details={"trigger": why, "files": list(new.files), "jobs_changed": changed})
        return True

    def _apply_schedule(self) -> None:
        specs = job_specs(self.policies.schedule)
        for name in set(self.specs) - set(specs):
            if self.scheduler.get_job(name) is not None:
                self.scheduler.remove_job(name)
        for name, spec in specs.items():
            old = self.specs.get(name)
            if old is not None and (old.run, old.when, old.grace) == (spec.run, spec.when, spec.grace):
                continue
            self.scheduler.add_job(self._fire, spec.trigger, args=[name], id=name, name=name, replace_existing=True,
                                   misfire_grace_time=int(max(1, spec.grace.total_seconds())),
                                   coalesce=True, max_instances=1)
        self.specs = specs

    # -- jobs ----------------------------------------------------------------------------------
    def _submit_now(self, name: str) -> None:
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
        if spec is None or not self.lock.held or self.stop_requested:
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
            if not self.lock.claim(name, scheduled, self.name):
                log.debug("%s at %s: already claimed or not leader; skipping", name, scheduled)
                return
            result = execute(name, spec.run, self.settings, self.policies.snapshot, scheduled, self.clock)
            log.info("%s", result.summary)
            self._record(result)
        finally:
            with self._active_lock:
                self.active.pop(name, None)

    def _record(self, result: RunResult) -> None:
        try:
            record(self.url, result, self.name)
        except Exception as exc:
            log.error("could not record the run of %s: %s", result.job, first_line(exc))

    def _audit(self, action: str, *, change: bool = True, **fields: Any) -> None:
        from core.db import connect
        from opsctl.audit import record as audit

        try:
            with connect(self.url, autocommit=True, connect_timeout=5) as conn:
                audit(conn, action, target=self.name, actor=self.actor, change=change, **fields)
        except Exception as exc:
            log.warning("could not write the %s audit row: %s", action, first_line(exc))


def run_once(settings: Settings, policy_dir: Path, job: str, clock: Callable[[], datetime] = utcnow) -> RunResult:
    """``opsctl daemon --once JOB``: run one job now (no leader election) and record it."""
    from opsctl.audit import default_actor
    from opsctl.context import database_url
    from opsctl.daemon.schedule import REGISTRY, SchedulePolicy

    url = database_url(settings)
    snapshot_root = Path(tempfile.mkdtemp(prefix="opsctl-once-"))
    try:
        policies = load_policy_set(policy_dir, snapshot_root)
        schedule: SchedulePolicy = policies.schedule
        entry = schedule.jobs.get(job)
        target = (entry.run if entry is not None else None) or REGISTRY.get(job)
        if target is None:
            known = sorted(set(schedule.jobs) | set(REGISTRY))
            raise ConfigError(f"unknown job {job!r}: one of {', '.join(known)}")
        now = clock()
        result = execute(job, target, settings, policies.snapshot, now, clock)
        record(url, result, f"once {default_actor()}"[:63])
        return result
    finally:
        shutil.rmtree(snapshot_root, ignore_errors=True)
