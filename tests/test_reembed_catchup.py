"""The re-embed's catch-up and state read once the backfill has passed (real PostgreSQL): they find
the chunks still without a new vector through a partial index, never a scan of chunks, and stay
exact: re-ingest, deletes, partitions created or attached during the run all reach the switch
with their new vectors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.config import Settings
from core.db import ensure_partitions
from core.embed import HashEmbedder
from core.spaces.store import Space, active, building
from opsctl.reembed import pg
from opsctl.reembed.service import run, start, target
from tests.conftest import RunningApi, client_for, drain
from tests.test_reembed import backfilled, connect, corpus, ingest, stored_match
from tests.test_tenant_indexes import load_chunks

DIM = 48


def plan(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...] = ()) -> str:
    return " ".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + statement, params).fetchall())


def backfill(conn: psycopg.Connection[Any], space: Space, analyze_first: bool = False) -> None:
    """The column added (``analyze_first``: its statistics taken while every value is NULL), every chunk embedded."""
    pg.add_column(conn, space)
    if analyze_first:
        conn.execute("ANALYZE chunks")
    while pg.backfill_batch(conn, building(conn), HashEmbedder(DIM), 1000):  # type: ignore[arg-type]
        pass


def test_the_count_and_the_catch_up_read_an_index_not_the_table(
        settings: Settings, conn: psycopg.Connection[Any], tenant: Any, other_tenant: Any) -> None:
    load_chunks(conn, tenant.company_id, 3000, 1)
    space = start(settings, target(settings, "hash", DIM), "tester")
    with connect(settings.database_url or "") as runner:
        backfill(runner, space, analyze_first=True)  # statistics of the worst moment: every new vector NULL
        load_chunks(runner, other_tenant.company_id, 10, 2)  # written since the backfill passed
        pg.build_index(runner, space, settings)
        held = [r[0] for r in runner.execute("SELECT DISTINCT tableoid::regclass::text FROM chunks").fetchall()]
        for statement, params in ((pg.MISSING_COUNT_SQL, ()), (pg.MISSING_ROWS_SQL, (64,))):
            shown = plan(runner, statement, params)  # (an empty partition may be "scanned": it has no page)
            assert not [p for p in held if f"Seq Scan on {p} " in shown], shown
            assert all(f"{p}_nul_s{space.id}_idx on {p}" in shown for p in held), shown
        state, _ = pg.read_state(runner)
        assert state.missing == 10
        assert pg.catch_up_batch(runner, space, HashEmbedder(DIM), 64) == 10
        assert pg.read_state(runner)[0].missing == 0


def delete(api: RunningApi, key: str, external_id: str) -> None:
    with client_for(api, key) as client:
        assert client.delete(f"/v1/documents/{external_id}").status_code == 202


ATTACHED = datetime(2041, 3, 1, tzinfo=UTC)


def attach_archived_partition(conn: psycopg.Connection[Any], company_id: int) -> int:
    """A partition brought back from an archive: its rows carry old ids and no new vector; returns its rows."""
    conn.execute("CREATE TABLE chunks_p2041_03 (LIKE chunks INCLUDING DEFAULTS INCLUDING GENERATED)")
    vectors = HashEmbedder(384).embed([f"archived text {i}" for i in range(5)])
    with conn.cursor() as cur, cur.copy("COPY chunks_p2041_03 (company_id, id, document_id, external_id, ord, body,"
                                        " embedding, created_at) FROM STDIN") as copy:
        for i, vector in enumerate(vectors):
            copy.write_row((company_id, i + 1, 1, "archived", i, f"archived text {i}", vector, ATTACHED))
    conn.execute(sql.SQL("ALTER TABLE chunks ATTACH PARTITION chunks_p2041_03 FOR VALUES FROM ({}) TO ({})").format(
        sql.Literal(ATTACHED), sql.Literal(datetime(2041, 4, 1, tzinfo=UTC))))
    return len(vectors)


def test_no_chunk_reaches_the_switch_without_a_new_vector(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str) -> None:
    space = backfilled(api, tenant, settings, 30, DIM)
    with connect(db_url) as conn:
        pg.build_index(conn, space, settings)
        assert pg.read_state(conn)[0].missing == 0
        # during the re-embed, in the old space: a re-ingest, a delete, new chunks in a partition created
        # since, and a partition attached with chunks written before the re-embed began
        ingest(api, tenant.api_key, [{"external_id": "doc-0", "text": "rewritten body"}, *corpus(3, start_at=30)])
        delete(api, tenant.api_key, "doc-1")
        assert ensure_partitions(conn, datetime(2040, 1, 1, tzinfo=UTC), ahead=0)[-1] == "chunks_p2040_01"
        ingest(api, tenant.api_key, [{"external_id": "future", "text": "a chunk of the new partition",
                                      "created_at": "2040-01-15T00:00:00Z"}])
        assert drain(settings, db_url) == 6
        archived = attach_archived_partition(conn, tenant.company_id)
        assert conn.execute("SELECT count(*) FROM chunks_p2040_01").fetchone() == (1,)
        assert pg.read_state(conn)[0].missing == 1 + 3 + 1 + archived

        result = run(settings, "tester", batch=2)  # catch-up batches, then the switch embeds the last ones
        assert "catch_up" in result.steps and result.finished == "the old vectors are dropped"
        assert active(conn).spec.dim == DIM
        assert stored_match(conn, DIM)  # every chunk, the attached partition's too, holds its new vector
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (30 - 1 + 3 + 1 + archived,)
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s",
                            (f"%\\_nul\\_s{space.id}\\_idx",)).fetchone() == (0,)  # the partial index went


@pytest.mark.parametrize("rows", [0, 3])
def test_an_aborted_re_embed_drops_the_partial_index_with_its_column(
        settings: Settings, conn: psycopg.Connection[Any], tenant: Any, rows: int) -> None:
    from opsctl.reembed.service import abort

    load_chunks(conn, tenant.company_id, 20, 1)
    space = start(settings, target(settings, "hash", DIM), "tester")
    with connect(settings.database_url or "") as runner:
        backfill(runner, space)
        if rows:
            load_chunks(runner, tenant.company_id, rows, 2)
        pg.build_index(runner, space, settings)
        assert pg.read_state(runner)[0].missing == rows
    abort(settings, "tester", apply=True)
    assert run(settings, "tester").finished == "the aborted re-embed's vectors are dropped"
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s",
                        ("%\\_nul\\_s%",)).fetchone() == (0,)
