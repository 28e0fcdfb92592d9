"""A PostgreSQL cluster of its own per backup test (archiving is per cluster), and small data."""

from __future__ import annotations

import contextlib
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from core.config import Settings
from core.db import migrate
from core.embedded import EmbeddedPostgres
from opsctl.backup.archive import server_conf
from opsctl.backup.policy import BackupPolicy
from tests.conftest import make_settings, outside_pytest_tmp


@dataclass
class Cluster:
    root: Path
    pg: EmbeddedPostgres
    settings: Settings
    policy: BackupPolicy

    @property
    def url(self) -> str:
        return self.pg.url

    def connect(self) -> psycopg.Connection[Any]:
        from pgvector.psycopg import register_vector

        conn = psycopg.connect(self.url, autocommit=True)
        register_vector(conn)
        return conn


@contextmanager
def archived_cluster(**policy: Any) -> Iterator[Cluster]:
    root = outside_pytest_tmp("opsctl-test-backup-")
    pol = BackupPolicy.model_validate({"repository": str(root / "repo"), "fsync": False, **policy})
    # test clusters are throwaway: no fsync, so checkpoints and backups do not wait for the shared disk
    pg = EmbeddedPostgres(root / "pg", extra_conf=(*server_conf(pol, root), "fsync = off"))
    try:
        pg.start()
        settings = make_settings(database_url=pg.url, data_dir=root)
        migrate(pg.url, settings)
        yield Cluster(root, pg, settings, pol)
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def add_documents(conn: psycopg.Connection[Any], company: int, prefix: str, n: int, seed: int = 0) -> None:
    """``n`` documents with two chunks each, in one transaction (one commit time)."""
    import numpy as np

    rng = random.Random(seed)
    with conn.transaction():
        for i in range(n):
            text = f"{prefix} document {i} " + " ".join(rng.choice(["fox", "dog", "owl", "cat"]) for _ in range(20))
            row = conn.execute(
                "INSERT INTO documents (company_id, external_id, title, body, content_hash, created_at)"
                " VALUES (%s, %s, %s, %s, sha256(%s::bytea), now()) RETURNING id",
                (company, f"{prefix}-{i}", prefix, text, text.encode())).fetchone()
            assert row is not None
            for ord_ in range(2):
                vec = np.array([rng.gauss(0, 1) for _ in range(384)], dtype=np.float32)
                conn.execute("INSERT INTO chunks (company_id, document_id, external_id, ord, body, embedding,"
                             " created_at) VALUES (%s, %s, %s, %s, %s, %s, now())",
                             (company, row[0], f"{prefix}-{i}", ord_, text, vec))


def company(conn: psycopg.Connection[Any], name: str) -> int:
    from core.tenants import create_company

    return int(create_company(conn, name).company_id)


@contextmanager
def stalling_proxy(cluster: Cluster, threshold: int, at_stall: Callable[[], None]) -> Iterator[str]:
    """A URL to ``cluster`` through a Unix-socket proxy that, once a connection has carried
    ``threshold`` bytes from the server, holds that stream while ``at_stall()`` runs.

    A base backup of a cluster larger than ``threshold`` plus the socket buffers is then certainly
    running (started, not stopped: the server cannot send the rest) when ``at_stall`` acts: an event,
    not a race. Ordinary connections never carry that much and pass untouched.
    """
    import os
    import socket
    import threading

    from core.embedded import pg_url, prepare_for_pg_user

    run_dir = cluster.root / "proxy"
    prepare_for_pg_user(run_dir)
    os.chmod(run_dir, 0o777)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(run_dir / f".s.PGSQL.{cluster.pg.port}"))
    os.chmod(run_dir / f".s.PGSQL.{cluster.pg.port}", 0o777)
    listener.listen(16)
    fired = threading.Lock()

    def pump(src: socket.socket, dst: socket.socket, watch: bool) -> None:
        carried = 0
        try:
            while chunk := src.recv(65536):
                carried += len(chunk)
                if watch and carried >= threshold and fired.acquire(blocking=False):
                    at_stall()
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(str(cluster.pg.socket_dir / f".s.PGSQL.{cluster.pg.port}"))
            for args in ((client, server, False), (server, client, True)):
                threading.Thread(target=pump, args=args, daemon=True).start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield pg_url(run_dir, cluster.pg.port, cluster.pg.database)
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        acceptor.join()
