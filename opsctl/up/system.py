"""``opsctl up``: the whole system in one process tree that it owns.

Order of start: the data dir's lock (a second ``opsctl up`` on it is refused at once) → what a
dead instance left running is stopped → PostgreSQL → migrations → Redis → Prometheus → worker
pool → API → daemon (once the API serves: its autoscale job resizes the pool through
``/admin/workers``). A supervisor restarts a child that dies (``opsctl.up.supervisor``). Order
of stop is the reverse, each step graceful (``opsctl.up.stopping``): the daemon stops while the
API still serves (its running job may be calling it), the API stops accepting, workers finish
or release their batch (a batch is one transaction, so nothing accepted is lost either way),
then the servers shut down. A second Ctrl-C kills what is left.

Signals (``opsctl.up.signals``) are handled from before the first step to after the last: a
SIGINT, SIGTERM or SIGHUP during the start (initdb and migrations can take minutes) gives up at
the next step, or in the wait for a server to be ready, and stops what has started, in order.
Their handler only sets flags: the stop looks at them in each wait, and escalates.

Shutdown depends on nothing outside: every message is best-effort (``opsctl.up.terminal``: the
terminal or the pipe to ``tee`` may be gone), and a step that fails is reported and the next one
runs. Every child gets a signal from the kernel if ``opsctl up`` dies without stopping them
(``core.procs.spawn``); the next start stops whatever survived (``opsctl.up.leftovers``).

Any URL set in the settings (``OPSCTL_DATABASE_URL`` …) is used instead of starting that server.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import Settings, read_state, write_state
from core.errors import ConfigError, ServiceUnavailable
from core.replicas.route import replica_names
from core.supervision import DATA_DIR_ENV
from opsctl.policy import policy_dir
from opsctl.up.leftovers import clean_leftovers
from opsctl.up.lock import InstanceLock
from opsctl.up.resume import workers_to_start
from opsctl.up.server import api_server
from opsctl.up.signals import StopRequested, StopSignals
from opsctl.up.stopping import Step, StopSequence, announce
from opsctl.up.supervisor import Child, Supervisor

log = logging.getLogger("opsctl.up")


def pushes_wal() -> bool:
    """Whether the backup policy has the embedded server's WAL shipped off the host (physical mode and
    a remote repository): then ``opsctl up`` runs ``opsctl wal push --loop`` as a supervised child."""
    from opsctl.backup.policy import load_policy

    policy = load_policy()
    return policy.mode == "physical" and bool(policy.remotes)


def tenants_policy_file(configured: Path | None, policies: Path) -> Path | None:
    """The tiers ``opsctl up`` runs with: ``tenants_policy`` when set, else the policy directory's
    ``tenants.yaml`` when there is one (as every other policy comes from there), else none (one
    built-in tier without quotas)."""
    if configured is not None:
        return configured
    found = policies / "tenants.yaml"
    return found.resolve() if found.is_file() else None  # absolute: the workers run it too


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class System:
    settings: Settings
    workers: int | None = None  # None: the autoscaler's last count when recent (opsctl.up.workers), else 2
    port: int = 8080
    prometheus_port: int = 9090
    with_prometheus: bool = True
    with_daemon: bool = True
    replicas: int = 0  # streaming standbys of the embedded PostgreSQL (opsctl.up.replicas)
    started: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = self.settings.data_dir.resolve()
        self.pg: Any = None
        self.standbys: list[Any] = []  # core.standby.EmbeddedStandby, started after the primary
        self.read_replicas: Any = None  # core.replicas.reader.ReplicaSet of the API
        self.services: Any = None  # core.api.Services of the API (its usage recorder flushes at stop)
        self.redis: Any = None
        self.prometheus: Any = None
        self.pool: Any = None
        self.cache: Any = None
        self.worker_pool: Any = None
        self.daemon: Any = None
        self.wal_push: Any = None  # opsctl.up.walpush.WalPushProcess, when a remote repository is configured
        self.supervisor: Any = None
        self.endpoints: dict[str, str] = {}
        self.notes: list[str] = []  # what the start chose that the user should know: shown with the endpoints
        self.workers_why = ""
        self.lock = InstanceLock(self.data_dir)
        self.signals = StopSignals()
        self._stopping: StopSequence | None = None
        self._stop_lock = threading.Lock()

    # -- start ---------------------------------------------------------------------------------
    def start(self, progress: Any = None) -> None:
        """Start everything, in order; a signal meanwhile raises ``StopRequested`` (then call ``stop``)."""
        self.signals.install()  # first: from here on, a signal stops what has started, in order
        try:
            self._start(progress)
        except Exception as exc:
            if self.signals.stop.is_set():  # a step cut short by the stop (initdb's own Ctrl-C, a wait given up)
                raise StopRequested() from exc
            raise
        self.signals.check()

    def _start(self, progress: Any) -> None:
        from core.cache import Cache
        from core.db import make_pool, migrate
        from core.embedded import EmbeddedPostgres, EmbeddedPrometheus, EmbeddedRedis, prometheus_binary
        from core.spaces.follow import follow_database
        from core.workerpool import WorkerPool

        def step(text: str) -> None:
            self.signals.check()
            log.info("%s", text)
            if progress is not None:
                progress(text)

        abort = self.signals.stop
        self.lock.acquire()  # first: nothing is touched while another opsctl up owns the data dir
        # every child, and whatever it starts, carries the data dir: the next start's clean-up checks it
        os.environ[DATA_DIR_ENV] = str(self.data_dir)
        previous = read_state(self.data_dir)
        admin_token = self.settings.admin_token or previous.get("admin_token") or secrets.token_urlsafe(24)
        if not port_free(self.settings.host, self.port):
            raise ServiceUnavailable(f"port {self.port} is in use: choose another with --port N "
                                     f"(make up ARGS=\"--port N\", or OPSCTL_PORT=N)")
        step("checking for leftovers of an earlier run")
        clean_leftovers(self.data_dir, self.data_dir / "pg", say=lambda text: log.warning("%s", text))
        self.supervisor = Supervisor(self.data_dir)

        s = self.settings
        if self.replicas and s.database_url:
            raise ConfigError("--replicas starts standbys of the embedded PostgreSQL: with OPSCTL_DATABASE_URL set, "
                              "name your replicas in OPSCTL_DATABASE_REPLICA_URLS instead")
        db_url = s.database_url
        if not db_url:
            step("starting PostgreSQL")
            from opsctl.backup.archive import embedded_conf
            from opsctl.slowqueries.plan import SERVER_CONF

            # the log as JSON files the database reads back (`opsctl slow-queries`)
            self.pg = EmbeddedPostgres(self.data_dir / "pg", extra_conf=(*embedded_conf(self.data_dir), *SERVER_CONF))
            db_url = self.pg.start(abort=abort)
            if self.pg.proc is None:  # running already, and not recognised as a leftover (see leftovers.py)
                log.warning("PostgreSQL was already running on %s (pid %s): using it, but it is not opsctl up's "
                            "child: it is not restarted if it dies, nor stopped if opsctl up is killed",
                            self.pg.data_dir, self.pg.pid())
            self.supervisor.add(Child("postgres", self.pg, lambda abort: self.pg.start(abort=abort)))
            self.started.append("postgres")
        direct_url = s.direct_url or db_url  # a session of its own (migrations take an advisory lock)
        step("applying migrations")
        migrate(direct_url, s)
        replica_urls = self._start_standbys(step, abort) if self.replicas else list(s.database_replica_urls)
        api_url = f"http://{s.host}:{self.port}"
        chosen = workers_to_start(self.workers, direct_url, policy_dir(), api_url, datetime.now(UTC))
        self.workers, self.workers_why = chosen.count, chosen.why
        log.info("workers: %d (%s)", chosen.count, chosen.why)
        redis_url = s.redis_url
        if not redis_url:
            step("starting Redis")
            self.redis = EmbeddedRedis(self.data_dir / "redis")
            redis_url = self.redis.start(abort=abort)
            self.supervisor.add(Child("redis", self.redis, lambda abort: self.redis.start(abort=abort)))
            self.started.append("redis")
        prom_url = s.prometheus_url
        targets_file: Path | None = None
        daemon_port = _free_port() if self.with_daemon else 0
        wal_push_port = _free_port() if self.pg is not None and pushes_wal() else 0
        if not prom_url and self.with_prometheus and prometheus_binary():
            step("starting Prometheus")
            port = self.prometheus_port
            if not port_free("127.0.0.1", port):
                port = _free_port()
                self._note(f"Prometheus: port {self.prometheus_port} is in use, so it listens on {port} (choose with "
                           f"--prometheus-port N: make up ARGS=\"--prometheus-port N\", or OPSCTL_PROMETHEUS_PORT=N)")
            self.prometheus = EmbeddedPrometheus(
                self.data_dir / "prometheus", f"{s.host}:{self.port}", port=port,
                extra_targets=tuple((job, f"127.0.0.1:{port}") for job, port in
                                    (("opsctl-daemon", daemon_port), ("opsctl-wal-push", wal_push_port)) if port))
            targets_file = self.prometheus.worker_targets_file
            self.prometheus.data_dir.mkdir(parents=True, exist_ok=True)
            prom_url = self.prometheus.start(abort=abort)
            self.supervisor.add(Child("prometheus", self.prometheus,
                                      lambda abort: self.prometheus.start(abort=abort)))
            self.started.append("prometheus")

        tiers = tenants_policy_file(s.tenants_policy, policy_dir())
        self.settings = s.model_copy(update={"database_url": db_url, "database_replica_urls": replica_urls,
                                             "redis_url": redis_url,
                                             "prometheus_url": prom_url, "api_url": api_url,
                                             "admin_token": admin_token, "tenants_policy": tiers})
        env = {"OPSCTL_DATABASE_URL": db_url, "OPSCTL_REDIS_URL": redis_url,
               "OPSCTL_DATA_DIR": str(self.data_dir), "OPSCTL_LOG_FORMAT": s.log_format,
               "OPSCTL_DATABASE_POOL_MODE": s.database_pool_mode,
               **({"OPSCTL_DATABASE_DIRECT_URL": s.database_direct_url} if s.database_direct_url else {}),
               **({"OPSCTL_TENANTS_POLICY": str(tiers)} if tiers else {})}
        step(f"starting {self.workers} workers")
        self.worker_pool = WorkerPool(env=env, replicas=self.workers, log_dir=self.data_dir / "logs",
                                      targets_file=targets_file)
        self.worker_pool.start()
        self.supervisor.watch_pool(self.worker_pool)
        self.started.append("workers")
        step("opening the API")
        self.pool = make_pool(db_url, self.settings)
        with self.pool.connection() as conn:
            self.embedder = follow_database(self.settings, conn)  # the database's active vector space
        self.cache = Cache(redis_url, self.settings.redis_timeout_seconds)
        self.endpoints = {"api": api_url, "metrics": f"{api_url}/metrics", "database": db_url,
                          **{name: url for name, url in zip(replica_names(len(replica_urls)), replica_urls,
                                                            strict=True)},
                          "redis": redis_url}
        if prom_url:
            self.endpoints["prometheus"] = prom_url
        write_state(self.data_dir, {
            "data_dir": str(self.data_dir), "database_url": db_url, "database_pool_mode": s.database_pool_mode,
            "database_direct_url": s.database_direct_url, "database_replica_urls": replica_urls,
            "redis_url": redis_url, "prometheus_url": prom_url,
            "api_url": api_url, "admin_token": admin_token, "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(),
        })
        if wal_push_port:
            step("starting the WAL pusher")
            from opsctl.up.walpush import WalPushProcess

            self.wal_push = WalPushProcess(env, wal_push_port, log_dir=self.data_dir / "logs")
            self.wal_push.start()
            self.supervisor.add(Child("wal-push", self.wal_push, self.wal_push.restart))
            self.started.append("wal-push")
            self.endpoints["wal push metrics"] = f"http://127.0.0.1:{wal_push_port}/metrics"
        if self.with_daemon:
            from opsctl.daemon.process import DaemonProcess

            daemon_env = {**env, "OPSCTL_API_URL": api_url, "OPSCTL_ADMIN_TOKEN": admin_token,
                          **({"OPSCTL_PROMETHEUS_URL": prom_url} if prom_url else {})}
            self.daemon = DaemonProcess(daemon_env, daemon_port, log_dir=self.data_dir / "logs")  # serve() starts it
            self.endpoints["daemon metrics"] = f"http://127.0.0.1:{daemon_port}/metrics"
        self.supervisor.start()

    def _start_standbys(self, step: Callable[[str], None], abort: Any) -> list[str]:
        """Start (copying the primary the first time) standbys 1..N, supervised; their URLs."""
        from core.standby import EmbeddedStandby, drop_stale_slots

        for index in range(1, self.replicas + 1):
            standby = EmbeddedStandby.of(self.pg, index)
            copying = "" if standby.initialised() else ": copying the primary"
            step(f"starting {standby.name} (a streaming standby{copying})")
            standby.start(abort=abort)
            self.standbys.append(standby)
            self.supervisor.add(Child(standby.name, standby, standby.restart))
            self.started.append(standby.name)
        for slot in drop_stale_slots(self.pg, keep=self.replicas):
            self._note(f"dropped the replication slot {slot} of a standby this start does not run")
        return [standby.url for standby in self.standbys]

    def _note(self, text: str) -> None:
        log.info("%s", text)
        self.notes.append(text)

    def app(self) -> Any:
        from prometheus_client import REGISTRY

        from core.api import Services, create_app
        from core.metrics import api_collectors
        from core.replicas.reader import make_replicas

        self.collectors = api_collectors(self.pool, self.cache, usage_top=self.settings.usage_metrics_top,
                                         queue_top=self.settings.metrics_queue_top_companies)
        for collector in self.collectors:
            REGISTRY.register(collector)
        self.read_replicas = make_replicas(self.settings, self.pool)
        self.services = Services(self.settings, self.pool, self.cache, self.embedder, self.worker_pool,
                                 self.read_replicas)
        return create_app(self.services)

    # -- run -----------------------------------------------------------------------------------
    def serve(self, on_serving: Callable[[], None] | None = None) -> None:
        """Serve the API until SIGINT/SIGTERM/SIGHUP, then stop everything (a second signal forces).
        ``on_serving`` (the banner) runs once the API listens: the lines it prints work at once."""
        import uvicorn

        # json: uvicorn's own records go through the root logger's JSON handler, not its text config
        log_config = uvicorn.config.LOGGING_CONFIG if self.settings.log_format == "text" else None
        config = uvicorn.Config(self.app(), host=self.settings.host, port=self.port, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=10, log_config=log_config)
        server = api_server(config, self.signals, before_shutdown=self.stop_before_api)
        if self.daemon is not None or on_serving is not None:
            threading.Thread(target=self._when_serving, args=(server, on_serving), name="when-serving",
                             daemon=True).start()
        try:
            server.run()
        finally:
            self.stop()

    def _when_serving(self, server: Any, on_serving: Callable[[], None] | None) -> None:
        while not (server.started or server.should_exit or (self.daemon is not None and self.daemon.stopped)):
            time.sleep(0.05)
        if not server.started or server.should_exit:
            return
        if on_serving is not None:
            on_serving()
        if self.daemon is not None:
            self.daemon.start()  # a no-op once stop() has begun
            if self.daemon.proc is not None:
                self.supervisor.add(Child("daemon", self.daemon, self.daemon.restart))  # nothing to wait for
                self.started.append("daemon")

    # -- stop ----------------------------------------------------------------------------------
    def stop_before_api(self) -> None:
        """Called by the API's shutdown while it still serves: the supervisor (nothing restarts from
        here on) and the daemon stop first, so the daemon's running job, which may be calling the
        API's ``/admin/workers``, finishes against a live API."""
        if self.lock.held:
            self.signals.stop.set()  # (set by the signal already; a stop that did not come from one)
            self._stop_sequence().run(through="the daemon")

    def stop(self) -> None:
        """Stop everything this process started, whatever happens: a failing step (or a closed
        terminal) is reported and the next one runs. A second SIGINT/SIGTERM (``self.signals.force``)
        cuts the step in progress short and kills what is left."""
        if not self.lock.held:
            self.signals.restore()
            return  # refused, or stopped already: nothing here is ours
        self.signals.install()  # (installed by start(); again in case stop() is called without it)
        self.signals.stop.set()  # stopping: the next SIGINT/SIGTERM forces
        try:
            sequence = self._stop_sequence()
            sequence.run()
            if (summary := sequence.summary()) is not None:
                announce(summary)
        finally:
            self.signals.restore()
            self.lock.release()

    def _stop_sequence(self) -> StopSequence:
        """The stop's steps, in order (built once: the API's shutdown runs the first ones)."""
        with self._stop_lock:
            if self._stopping is None:
                self._stopping = StopSequence(self._stop_steps(), self.signals.force)
            return self._stopping

    def _stop_steps(self) -> list[Step]:
        force = self.signals.force

        def live(*servers: Any) -> Callable[[], list[subprocess.Popen[bytes]]]:
            """The processes of ``servers`` still unreaped before a step: looked at again after it."""
            return lambda: [p for srv in servers if srv is not None and (p := srv.proc) is not None
                            and p.returncode is None]

        def live_workers() -> list[subprocess.Popen[bytes]]:
            return [w.proc for w in self.worker_pool.workers if w.proc.returncode is None] if self.worker_pool else []

        # a child's stop, gracefully and once forced (every graceful wait gives up when forced); None: bookkeeping
        return [
            Step(None, self.supervisor and self.supervisor.stop),  # no restarts from here on
            Step("the daemon", self.daemon and (lambda: self.daemon.stop(abort=force)),
                 self.daemon and self.daemon.kill, live(self.daemon), " (its running job finishes)"),
            # (the API stops here when it served: stop_before_api ran the steps above from its shutdown)
            Step("the WAL pusher", self.wal_push and (lambda: self.wal_push.stop(abort=force)),
                 self.wal_push and self.wal_push.kill, live(self.wal_push), " (its uploads under way finish)"),
            Step("workers", self.worker_pool and (lambda: self.worker_pool.stop(abort=force)),
                 self.worker_pool and self.worker_pool.kill_all, live_workers,
                 " (each finishes or releases its batch)"),
            Step(None, self.read_replicas and self.read_replicas.close),
            Step(None, self.services and self.services.close),  # the usage counted since the last flush
            Step(None, self.pool and self.pool.close),
            Step(None, self.cache and self.cache.close),
            Step(None, self._unregister_collector),
            Step("Prometheus", self.prometheus and (lambda: self.prometheus.stop(abort=force)),
                 self.prometheus and self.prometheus.kill, live(self.prometheus)),
            Step("Redis", self.redis and (lambda: self.redis.stop(abort=force)), self.redis and self.redis.kill,
                 live(self.redis)),
            *[Step(sb.name, lambda sb=sb: sb.stop(abort=force), sb.kill, live(sb), stop_signal=signal.SIGINT)
              for sb in reversed(self.standbys)],
            Step("PostgreSQL", self.pg and (lambda: self.pg.stop(abort=force)), self.pg and self.pg.kill,
                 live(self.pg), stop_signal=signal.SIGINT),  # a fast shutdown
            Step(None, self._record_stopped),
        ]

    def _unregister_collector(self) -> None:
        from prometheus_client import REGISTRY

        for collector in getattr(self, "collectors", ()):
            REGISTRY.unregister(collector)
        self.collectors = []

    def _record_stopped(self) -> None:
        if self.supervisor is not None:
            self.supervisor.write(stopped=True)
        state = read_state(self.data_dir)
        if state.get("pid") == os.getpid():
            state.pop("pid", None)
            state["stopped_at"] = datetime.now(UTC).isoformat()
            write_state(self.data_dir, state)


def _free_port() -> int:
    from core.workerpool import free_port

    return free_port()
