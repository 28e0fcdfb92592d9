"""A real PgBouncer (Debian's ``pgbouncer``) in transaction mode in front of the tests' PostgreSQL.

It listens on 127.0.0.1 (a free port) and reaches the embedded server through its Unix socket,
every database by name (``* =``), so each test's own database is reachable through it. Server
connections are reused most-recently-used first (``server_round_robin = 0``, PgBouncer's default,
stated here because the leak test relies on it). PgBouncer refuses to run as root: as root it runs
as PostgreSQL's system user (``pgserver``), which can reach the server's socket. It is a child of
the test process that dies with it (``core.procs.spawn``), like the embedded servers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

MISSING = ("pgbouncer is not installed: the transaction-pooler tests need Debian's `pgbouncer` "
           "(make system-deps, or apt-get install pgbouncer)")
START_SECONDS = 20
DEBIAN_PATH = Path("/usr/sbin/pgbouncer")  # not on a non-root user's PATH


def binary() -> str:
    found = shutil.which("pgbouncer") or (str(DEBIAN_PATH) if DEBIAN_PATH.exists() else None)
    if found is None:
        raise RuntimeError(MISSING)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PgBouncer:
    def __init__(self, root: Path, socket_dir: Path, pg_port: int) -> None:
        self.root = root
        self.socket_dir = socket_dir
        self.pg_port = pg_port
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _write_config(self) -> Path:
        (self.root / "users.txt").write_text('"postgres" ""\n')
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.socket_dir} port={self.pg_port} user=postgres\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "server_round_robin = 0\n"
            "default_pool_size = 4\n"
            "max_client_conn = 500\n"
            "max_db_connections = 0\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        return ini

    def start(self) -> None:
        program = binary()
        from core.embedded import PG_SYSTEM_USER, prepare_for_pg_user
        from core.procs import spawn

        prepare_for_pg_user(self.root)  # as root: owned by pgserver, its parents traversable
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(PG_SYSTEM_USER)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        for _ in range(3):  # a free port may be taken before PgBouncer binds it: try another
            self.port = _free_port()
            ini = self._write_config()
            # a child of this process, stopped when it dies (even by kill -9), like the servers
            self.proc = spawn([program, str(ini)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True, **as_user)
            deadline = time.monotonic() + START_SECONDS
            while self.proc.poll() is None and time.monotonic() < deadline:
                if _answers(self.port):
                    return
                time.sleep(0.05)
            self.stop()
        log = self.root / "pgbouncer.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        raise RuntimeError(f"pgbouncer did not start: {' | '.join(tail) or 'no log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
