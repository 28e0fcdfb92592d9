"""Own HNSW indexes for large companies on real PostgreSQL: the move is online, audited, the search
uses the company's index afterwards (EXPLAIN) in exact order, a dry run changes nothing, new
partitions get their piece, and an index no longer wanted is dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from core.cache import Cache
from core.config import Settings
from core.db import ensure_partitions
from core.embed import HashEmbedder
from core.search.fusion import Ranking
from core.search.retrieve import SearchRequest, has_own_index, retrieve, vector_query
from core.search.tenantindex import tenant_index_name
from opsctl.vindex.policy import VectorIndexPolicy
from opsctl.vindex.tenants import Action
from opsctl.vindex.tenants_service import tenant_indexes

DIM = 384
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu")
POLICY = VectorIndexPolicy.model_validate({"tenants": {"min_rows": 400, "max_share": 0.9, "hysteresis": 0.2}})
CHUNKS = Ranking(per_document=False)  # one document holds every chunk here: rank chunks


def load_chunks(conn: psycopg.Connection[Any], company_id: int, n: int, seed: int) -> None:
    """``n`` chunks of hash-embedded random words for the company, by COPY (one document)."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=8)) + f" item{seed}x{i}" for i in range(n)]
    vectors = HashEmbedder(DIM).embed(texts)
    now = datetime.now(UTC)
    row = conn.execute("INSERT INTO documents (company_id, external_id, title, body, content_hash, created_at)"
                       " VALUES (%s, 'doc', 't', '', %s, %s) RETURNING id", (company_id, b"\x00" * 32, now)).fetchone()
    assert row is not None
    with conn.cursor() as cur, cur.copy(
            "COPY chunks (company_id, document_id, external_id, ord, body, embedding, created_at) FROM STDIN") as copy:
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
            copy.write_row((company_id, row[0], "doc", i, text, vector, now))


@pytest.fixture
def companies(conn: psycopg.Connection[Any], tenant: Any, other_tenant: Any) -> tuple[int, int]:
    load_chunks(conn, tenant.company_id, 600, 1)       # large: gets its own index
    load_chunks(conn, other_tenant.company_id, 150, 2)  # small: searched exactly
    conn.execute("ANALYZE chunks")
    return tenant.company_id, other_tenant.company_id


def plan_indexes(conn: psycopg.Connection[Any], company_id: int, generic: bool = False, dim: int = DIM) -> str:
    """The plan of the company's graph query (its vector search through an HNSW index)."""
    query = sql.SQL("EXPLAIN (COSTS OFF) ") + vector_query(False, company_id)
    params = {"q": HashEmbedder(dim).embed(["gamma delta"])[0], "n": 10, "space": None}
    with conn.transaction():
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):  # tiny tables: push onto an index
            conn.execute(sql.SQL("SET LOCAL {} = off").format(sql.Identifier(setting)))
        if generic:  # what a prepared statement may run after five executions
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = conn.execute(query, params, prepare=generic).fetchall()
    return " ".join(r[0] for r in rows)


def _events(conn: psycopg.Connection[Any], action: str) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT target, from_state, to_state, details FROM ops_events WHERE action = %s",
                        (action,)).fetchall()


def test_dry_run_plans_and_changes_nothing(settings: Settings, conn: psycopg.Connection[Any],
                                           companies: tuple[int, int]) -> None:
    large, _ = companies
    result = tenant_indexes(settings, POLICY, apply=False)
    assert [(m.action, m.company_id) for m in result.moves] == [(Action.build, large)]
    assert result.sentence().startswith(f"would build company {large}'s index")
    assert conn.execute("SELECT to_regclass(%s)", (tenant_index_name(large),)).fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM ops_events WHERE action LIKE 'index.tenant%'").fetchone() == (0,)


def test_the_move_is_online_audited_and_the_search_uses_the_own_index(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    large, small = companies
    embedder = HashEmbedder(DIM)
    req = SearchRequest(query="gamma delta item1x7", k=10, mode="vector")
    index = tenant_index_name(large)
    assert index not in plan_indexes(conn, large)  # before: the shared graph

    # An open transaction with an older snapshot holds CREATE INDEX CONCURRENTLY in its last wait
    # ("waiting for old snapshots") until the progress callback ends it, so the callback surely runs
    # while the build is under way (in whatever phase it first sees), whatever the machine's speed.
    holder = psycopg.connect(settings.database_url or "")
    holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM companies").fetchone()
    during: list[tuple[str, list[int]]] = []

    def search_while_building(partition: str, phase: str, done: int, total: int) -> None:
        if holder.closed:
            return
        with psycopg.connect(settings.database_url or "", autocommit=True) as other:
            from pgvector.psycopg import register_vector

            register_vector(other)
            during.append((phase, [h.chunk_id for h in retrieve(other, embedder, large, req, ranking=CHUNKS)]))
        holder.close()  # ends the transaction: the build goes on

    try:
        result = tenant_indexes(settings, POLICY, apply=True, progress=search_while_building)
    finally:
        holder.close()
    assert result.sentence().startswith(f"built company {large}'s index")
    (phase, ids), = during
    assert phase and len(ids) == 10, "a search answered while the build was under way"

    plan = plan_indexes(conn, large)
    assert f"_c{large}_hnsw_idx" in plan and "embedding_idx" not in plan
    assert f"_c{large}_hnsw_idx" in plan_indexes(conn, large, generic=True), "a generic plan uses it too"
    assert f"_c{large}_hnsw_idx" not in plan_indexes(conn, small)
    assert has_own_index(conn, Cache(None), large) and not has_own_index(conn, Cache(None), small)

    conn.execute("SET hnsw.ef_search = 200")
    found = retrieve(conn, embedder, large, req, ranking=CHUNKS)
    exact = retrieve(conn, embedder, large, req, exact=True, ranking=CHUNKS)
    assert [h.chunk_id for h in found] == [h.chunk_id for h in exact], "exact order through the own index"

    (target, before, after, details), = _events(conn, "index.tenant.build")
    assert (target, before, after) == (index, "shared index", "own index")
    assert details["rows"] == 600 and details["partitions_built"]

    again = tenant_indexes(settings, POLICY, apply=True)
    assert again.moves == [] and again.own == [large]


def test_a_new_partition_gets_its_piece_and_an_incomplete_index_is_completed(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    large, _ = companies
    tenant_indexes(settings, POLICY, apply=True)
    assert ensure_partitions(conn, datetime(2040, 1, 1, tzinfo=UTC), ahead=0) == [  # the core's premake
        "documents_p2040_01", "chunks_p2040_01"]
    pieces = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'chunks_p2040_01' "
                          "AND indexdef LIKE %s", (f"%company_id = {large}%",)).fetchall()
    assert len(pieces) == 1
    assert has_own_index(conn, Cache(None), large)

    # an interrupted build: the parent exists but a partition lacks its piece
    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(tenant_index_name(large))))
    conn.execute(sql.SQL("CREATE INDEX {} ON ONLY chunks USING hnsw (embedding vector_cosine_ops) "
                         "WHERE company_id = {}").format(sql.Identifier(tenant_index_name(large)), sql.Literal(large)))
    assert not has_own_index(conn, Cache(None), large)
    plan = tenant_indexes(settings, POLICY, apply=False)
    assert [(m.action, m.company_id) for m in plan.moves] == [(Action.complete, large)]
    tenant_indexes(settings, POLICY, apply=True)
    assert has_own_index(conn, Cache(None), large)
    (_, before, after, _), = _events(conn, "index.tenant.complete")
    assert (before, after) == ("own index (incomplete)", "own index")


def test_an_index_no_longer_wanted_is_dropped_and_audited(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    large, _ = companies
    tenant_indexes(settings, POLICY, apply=True)
    # 600 chunks stay above min_rows·(1 - h) = 480 for min_rows 600 (kept), not for 800 (dropped)
    keep = VectorIndexPolicy.model_validate({"tenants": {"min_rows": 600, "max_share": 0.9}})
    assert tenant_indexes(settings, keep, apply=True).moves == []
    shrink = VectorIndexPolicy.model_validate({"tenants": {"min_rows": 800, "max_share": 0.9}})
    result = tenant_indexes(settings, shrink, apply=True)
    assert [(m.action, m.company_id) for m in result.moves] == [(Action.drop, large)]
    assert conn.execute("SELECT to_regclass(%s)", (tenant_index_name(large),)).fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE %s",
                        (f"%company_id = {large})%",)).fetchone() == (0,)
    (target, before, after, details), = _events(conn, "index.tenant.drop")
    assert (target, before, after) == (tenant_index_name(large), "own index", "shared index")
    assert details["rows"] == 600


def test_cli_dry_run_then_the_daemon_job_applies(settings: Settings, conn: psycopg.Connection[Any],
                                                 companies: tuple[int, int], tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys

    from opsctl.vindex.jobs import job_tenant_indexes
    from tests.conftest import project_root

    large, _ = companies
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "vector-index.yaml").write_text(
        (project_root() / "policies" / "vector-index.yaml").read_text()
        .replace("min_rows: 5000", "min_rows: 400").replace("max_share: 0.5", "max_share: 0.9"))
    env = {**os.environ, "OPSCTL_DATABASE_URL": settings.database_url or "", "OPSCTL_POLICY_DIR": str(policies)}
    out = subprocess.run([sys.executable, "-m", "opsctl.cli", "index", "tenants", "-o", "json"], env=env,
                         capture_output=True, text=True, cwd=project_root())
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["applied"] is False and plan["own_before"] == []
    assert [(m["action"], m["company_id"], m["chunks"]) for m in plan["moves"]] == [("build", large, 600)]
    assert conn.execute("SELECT to_regclass(%s)", (tenant_index_name(large),)).fetchone() == (None,)

    assert job_tenant_indexes(settings, policies).startswith(f"built company {large}'s index")
    assert has_own_index(conn, Cache(None), large)


def test_a_build_waits_for_another_sessions_build_on_the_partition(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    """A killed runner's index build goes on in the server; a second concurrent build on the same
    partition would deadlock with it, so the next run waits for it first."""
    import threading

    from opsctl.vindex.online import wait_for_other_builds

    partition = conn.execute("SELECT tableoid::regclass::text FROM chunks LIMIT 1").fetchone()[0]  # type: ignore[index]
    holder = psycopg.connect(settings.database_url or "")  # an old snapshot: the build below waits for it
    holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM companies").fetchone()

    def build() -> None:
        with psycopg.connect(settings.database_url or "", autocommit=True) as other:
            other.execute(sql.SQL("CREATE INDEX CONCURRENTLY orphan_idx ON {} (id)").format(sql.Identifier(partition)))

    orphan = threading.Thread(target=build)
    orphan.start()
    try:
        # the progress row appears as the command starts, before its first transaction commits the
        # index to the catalog: wait for the catalog entry (the build then waits for the old snapshot)
        while conn.execute("SELECT to_regclass('orphan_idx') IS NOT NULL AND (SELECT count(*) FROM"
                           " pg_stat_progress_create_index) = 1").fetchone() != (True,):
            orphan.join(0.05)
        polls: list[str] = []

        def sleep(seconds: float) -> None:
            polls.append(conn.execute("SELECT to_regclass('orphan_idx')::text").fetchone()[0])  # type: ignore[index]
            holder.close()  # the other build can finish now
            orphan.join(seconds)

        wait_for_other_builds(conn, partition, sleep)
        assert polls and polls[0] == "orphan_idx"  # it waited while the other build ran
        assert conn.execute("SELECT count(*) FROM pg_stat_progress_create_index").fetchone() == (0,)
    finally:
        holder.close()
        orphan.join(60)
    valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'orphan_idx'::regclass").fetchone()
    assert valid == (True,)


def test_a_drop_takes_the_pieces_an_interrupted_build_left_unattached(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    from opsctl.vindex.online import PARTITIONS_SQL
    from opsctl.vindex.tenants_pg import piece_name

    large, _ = companies
    tenant_indexes(settings, POLICY, apply=True)
    # a killed run: the parent made again, a piece built on a partition (the CREATE INDEX CONCURRENTLY
    # finished in the server) but never attached
    parent = sql.Identifier(tenant_index_name(large))
    conn.execute(sql.SQL("DROP INDEX {}").format(parent))
    conn.execute(sql.SQL("CREATE INDEX {} ON ONLY chunks USING hnsw (embedding vector_cosine_ops) "
                         "WHERE company_id = {}").format(parent, sql.Literal(large)))
    partition = conn.execute(PARTITIONS_SQL).fetchone()[0]
    piece = piece_name(partition, large)
    conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) WHERE company_id = {}").format(
        sql.Identifier(piece), sql.Identifier(partition), sql.Literal(large)))
    shrink = VectorIndexPolicy.model_validate({"tenants": {"min_rows": 800, "max_share": 0.9}})
    result = tenant_indexes(settings, shrink, apply=True)
    assert [(m.action, m.company_id) for m in result.moves] == [(Action.drop, large)]
    assert conn.execute("SELECT to_regclass(%s)", (piece,)).fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE %s",
                        (f"%company_id = {large})%",)).fetchone() == (0,)
