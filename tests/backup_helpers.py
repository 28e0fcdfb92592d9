"""A PostgreSQL cluster of its own per backup test (archiving is per cluster), and small data."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
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
