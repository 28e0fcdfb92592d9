"""DDL under ``lock_timeout``, retried with backoff while its locks are busy (partition rotation,
per-company indexes): a statement that cannot have its lock soon gives up instead of queueing, so the
queries that would queue behind it are not held up, and it tries again a little later."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from core.errors import OperationFailed

T = TypeVar("T")


def lock_backoff(attempt: int, jitter: float) -> float:
    """Seconds to wait after the ``attempt``-th (from 0) lock timeout: doubling from 50 ms up to 2 s,
    times ``0.5 + jitter`` (``jitter`` in [0, 1)) so that two waiters do not retry in step."""
    return min(0.05 * 2 ** attempt, 2.0) * (0.5 + jitter)


def with_lock_retries(conn: psycopg.Connection[Any], what: str, fn: Callable[[], T], *, timeout_ms: int,
                      retries: int, hint: str = "long transactions on the table?") -> T:
    """Run ``fn`` under ``lock_timeout`` of ``timeout_ms``; on a lock timeout or deadlock, back off
    (:func:`lock_backoff`) and retry, ``retries`` times; then an OperationFailed naming ``what``."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(timeout_ms)}ms")))
    try:
        for attempt in range(retries + 1):
            try:
                return fn()
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                if attempt == retries:
                    break
                time.sleep(lock_backoff(attempt, random.random()))
        raise OperationFailed(f"{what}: could not take its locks within {timeout_ms} ms in {retries + 1} tries "
                              f"({hint})")
    finally:
        conn.execute("RESET lock_timeout")
