"""``opsctl daemon``: the control loop that enforces ``policies/`` (patroni's shape, in four parts).

* :mod:`opsctl.daemon.loop` — the skeleton: signal flags, one guarded cycle every
  ``cycle_seconds`` (a pending reload, then the cycle), one sentence each, overruns warned about;
* :mod:`opsctl.daemon.role` — the pure role decision: lead or follow after one look at the lock;
* :mod:`opsctl.daemon.jobs` — the jobs: APScheduler on every replica, a run only on the leader
  after claiming its scheduled time on the lock's connection;
* this module wires them: the policy snapshots (reload: a new set or a refusal that keeps the
  old one, whatever failed), the leader transitions recorded in ``ops_events``, pruning
  (:mod:`opsctl.daemon.retention`) and the ``/metrics`` server (:mod:`opsctl.daemon.exporter`).

A bad set at start is refused like a bad reload, never a crash: with no previous set there is
nothing to enforce, so the replica stays up without leading or running a job (not ready,
``opsctl_daemon_policies_loaded`` 0, the refusal recorded for ``opsctl status``) and loads the
files as soon as they change to a valid set (or on SIGHUP). A pod restarted while its ConfigMap
holds a bad file waits for the fix instead of crash-looping.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.clock import Clock, utcnow
from core.config import Settings
from core.db import first_line
from core.errors import OpsError
from opsctl.daemon import metrics
from opsctl.daemon.exporter import Exporter
from opsctl.daemon.jobs import Jobs
from opsctl.daemon.leader import LeaderLock, application_name
from opsctl.daemon.loop import ControlLoop
from opsctl.daemon.policies import PolicySet, load_policy_set, signature
from opsctl.daemon.retention import Pruner, Retention
from opsctl.daemon.role import decide_role
from opsctl.daemon.schedule import JobSpec, job_specs
from opsctl.policy import PolicyError

log = logging.getLogger("opsctl.daemon")

NOT_ENFORCING = ("no valid policy set: not leading, no job runs until the policy files are fixed "
                 "(an edit or SIGHUP reloads them)")


@dataclass
class DaemonConfig:
    policy_dir: Path
    cycle_seconds: float = 5.0
    stop_grace_seconds: float = 60.0
    metrics_port: int = 0  # 0: no /metrics server
    metrics_host: str = "0.0.0.0"
    retention: Retention = field(default_factory=Retention)


def _problems(exc: Exception) -> list[str]:
    if isinstance(exc, PolicyError):
        return [str(p) for p in exc.problems]
    return [exc.message if isinstance(exc, OpsError) else f"{type(exc).__name__}: {first_line(exc)}"]


class Daemon(ControlLoop):
    def __init__(self, settings: Settings, config: DaemonConfig, clock: Clock = utcnow) -> None:
        from opsctl.audit import default_actor
        from opsctl.context import database_url

        super().__init__(config.cycle_seconds, clock=clock, log=log, overruns=metrics.CYCLE_OVERRUNS)
        self.settings = settings
        self.config = config
        self.url = database_url(settings)
        self.actor = default_actor()
        self.name = application_name(self.actor)
        self.lock = LeaderLock(self.url, self.name)
        self.leading = False  # what this replica last acted as; the lock may drop it from any thread
        self.jobs = Jobs(settings, self.url, self.lock, self.name, clock, self._snapshot, lambda: self.stop_requested)
        self.prune = Pruner(self.url, config.retention)
        self.exporter = (Exporter(self.url, config.metrics_port, config.metrics_host, ready=self.enforcing,
                                  volumes=self.volumes, certificates=self.certificates)
                         if config.metrics_port else None)
        self._snapshot_root = Path(tempfile.mkdtemp(prefix="opsctl-daemon-"))
        self._seen_signature: Any = None
        self.policies: PolicySet | None = None  # the set in force; None until a valid set has loaded

    @property
    def specs(self) -> dict[str, JobSpec]:
        return self.jobs.specs

    def enforcing(self) -> bool:
        """Whether a valid policy set is in force (the readiness of this replica)."""
        return self.policies is not None

    def volumes(self) -> dict[str, Path]:
        """This host's volumes (``opsctl_disk_*_bytes``), from the backup policy in force (the files'
        while no valid set has loaded: the disks fill up all the same)."""
        from opsctl.backup.policy import load_policy
        from opsctl.daemon.disks import host_volumes

        directory = self.policies.snapshot if self.policies is not None else self.config.policy_dir
        return host_volumes(self.settings.data_dir, load_policy(directory=directory))

    def certificates(self) -> list[Any]:
        """The certificate files of this replica's database and Redis connections (``opsctl.daemon.certs``)."""
        import os

        from opsctl.daemon.certs import connection_files

        return connection_files(self.settings, os.environ, Path.home())

    def _snapshot(self) -> Path:
        assert self.policies is not None, "no job runs before a valid set has loaded"
        return self.policies.snapshot

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start /metrics and the scheduler, then load the policies. A bad set is refused (recorded,
        counted, shown) and the daemon stays up without leading until a valid set loads; only what
        is no policy file's problem (a /metrics port that cannot be bound) is a ConfigError."""
        metrics.LEADER.set(0)
        metrics.POLICIES_LOADED.set(0)
        if self.exporter is not None:
            self.exporter.start()
        self.jobs.start({})
        log.info("%s", self.reload("start"))
        log.info("daemon %s started: %d jobs from %s, cycle %.1f s", self.name, len(self.specs),
                 self.config.policy_dir, self.config.cycle_seconds)

    def shutdown(self) -> list[str]:
        """Stop the jobs (the running ones get the stop grace), let go of the lock; returns the abandoned jobs."""
        abandoned = self.jobs.stop(self.config.stop_grace_seconds)
        was_leader = self.lock.held
        self.lock.release()
        metrics.LEADER.set(0)
        if was_leader:
            self._audit("daemon.leader", from_state="leader", to_state="stopped",
                        reason="stopped: released the leader lock")
        if self.exporter is not None:
            self.exporter.stop()
        shutil.rmtree(self._snapshot_root, ignore_errors=True)
        log.info("daemon %s stopped%s", self.name, f"; abandoned {', '.join(abandoned)}" if abandoned else "")
        return abandoned

    # -- one cycle -----------------------------------------------------------------------------
    def cycle(self, now: datetime) -> str:
        """Look at the lock once, decide the role (pure), act on the transition. Without a valid policy
        set there is nothing to enforce: the lock is not even tried, so a replica that has one leads."""
        if self.policies is None:
            return NOT_ENFORCING
        role = decide_role(self.leading, self.lock.check(self.leading), self.specs, now, self.jobs.running())
        if role.release:
            self.lock.release()
        self.leading = role.leading
        metrics.LEADER.set(1 if role.leading else 0)
        if role.transition == "lost":
            self._audit("daemon.leader", from_state="leader", to_state="follower",
                        reason="lost the leader lock: its connection failed", details={"cycle": self.cycle_no})
        elif role.transition == "acquired":
            self._audit("daemon.leader", from_state="follower", to_state="leader", reason="acquired the leader lock",
                        details={"cycle": self.cycle_no, "caught_up": sorted(role.catch_up)})
            self.jobs.catch_up(role.catch_up)
        elif role.leading:
            self.prune(now)
        return role.sentence

    # -- policies ------------------------------------------------------------------------------
    def reload_trigger(self) -> str | None:
        if self.reload_requested:
            return "SIGHUP"
        return "policy files changed" if signature(self.config.policy_dir) != self._seen_signature else None

    def reload(self, why: str) -> str:
        """Switch to the policies on disk, or refuse them and keep the previous set — whatever failed.
        ``why`` is ``start`` for the first load."""
        self._seen_signature = signature(self.config.policy_dir)
        new: PolicySet | None = None
        try:
            new = load_policy_set(self.config.policy_dir, self._snapshot_root)
            specs = job_specs(new.schedule)
        except Exception as exc:  # every failure of loading: counted, logged, recorded; the old set stays
            if new is not None:
                shutil.rmtree(new.snapshot, ignore_errors=True)
            return self._refuse(why, exc)
        old, self.policies = self.policies, new
        changed = self.jobs.apply(specs)
        metrics.POLICIES_LOADED.set(1)
        if old is not None and not self.jobs.running():  # a running job may still read the old snapshot
            shutil.rmtree(old.snapshot, ignore_errors=True)  # (shutdown removes it then)
        if not new.schedule_from_file:
            log.warning("no %s: using the built-in schedule", self.config.policy_dir / "schedule.yaml")
        if why == "start":
            self._audit("daemon.reload", to_state="loaded", reason="policies loaded (start)", change=False,
                        details={"trigger": why, "files": list(new.files), "jobs": sorted(specs)})
            return f"policies loaded (start): {len(specs)} jobs"
        summary = f"jobs changed: {', '.join(changed)}" if changed else "schedule unchanged"
        if old is None:
            summary = f"the first valid set, enforcing {len(specs)} jobs"
        log.info("policies reloaded (%s): %s", why, summary)
        self._audit("daemon.reload", to_state="loaded", reason=f"policies reloaded ({why})", change=bool(changed),
                    details={"trigger": why, "files": list(new.files), "jobs_changed": changed})
        return f"policies reloaded ({why}): {summary}"

    def _refuse(self, why: str, exc: Exception) -> str:
        metrics.RELOAD_ERRORS.inc()
        problems = _problems(exc)
        enforcing = self.policies is not None
        keeps = "keeping the previous policies" if enforcing else \
            "no valid set loaded: this replica enforces nothing and does not lead until the files are fixed"
        log.error("policy %s (%s) refused, %s: %s", "reload" if why != "start" else "load", why, keeps,
                  "; ".join(problems), exc_info=None if isinstance(exc, PolicyError) else exc)
        reason = exc.message if isinstance(exc, OpsError) else problems[0]
        self._audit("daemon.reload", to_state="refused", reason=reason, change=False,
                    details={"trigger": why, "problems": problems, "enforcing": enforcing})
        if enforcing:
            return f"policy reload ({why}) refused, the previous policies stay: {problems[0]}"
        return f"policies refused ({why}): {problems[0]}"  # the cycle's sentence says what that means

    # -- the record ----------------------------------------------------------------------------
    def _audit(self, action: str, *, change: bool = True, **fields: Any) -> None:
        from core.db import connect
        from opsctl.audit import record as audit

        try:
            with connect(self.url, autocommit=True, connect_timeout=5) as conn:
                audit(conn, action, target=self.name, actor=self.actor, change=change, **fields)
        except Exception as exc:
            log.warning("could not write the %s record: %s", action, first_line(exc))
