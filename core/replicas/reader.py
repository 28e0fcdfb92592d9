"""The API's read replicas: one pool each, their lag measured, and a search read where
``core.replicas.route`` says, in one snapshot that proves it fresh enough (docs/replicas.md).

``ReplicaSet.check()`` measures every replica (the monitor thread calls it every
``replica_check_seconds``): the primary's WAL position first, then on the standby how far it has
replayed and the age of the last transaction it replayed (``route.replay_lag``), published as
``core_db_replica_lag_seconds{replica}`` and ``core_db_replica_up{replica}``. A search then
(``read``) runs its statements on the chosen replica inside one ``REPEATABLE READ READ ONLY``
transaction whose first statement reads the company's ``data_version``: below the version the
request authenticated with (read from the primary), the work is done on the primary instead
("behind"). A replica that fails meanwhile (connection lost, a query cancelled by a recovery
conflict) is marked down or skipped and the work is done on the primary: the caller never sees it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import IsolationLevel
from psycopg_pool import PoolTimeout

from core import metrics
from core.db import first_line, make_pool, read_connection
from core.pooler import CorePool, apply_settings, search_connection
from core.replicas.route import (
    PRIMARY_NO_REPLICAS,
    Measured,
    Route,
    choose,
    fresh_enough,
    replay_lag,
    replica_names,
)

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from core.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

PRIMARY_LSN_SQL = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
STANDBY_SQL = ("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'::pg_lsn,"
               " extract(epoch FROM now() - pg_last_xact_replay_timestamp())")
COMPANY_VERSION_SQL = "SELECT data_version FROM companies WHERE id = %s"
CONNECT_TIMEOUT = 2  # seconds: a replica that does not answer by then is down for this check
# what a failing replica raises: the search goes to the primary
REPLICA_FAILURES = (psycopg.OperationalError, psycopg.errors.SerializationFailure, PoolTimeout)


class ReplicaSet:
    """The replicas of ``settings.database_replica_urls``, beside the ``primary`` pool."""

    def __init__(self, settings: Settings, primary: ConnectionPool) -> None:
        self.primary = primary
        self.max_lag = settings.replica_max_lag_seconds
        self.interval = settings.replica_check_seconds
        self.urls = dict(zip(replica_names(len(settings.database_replica_urls)), settings.database_replica_urls,
                             strict=True))
        # opened in the background: a replica down at start is a replica down, not an API that cannot start
        self.pools = {name: make_pool(url, settings, name=name, min_size=0, wait=False)
                      for name, url in self.urls.items()}
        self._checkers: dict[str, psycopg.Connection[Any] | None] = dict.fromkeys(self.urls)
        self._measured = [Measured(name, up=False) for name in self.urls]  # nothing known before the first check
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- measuring -------------------------------------------------------------------------------
    def check(self) -> list[Measured]:
        """Measure every replica now; publish and keep the result for ``route``."""
        with read_connection(self.primary) as conn:
            row = conn.execute(PRIMARY_LSN_SQL).fetchone()
        primary_lsn = int(row[0]) if row else 0
        measured = [self._measure(name, primary_lsn) for name in self.urls]
        for m in measured:
            metrics.REPLICA_UP.labels(m.name).set(1 if m.up else 0)
            metrics.REPLICA_LAG.labels(m.name).set(m.lag_seconds if m.up else math.nan)
        with self._lock:
            self._measured = measured
        return measured

    def _measure(self, name: str, primary_lsn: int) -> Measured:
        try:
            conn = self._checkers[name]
            if conn is None or conn.closed:
                conn = self._checkers[name] = psycopg.connect(self.urls[name], autocommit=True,
                                                              connect_timeout=CONNECT_TIMEOUT)
            row = conn.execute(STANDBY_SQL).fetchone()
        except psycopg.Error as exc:
            self._drop_checker(name)
            log.info("replica %s: down: %s", name, first_line(exc))
            return Measured(name, up=False)
        assert row is not None
        in_recovery, replay_lsn, age = row
        if not in_recovery:  # promoted, or not a standby at all: not a replica of this primary
            log.warning("replica %s is not in recovery: not reading from it", name)
            return Measured(name, up=False)
        return Measured(name, True, replay_lag(primary_lsn, None if replay_lsn is None else int(replay_lsn),
                                               None if age is None else float(age)))

    def _drop_checker(self, name: str) -> None:
        conn, self._checkers[name] = self._checkers[name], None
        if conn is not None:
            conn.close()

    def mark_down(self, name: str) -> None:
        """A read failed on ``name``: no search goes there until a check finds it up again."""
        with self._lock:
            self._measured = [Measured(m.name, False) if m.name == name else m for m in self._measured]
        metrics.REPLICA_UP.labels(name).set(0)
        metrics.REPLICA_LAG.labels(name).set(math.nan)

    def route(self) -> Route:
        with self._lock:
            return choose(self._measured, self.max_lag)

    # -- reading ---------------------------------------------------------------------------------
    @contextmanager
    def snapshot(self, name: str, *, vector: bool = True,
                 ef_search: int | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection to replica ``name`` inside one read-only, repeatable-read transaction (behind a
        transaction pooler, with the search settings set for that transaction only; ``ef_search``:
        the database's value this request learned, ``core.searchtune``)."""
        pool = self.pools[name]
        with pool.connection(timeout=CONNECT_TIMEOUT) as conn:
            if vector and isinstance(pool, CorePool) and pool.mode == "session":
                pool.tune_session(conn, ef_search)  # before the transaction: a session setting
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                if vector and isinstance(pool, CorePool) and pool.mode == "transaction":
                    apply_settings(conn, pool.settings_for(ef_search), local=True)
                yield conn

    # -- the monitor -----------------------------------------------------------------------------
    def start(self) -> None:
        """Check now, then every ``replica_check_seconds`` in a thread until ``close``."""
        self._safe_check()
        self._thread = threading.Thread(target=self._loop, name="replica-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._safe_check()

    def _safe_check(self) -> None:
        try:
            self.check()
        except Exception as exc:  # the primary down: searches fail on it anyway; keep checking
            log.warning("checking the replicas failed: %s", first_line(exc))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for name in self.urls:
            self._drop_checker(name)
        for pool in self.pools.values():
            pool.close()


def make_replicas(settings: Settings, primary: ConnectionPool) -> ReplicaSet | None:
    """The replicas the settings name, checked once and then monitored; None when there are none."""
    if not settings.database_replica_urls:
        return None
    replicas = ReplicaSet(settings, primary)
    replicas.start()
    return replicas


def count(route: Route) -> None:
    metrics.SEARCH_READS.labels(route.target, route.reason).inc()


def read(primary: ConnectionPool, replicas: ReplicaSet | None, company_id: int, required_version: int,
         work: Callable[[psycopg.Connection[Any]], T], *, vector: bool = True,
         ef_search: int | None = None, conn: psycopg.Connection[Any] | None = None) -> tuple[T, Route]:
    """``work(conn)`` on a replica whose snapshot holds the company at ``required_version`` or newer,
    else on the primary (one autocommit connection, as without replicas); returns its result and
    where it ran. ``work`` must only read: on a replica failure it runs again on the primary.
    ``vector``: the search settings must be in effect (``core.pooler.search_connection``), with
    ``ef_search`` (the database's value, learned by the request) where none is configured; ``conn``:
    a connection of ``primary`` the request holds already (``core.pooler.search_connection``)."""
    route = replicas.route() if replicas is not None else PRIMARY_NO_REPLICAS
    name = route.replica
    if replicas is not None and name is not None:
        try:
            with replicas.snapshot(name, vector=vector, ef_search=ef_search) as replica:
                row = replica.execute(COMPANY_VERSION_SQL, (company_id,), prepare=True).fetchone()
                if fresh_enough(None if row is None else int(row[0]), required_version):
                    result = work(replica)
                    count(route)
                    return result, route
            route = Route("primary", "behind")
        except REPLICA_FAILURES as exc:
            if isinstance(exc, psycopg.errors.SerializationFailure):  # a recovery conflict cancelled it
                route = Route("primary", "conflict")
            else:
                replicas.mark_down(name)
                route = Route("primary", "down")
            log.info("search on %s failed (%s): reading from the primary", name, first_line(exc))
    with search_connection(primary, vector=vector, ef_search=ef_search, conn=conn) as held:
        result = work(held)
    count(route)
    return result, route
