"""DDL retried while its locks are busy (``opsctl.lockretry``): the backoff by table, and against a
real lock held by another session."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.errors import OperationFailed
from opsctl.lockretry import lock_backoff, with_lock_retries


@pytest.mark.parametrize(("attempt", "jitter", "seconds"), [
    (0, 0.5, 0.05), (1, 0.5, 0.1), (3, 0.5, 0.4), (5, 0.5, 1.6), (6, 0.5, 2.0), (30, 0.5, 2.0),
    (0, 0.0, 0.025), (6, 0.0, 1.0), (6, 0.999, 2.998),
])
def test_backoff_doubles_up_to_two_seconds_with_jitter(attempt: int, jitter: float, seconds: float) -> None:
    assert lock_backoff(attempt, jitter) == pytest.approx(seconds)


def test_a_busy_lock_is_tried_again_then_refused_and_the_timeout_reset(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as ddl, psycopg.connect(db_url) as holder:
        ddl.execute("CREATE TABLE IF NOT EXISTS lockretry_t (x int)")
        holder.execute("LOCK TABLE lockretry_t IN ACCESS EXCLUSIVE MODE")
        tries: list[int] = []

        def alter() -> Any:
            tries.append(1)
            return ddl.execute("ALTER TABLE lockretry_t ADD COLUMN IF NOT EXISTS y int")

        with pytest.raises(OperationFailed, match=r"alter lockretry_t: could not take its locks within 20 ms "
                                                  r"in 3 tries \(long transactions on the table\?\)"):
            with_lock_retries(ddl, "alter lockretry_t", alter, timeout_ms=20, retries=2)
        assert len(tries) == 3
        assert ddl.execute("SHOW lock_timeout").fetchone() == ("0",)
        holder.rollback()
        assert with_lock_retries(ddl, "alter", alter, timeout_ms=20, retries=2) is not None
        assert len(tries) == 4
        ddl.execute("DROP TABLE lockretry_t")
