"""A re-embed carries the companies' own HNSW indexes across its switch (real PostgreSQL): right
after the switch the canonical index is valid, on the new ``embedding`` and used by the company's
graph query; a killed copy resumes; a tenant index run and the copy never build at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from core.cache import Cache
from core.config import Settings
from core.search.retrieve import has_own_index
from core.search.tenantindex import tenant_index_name
from core.spaces.store import active, building
from opsctl.reembed.service import run, run_to_end, start, status, target
from opsctl.vindex.tenants_service import tenant_indexes
from tests.test_reembed import kill_when_ready
from tests.test_tenant_indexes import POLICY, load_chunks, plan_indexes

DIM = 48


@pytest.fixture
def companies(settings: Settings, conn: psycopg.Connection[Any], tenant: Any, other_tenant: Any) -> tuple[int, int]:
    """A large company with its own index (600 chunks), a small one searched exactly (150)."""
    load_chunks(conn, tenant.company_id, 600, 1)
    load_chunks(conn, other_tenant.company_id, 150, 2)
    conn.execute("ANALYZE chunks")
    built = tenant_indexes(settings, POLICY, apply=True)
    assert [m.company_id for m in built.moves] == [tenant.company_id]
    return tenant.company_id, other_tenant.company_id


def own_index(conn: psycopg.Connection[Any], name: str) -> tuple[bool, str] | None:
    """(valid, definition) of the index ``name``; None: no such index."""
    row = conn.execute("SELECT x.indisvalid, pg_get_indexdef(x.indexrelid) FROM pg_index x"
                       " WHERE x.indexrelid = to_regclass(%s)", (name,)).fetchone()
    return None if row is None else (bool(row[0]), str(row[1]))


def pieces(conn: psycopg.Connection[Any], name: str) -> list[tuple[str, bool, str]]:
    """(name, valid, definition) of every partition's piece of the partitioned index ``name``."""
    return [(r[0], bool(r[1]), str(r[2])) for r in conn.execute(
        "SELECT c.relname, x.indisvalid, pg_get_indexdef(x.indexrelid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_index x ON x.indexrelid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(%s) ORDER BY 1", (name,)).fetchall()]


def copies_left(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_class WHERE relkind IN ('i', 'I') AND relname LIKE %s",
                       ("%\\_next\\_idx",)).fetchone()
    return int(row[0]) if row else -1


def assert_carried(conn: psycopg.Connection[Any], large: int, small: int) -> None:
    """The company's canonical own index: valid, every piece valid and canonically named, on the new
    ``embedding``, used by its graph query; no copy left behind."""
    index = tenant_index_name(large)
    found = own_index(conn, index)
    assert found is not None, "the own index was lost with the old vectors"
    valid, definition = found
    assert valid and "hnsw (embedding vector_cosine_ops)" in definition and f"(company_id = {large})" in definition
    parts = pieces(conn, index)
    assert parts and all(v and "(embedding vector_cosine_ops)" in d for _, v, d in parts)
    assert all(name.endswith(f"_c{large}_hnsw_idx") for name, _, _ in parts)
    assert f"_c{large}_hnsw_idx" in plan_indexes(conn, large, dim=DIM)
    assert f"_c{large}_hnsw_idx" not in plan_indexes(conn, small, dim=DIM)
    assert has_own_index(conn, Cache(None), large)
    assert copies_left(conn) == 0


def test_the_own_indexes_are_on_the_new_vectors_right_after_the_switch(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    large, small = companies
    start(settings, target(settings, "hash", DIM), "tester")
    result = run(settings, "tester")
    assert result.steps.index("build_index") < result.steps.index("carry_tenant_indexes") \
        < result.steps.index("switch")
    assert active(conn).spec.dim == DIM
    assert_carried(conn, large, small)
    assert tenant_indexes(settings, POLICY, apply=False).moves == []  # the nightly run finds it in place

    (target_, before, after, details), = conn.execute(
        "SELECT target, from_state, to_state, details FROM ops_events WHERE action = 'reembed.tenant_index'").fetchall()
    assert (target_, before, after) == (tenant_index_name(large), "own index on the old vectors",
                                        "copy on the new vectors")
    assert details["company"] == large and details["partitions_built"]
    switched = conn.execute("SELECT details FROM ops_events WHERE action = 'reembed.switch'").fetchone()
    assert switched is not None and switched[0]["tenant_indexes"] == [large]


def test_a_tenant_index_run_and_the_copy_never_build_at_once(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int], db_url: str,
        tmp_path: Any) -> None:
    from opsctl.vindex.jobs import job_tenant_indexes
    from opsctl.vindex.tenants_pg import TENANT_INDEX_LOCK
    from opsctl.vindex.tenants_service import ReembedInProgress

    large, small = companies
    start(settings, target(settings, "hash", DIM), "tester")
    grow = POLICY.model_copy(update={"tenants": POLICY.tenants.model_copy(update={"min_rows": 100})})
    with pytest.raises(ReembedInProgress, match="re-embed into hash-v1 \\(48-d\\) is in progress"):
        tenant_indexes(settings, grow, apply=True)  # would build the small company's index
    assert own_index(conn, tenant_index_name(small)) is None
    dry = tenant_indexes(settings, grow, apply=False)  # the plan shows, and says --apply would refuse now
    assert dry.moves and "--apply would refuse now: a re-embed into hash-v1 (48-d) is in progress" in dry.sentence()
    (policies := tmp_path / "p").mkdir()
    (policies / "vector-index.yaml").write_text("tenants:\n  min_rows: 100\n  max_share: 0.9\n")
    assert job_tenant_indexes(settings, policies).startswith("tenant indexes left as they are: a re-embed")

    with psycopg.connect(db_url, autocommit=True) as other:  # a tenant index run going on
        assert other.execute("SELECT pg_try_advisory_lock(%s, %s)", TENANT_INDEX_LOCK).fetchone() == (True,)
        held = run(settings, "tester")
        assert held.steps[-1] == "carry_tenant_indexes" and held.waiting
        assert held.sentence().startswith("re-embed waits: a tenant index run")
        assert building(conn) is not None and copies_left(conn) == 0  # nothing built meanwhile
        shown = status(conn, datetime.now(UTC))
        assert shown["next"] == "carry_tenant_indexes" and shown["building"]["tenant_indexes_to_carry"] == [large]

        told: list[str] = []

        def run_finishes(seconds: float) -> None:  # --wait polls: the tenant run ends meanwhile
            other.execute("SELECT pg_advisory_unlock(%s, %s)", TENANT_INDEX_LOCK)

        done = run_to_end(settings, "tester", lambda step, space: told.append(step), sleep=run_finishes)
    assert any(step.startswith("waiting: a tenant index run (`opsctl index tenants`) is building") for step in told)
    assert done.finished == "the old vectors are dropped"
    assert_carried(conn, large, small)
    assert own_index(conn, tenant_index_name(small)) is None


KILLED_COPY = """
import sys
from core.config import Settings
from opsctl.reembed import service
settings = Settings(database_url=sys.argv[1], embedder="hash", embed_dim=384)
def report(step, space):
    if step.startswith("tenant index"):  # the copy's build under way
        print("ready", flush=True)
        sys.stdin.read()  # until killed
service.run(settings, "killed", report=report)
"""


def test_a_copy_killed_mid_build_is_completed_by_the_next_run(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int], db_url: str) -> None:
    large, small = companies
    space = start(settings, target(settings, "hash", DIM), "tester")
    kill_when_ready(KILLED_COPY, db_url)
    copy = f"chunks_c{large}_s{space.id}_next_idx"
    found = own_index(conn, copy)
    assert found is not None and not found[0], "killed before its pieces were attached: incomplete"

    result = run(settings, "resumer")
    assert "carry_tenant_indexes" in result.steps and result.finished == "the old vectors are dropped"
    assert_carried(conn, large, small)
    audited = conn.execute("SELECT actor FROM ops_events WHERE action = 'reembed.tenant_index'").fetchall()
    assert audited == [("resumer",)]
