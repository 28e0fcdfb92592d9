"""What a benchmark phase made PostgreSQL write (bench/pgwrites.py): the counters read from a real
server, and the pure arithmetic per item."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

from bench import pgwrites
from bench.mail_bench import writes_rows


def test_a_phase_of_toasted_rows_shows_its_wal_and_its_toast_blocks(conn: psycopg.Connection[Any]) -> None:
    conn.autocommit = True
    conn.execute("CREATE TABLE pgw_big (id bigint PRIMARY KEY, body bytea)")
    conn.execute("ALTER TABLE pgw_big ALTER COLUMN body SET STORAGE EXTERNAL")
    conn.execute("CREATE TABLE pgw_small (id bigint PRIMARY KEY, body bytea)")

    def snap() -> dict[str, float]:
        return pgwrites.settled(lambda: pgwrites.snapshot(conn, ["pgw_big", "pgw_small"]), timeout=5)

    before = snap()
    for table in ("pgw_big", "pgw_small"):
        conn.execute(f"INSERT INTO {table} SELECT i, %s FROM generate_series(1, 50) i",
                     (os.urandom(6000 if table == "pgw_big" else 100),))
    conn.execute("CHECKPOINT")
    per = pgwrites.per_item(pgwrites.delta(before, snap()), 100)
    assert per["wal_bytes"] > 3000  # half the rows carry 6000 bytes
    assert per["wal_records"] >= 2 and per["checkpoints"] >= 1 and per["checkpointer_blocks_written"] > 0
    assert per["pgw_big toast blocks touched"] > 0 and per["pgw_big tidx blocks touched"] > 0
    assert per.get("pgw_small toast blocks touched", 0.0) == 0.0
    assert per["pgw_big heap blocks touched"] > 0 and per["pgw_small idx blocks touched"] > 0


def test_the_settings_that_price_a_write_are_read_as_the_server_runs(conn: psycopg.Connection[Any]) -> None:
    settings = pgwrites.server_settings(conn)
    assert set(settings) == set(pgwrites.SETTINGS)
    assert settings["full_page_writes"] == "on"


@pytest.mark.parametrize(("before", "after", "items", "opening", "expected"), [
    ({}, {"wal.bytes": 1000.0, "wal.fpi": 10.0}, 10, 0, {"wal_bytes": 100.0, "wal_fpi": 1.0, "checkpoints": 0.0}),
    ({"wal.records": 5.0, "checkpoints.requested": 2.0}, {"wal.records": 25.0, "checkpoints.requested": 4.0,
                                                          "checkpoints.timed": 1.0}, 4, 1,
     {"wal_records": 5.0, "checkpoints": 2.0}),
    ({"io.client backend.relation.writes": 3.0}, {"io.client backend.relation.writes": 13.0,
                                                   "io.client backend.wal.writes": 7.0}, 5, 0,
     {"client backend blocks writes": 2.0}),
    ({}, {"blocks.mail_ids.idx_read": 4.0, "blocks.mail_ids.idx_hit": 16.0, "blocks.a.b.heap_hit": 2.0}, 2, 0,
     {"mail_ids idx blocks touched": 10.0, "a.b heap blocks touched": 1.0}),
])
def test_per_item_figures(before: dict[str, float], after: dict[str, float], items: int, opening: int,
                          expected: dict[str, float]) -> None:
    per = pgwrites.per_item(pgwrites.delta(before, after), items, opening_checkpoints=opening)
    assert {k: per[k] for k in expected} == expected
    assert not any(k.endswith("wal writes") for k in per)  # WAL I/O is not a relation's blocks


def test_per_item_needs_items() -> None:
    with pytest.raises(ValueError, match="positive"):
        pgwrites.per_item({}, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_settled_reads_until_two_reads_agree_or_gives_the_last_at_the_timeout() -> None:
    clock = FakeClock()
    reads = iter([{"a": 1.0}, {"a": 2.0}, {"a": 2.0}, {"a": 9.0}])
    assert pgwrites.settled(lambda: next(reads), timeout=10, sleep=clock.sleep, clock=lambda: clock.now) == {"a": 2.0}
    clock = FakeClock()
    rising = iter(range(100))
    last = pgwrites.settled(lambda: {"a": float(next(rising))}, timeout=3, sleep=clock.sleep, clock=lambda: clock.now)
    assert last == {"a": 3.0}


def test_the_report_puts_wal_first_and_leaves_out_figures_zero_everywhere() -> None:
    rows = writes_rows([{"x": 1.0, "wal_bytes": 10.0, "zero": 0.0}, {"wal_fpi": 2.0, "a": 3.0}])
    assert rows == [("wal_fpi", [0.0, 2.0]), ("wal_bytes", [10.0, 0.0]), ("a", [0.0, 3.0]), ("x", [1.0, 0.0])]
