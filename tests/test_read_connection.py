"""``core.db.read_connection``: single read statements without a transaction, and the pooled
connection handed back exactly as the writers expect it (not autocommit, idle)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from core.config import Settings
from core.db import make_pool, read_connection, transaction
from core.pooler import search_connection


def test_read_connection_runs_without_a_transaction_and_restores_the_connection(settings: Settings) -> None:
    assert settings.database_url
    pool = make_pool(settings.database_url, settings, min_size=1, max_size=1)
    try:
        with read_connection(pool) as conn:
            assert conn.autocommit
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.transaction_status is TransactionStatus.IDLE  # no BEGIN was sent
            assert conn.execute("SHOW hnsw.iterative_scan").fetchone() == ("relaxed_order",)
            used = conn
        with pool.connection() as again:
            assert again is used  # the single pooled connection, handed back
            assert not again.autocommit
            again.execute("SELECT 1")
            assert again.info.transaction_status is TransactionStatus.INTRANS
            again.rollback()
    finally:
        pool.close()


@pytest.mark.parametrize(("settings_fixture", "opener"), [
    ("settings", read_connection),
    ("pooled_settings", search_connection),  # through PgBouncer: its own transaction, rolled back
])
def test_read_connection_restores_the_connection_after_an_error(request: pytest.FixtureRequest,
                                                                 settings_fixture: str, opener: Any) -> None:
    settings: Settings = request.getfixturevalue(settings_fixture)
    assert settings.database_url
    pool = make_pool(settings.database_url, settings, min_size=1, max_size=1)
    try:
        with pytest.raises(psycopg.errors.UndefinedTable), opener(pool) as conn:
            conn.execute("SELECT * FROM no_such_table")
        with transaction(pool) as writer:
            assert writer is conn  # the single pooled connection, handed back usable
            row: Any = writer.execute("SELECT count(*) FROM companies").fetchone()
            assert writer.info.transaction_status is TransactionStatus.INTRANS
            assert not writer.autocommit
        assert row[0] >= 0
    finally:
        pool.close()
