"""Real PostgreSQL (embedded), real Redis, a real HTTP server: shared fixtures.

One PostgreSQL server per test session; the schema is built once in a template database and
each test gets ``CREATE DATABASE … TEMPLATE`` (fast, isolated). One redis-server per session,
flushed per test.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from core.cache import Cache
from core.config import Settings
from core.db import make_pool, migrate
from core.embedded import EmbeddedPostgres, EmbeddedRedis, pg_url
from tests.tmpdirs import outside_pytest_tmp, remove_outside_dirs

TEMPLATE = "opsctl_template"
_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background by a non-interactive shell (CI scripts do) inherits SIGINT
    ignored, and so would every process a test starts: the Ctrl-C tests would test nothing. Give
    the test process Python's own handler; the processes it starts get the default back on exec."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads a developer's ./opsctl.yaml, state file or OPSCTL_* environment."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("OPSCTL_")}
    for k in saved:
        del os.environ[k]
    home = tmp_path_factory.mktemp("cwd")
    os.environ["OPSCTL_DATA_DIR"] = str(home / ".opsctl")
    yield
    os.environ.pop("OPSCTL_DATA_DIR", None)
    os.environ.update(saved)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The dirs ``outside_pytest_tmp`` made in this process go (``OPSCTL_KEEP_TEST_DIRS=1`` keeps them)."""
    remove_outside_dirs()


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"embedder": "hash", "embed_dim": 384, "worker_batch_size": 16,
                            "retry_base_seconds": 0.0, "db_pool_max": 8}
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    import shutil

    root = outside_pytest_tmp("opsctl-test-pg-")
    server = EmbeddedPostgres(root / "pg", database=TEMPLATE)
    server.start()
    migrate(server.url, make_settings())
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {TEMPLATE} WITH is_template true")
    yield server
    server.stop(mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        # CREATE DATABASE … TEMPLATE copies no database-level settings (migrations set hnsw.ef_search)
        for (setting,) in conn.execute(
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
            " WHERE d.datname = %s AND s.setrole = 0", (TEMPLATE,)).fetchall():
            key, _, value = setting.partition("=")
            conn.execute(f"ALTER DATABASE {name} SET {key} = '{value}'")
    yield pg_url(pg_server.socket_dir, pg_server.port, name)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pgbouncer(pg_server: EmbeddedPostgres) -> Iterator[Any]:
    """Debian's PgBouncer in transaction mode in front of this session's server (one per xdist
    worker, like the server). Missing or failing to start: the tests using it FAIL, saying why."""
    import shutil

    from tests.pgbouncer import PgBouncer

    root = outside_pytest_tmp("opsctl-test-pgbouncer-")
    bouncer = PgBouncer(root, pg_server.socket_dir, pg_server.port)
    try:
        bouncer.start()
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(str(exc), pytrace=False)
    yield bouncer
    bouncer.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pooler_url(pgbouncer: Any, db_url: str) -> str:
    """This test's database through PgBouncer in transaction mode."""
    from psycopg.conninfo import conninfo_to_dict

    return str(pgbouncer.url(conninfo_to_dict(db_url)["dbname"]))


@pytest.fixture
def pooled_settings(pooler_url: str, db_url: str, redis_url: str) -> Settings:
    """Settings of a deployment behind a transaction pooler: the data path through PgBouncer, what
    needs a session (LISTEN, advisory locks, DDL, backups) straight to PostgreSQL."""
    return make_settings(database_url=pooler_url, database_direct_url=db_url, database_pool_mode="transaction",
                         redis_url=redis_url, admin_token="admin-secret")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    import redis

    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A real S3-API server (moto_server) for the session; AWS_* fake-but-set in this process only."""
    from bench.s3server import MotoServer, fake_aws

    with fake_aws():
        server = MotoServer()
        yield server
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: Any) -> str:
    """A new, empty bucket on the session's S3 server."""
    from tests.s3_helpers import make_bucket

    return make_bucket(s3_server.endpoint)


@pytest.fixture
def settings(db_url: str, redis_url: str) -> Settings:
    return make_settings(database_url=db_url, redis_url=redis_url, admin_token="admin-secret")


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    from pgvector.psycopg import register_vector

    with psycopg.connect(db_url, autocommit=True) as connection:
        register_vector(connection)
        yield connection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningApi:
    """The real app on a real socket, in a thread (like httpx's own test server)."""

    def __init__(self, settings: Settings, workers: Any = None) -> None:
        import uvicorn
        from prometheus_client import REGISTRY

        from core.api import Services, create_app
        from core.metrics import api_collectors
        from core.spaces.follow import follow_database

        assert settings.database_url
        self.settings = settings
        self.pool = make_pool(settings.database_url, settings)
        self.cache = Cache(settings.redis_url, settings.redis_timeout_seconds)
        with self.pool.connection() as conn:
            self.embedder = follow_database(settings, conn)  # as the real API: the active vector space
        self.collectors = api_collectors(self.pool, self.cache, min_interval=0, usage_top=settings.usage_metrics_top)
        for collector in self.collectors:
            REGISTRY.register(collector)
        self.services = Services(settings, self.pool, self.cache, self.embedder, workers)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.services), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "API did not start"
            time.sleep(0.01)

    def close(self) -> None:
        from prometheus_client import REGISTRY

        self.server.should_exit = True
        self.thread.join(10)
        self.services.close()
        for collector in self.collectors:
            REGISTRY.unregister(collector)
        self.pool.close()
        self.cache.close()


@pytest.fixture
def api(settings: Settings) -> Iterator[RunningApi]:
    running = RunningApi(settings)
    yield running
    running.close()


@pytest.fixture
def tenant(conn: psycopg.Connection[Any]) -> Any:
    from core.tenants import create_company

    return create_company(conn, "acme")


@pytest.fixture
def other_tenant(conn: psycopg.Connection[Any]) -> Any:
    from core.tenants import create_company

    return create_company(conn, "globex")


def client_for(api: RunningApi, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=30)


def drain(settings: Settings, db_url: str, max_batches: int = 1000) -> int:
    """Run the real ingest processor until the queue is empty (jobs due now); returns jobs done."""
    from pgvector.psycopg import register_vector

    from core.embed import make_embedder
    from core.ingest.worker import IngestProcessor

    processor = IngestProcessor(settings, make_embedder(settings))
    done = 0
    with psycopg.connect(db_url) as conn:
        register_vector(conn)
        for _ in range(max_batches):
            result = processor.run_batch(conn)
            if not result.claimed:
                break
            done += result.done
    return done


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
