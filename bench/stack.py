"""The system under test, started in a temp dir the way ``opsctl up`` starts it.

Embedded PostgreSQL (migrated), embedded Redis, the production worker pool (``WorkerPool``, N
worker processes configured through ``OPSCTL_*`` environment variables) and the HTTP API served
by uvicorn in a thread of this process. ``running_stack`` stops whatever it started, in reverse
order, however the benchmark ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from core.cache import Cache
from core.config import Settings, load_settings
from core.db import make_pool, migrate
from core.embedded import EmbeddedPostgres, EmbeddedRedis
from core.spaces.follow import follow_database
from core.tenants import create_company
from core.workerpool import WorkerPool, free_port

API_APP = "bench-api"
WORKER_APP = "bench-worker"
BENCH_APP = "bench"
EMBEDDER = "hash"
EMBED_DIM = 384
# The benchmark measures the service, not the per-tenant rate limiter: lift it.
UNLIMITED_RATE = 1_000_000.0


def with_app_name(url: str, name: str) -> str:
    """``url`` with libpq's ``application_name``, so pg_stat_activity tells the clients apart."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


@dataclass(frozen=True)
class Tenant:
    name: str
    company_id: int
    api_key: str


@dataclass
class Stack:
    root: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    settings: Settings
    workers: WorkerPool
    api_url: str
    tenants: dict[str, Tenant]

    @property
    def db_url(self) -> str:
        """Connection URL for the benchmark's own sessions (raw baselines, polling, sampling)."""
        return with_app_name(self.pg.url, BENCH_APP)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        from pgvector.psycopg import register_vector

        conn = psycopg.connect(self.db_url, **kwargs)
        register_vector(conn)
        return conn

    def flush_cache(self) -> None:
        """What `opsctl cache flush --apply` does for every company: bump the data versions (so no
        API process's near cache answers either), then empty Redis."""
        import redis

        from opsctl.cachepolicy.ops import retire_cached_answers

        retire_cached_answers(self.settings, None)
        client = redis.Redis.from_url(self.redis.url)
        try:
            client.flushall()
        finally:
            client.close()


class ApiServer:
    """The real app on a real socket, served by uvicorn in a thread (as in tests/conftest.py)."""

    def __init__(self, settings: Settings, workers: WorkerPool) -> None:
        import uvicorn

        from core.api import Services, create_app

        assert settings.database_url
        self.pool = make_pool(settings.database_url, settings)
        self.cache = Cache(settings.redis_url, settings.redis_timeout_seconds)
        with self.pool.connection() as conn:
            embedder = follow_database(settings, conn)  # as the real API: the active vector space
        self.services = Services(settings, self.pool, self.cache, embedder, workers)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.services), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-api", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(15)
        self.services.close()
        self.pool.close()
        self.cache.close()


def _settings(root: Path, db_url: str, redis_url: str, embedder: str) -> Settings:
    return load_settings(
        data_dir=root / "data",
        database_url=with_app_name(db_url, API_APP),
        redis_url=redis_url,
        embedder=embedder,
        embed_dim=EMBED_DIM,
        rate_limit_per_second=UNLIMITED_RATE,
        rate_limit_burst=int(UNLIMITED_RATE),
    )


def _worker_env(settings: Settings, db_url: str) -> dict[str, str]:
    """What a worker process needs: the URLs and every setting the benchmark depends on."""
    return {
        "OPSCTL_DATABASE_URL": with_app_name(db_url, WORKER_APP),
        "OPSCTL_REDIS_URL": settings.redis_url or "",
        "OPSCTL_DATA_DIR": str(settings.data_dir),
        "OPSCTL_EMBEDDER": settings.embedder,
        "OPSCTL_EMBED_DIM": str(settings.embed_dim),
        "OPSCTL_EMBED_PRECISION": settings.embed_precision,
        "OPSCTL_EMBED_THREADS": str(settings.embed_threads),
        "OPSCTL_CHUNK_SIZE": str(settings.chunk_size),
        "OPSCTL_CHUNK_OVERLAP": str(settings.chunk_overlap),
        "OPSCTL_WORKER_BATCH_SIZE": str(settings.worker_batch_size),
    }


def _create_tenants(url: str, names: tuple[str, ...]) -> dict[str, Tenant]:
    tenants = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            made = create_company(conn, f"bench-{name.lower()}", actor="bench")
            tenants[name] = Tenant(name, made.company_id, made.api_key)
    return tenants


def start_stores(root: Path, cleanup: ExitStack,
                 embedder: str = EMBEDDER) -> tuple[EmbeddedPostgres, EmbeddedRedis, Settings]:
    """PostgreSQL (migrated) and Redis under ``root``, stopped by ``cleanup``; the service's settings on them."""
    pg = EmbeddedPostgres(root / "pg")
    cleanup.callback(pg.stop)
    db_url = pg.start()
    redis = EmbeddedRedis(root / "redis")
    cleanup.callback(redis.stop)
    settings = _settings(root, db_url, redis.start(), embedder)
    migrate(db_url, settings)
    return pg, redis, settings


@dataclass
class Stores:
    """PostgreSQL and Redis of a scratch run, with the service's pool and cache on them (``scratch_stores``)."""

    pg: EmbeddedPostgres
    settings: Settings
    pool: Any
    cache: Cache


@contextmanager
def scratch_stores(prefix: str, embedder: str = EMBEDDER) -> Iterator[Stores]:
    """``start_stores`` in a temp dir, the core's pool and cache open on them; all gone at the end."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with ExitStack() as cleanup:
            pg, _, settings = start_stores(root, cleanup, embedder)
            assert settings.database_url is not None
            pool = make_pool(settings.database_url, settings)
            cleanup.callback(pool.close)
            cache = Cache(settings.redis_url, settings.redis_timeout_seconds)
            cleanup.callback(cache.close)
            yield Stores(pg, settings, pool, cache)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_stack(root: Path, replicas: int, tenant_names: tuple[str, ...],
                  embedder: str = EMBEDDER) -> Iterator[Stack]:
    """Start everything under ``root`` (``embedder``: ``hash``, ``onnx`` or ``minilm``, all 384-d); stop it
    all (reverse order) when the block exits."""
    os.environ["OPSCTL_DATA_DIR"] = str(root / "data")  # never read a developer's state file
    with ExitStack() as cleanup:
        pg, redis, settings = start_stores(root, cleanup, embedder)
        db_url = pg.url
        tenants = _create_tenants(db_url, tenant_names)
        workers = WorkerPool(env=_worker_env(settings, db_url), replicas=replicas, log_dir=root / "logs")
        cleanup.callback(workers.stop, 30)
        workers.start()
        api = ApiServer(settings, workers)
        cleanup.callback(api.stop)
        api.start()
        yield Stack(root, pg, redis, settings, workers, api.url, tenants)
