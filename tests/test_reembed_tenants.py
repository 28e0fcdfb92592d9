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


GROW = POLICY.model_copy(update={"tenants": POLICY.tenants.model_copy(update={"min_rows": 100})})  # both get one
SHRINK = POLICY.model_copy(update={"tenants": POLICY.tenants.model_copy(update={"min_rows": 1000})})  # neither


def in_backfill(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    """A re-embed started and one batch into its backfill (the runner stopped by its budget, on a
    clock that ticks once per look)."""
    start(settings, target(settings, "hash", DIM), "tester")
    ticks = iter(range(1000))
    result = run(settings, "tester", budget_seconds=3, monotonic=lambda: float(next(ticks)))
    assert result.steps == ["add_column", "backfill"] and result.embedded == 64
    assert status(conn, datetime.now(UTC))["next"] == "backfill"


def test_a_tenant_run_during_the_backfill_builds_and_the_switch_carries_it(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    large, small = companies
    in_backfill(settings, conn)
    dry = tenant_indexes(settings, GROW, apply=False)
    assert [m.company_id for m in dry.moves] == [small] and dry.waits is None and "refuse" not in dry.sentence()
    built = tenant_indexes(settings, GROW, apply=True)
    found = own_index(conn, tenant_index_name(small))
    assert built.done and found is not None and found[0]
    assert conn.execute("SELECT count(*) FROM ops_events WHERE action = 'index.tenant.build'").fetchone() == (2,)

    result = run(settings, "tester")
    assert result.finished == "the old vectors are dropped"
    assert active(conn).spec.dim == DIM
    assert_carried(conn, small, large)  # searched through its own index, on the new vectors
    assert_carried(conn, large, small)
    switched = conn.execute("SELECT details FROM ops_events WHERE action = 'reembed.switch'").fetchone()
    assert switched is not None and switched[0]["tenant_indexes"] == sorted([large, small])


def test_a_tenant_run_dropping_an_index_during_the_backfill_leaves_no_stale_copy(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int]) -> None:
    large, _ = companies
    in_backfill(settings, conn)
    dropped = tenant_indexes(settings, SHRINK, apply=True)
    assert [(m.action.value, m.company_id) for m in dropped.moves] == [("drop", large)]
    assert own_index(conn, tenant_index_name(large)) is None

    result = run(settings, "tester")
    assert result.finished == "the old vectors are dropped" and "carry_tenant_indexes" not in result.steps
    assert active(conn).spec.dim == DIM
    assert own_index(conn, tenant_index_name(large)) is None and copies_left(conn) == 0
    assert f"_c{large}_" not in plan_indexes(conn, large, dim=DIM)
    switched = conn.execute("SELECT details FROM ops_events WHERE action = 'reembed.switch'").fetchone()
    assert switched is not None and switched[0]["tenant_indexes"] == []


def test_once_the_carry_has_started_a_tenant_run_is_refused_until_the_switch(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int], tmp_path: Any) -> None:
    from opsctl.vindex.jobs import job_tenant_indexes
    from opsctl.vindex.tenants_service import ReembedInProgress

    large, small = companies
    start(settings, target(settings, "hash", DIM), "tester")
    (policies := tmp_path / "p").mkdir()
    (policies / "vector-index.yaml").write_text("tenants:\n  min_rows: 100\n  max_share: 0.9\n")
    refused: dict[str, str] = {}

    def report(step: str, space: Any) -> None:
        # during the carry's build (the runner holds the tenant runs' lock), then at catch-up and switch
        key = "carry" if step.startswith("tenant index") else step
        if key in ("carry", "catch_up", "switch") and key not in refused:
            with pytest.raises(ReembedInProgress) as caught:
                tenant_indexes(settings, GROW, apply=True)  # would build the small company's index
            refused[key] = str(caught.value)
            dry = tenant_indexes(settings, GROW, apply=False)
            assert dry.moves and "--apply would refuse now" in dry.sentence()
            refused[f"{key} dry"] = dry.sentence()
            refused[f"{key} job"] = job_tenant_indexes(settings, policies)

    result = run(settings, "tester", report=report)
    assert result.finished == "the old vectors are dropped"
    assert {"carry", "switch"} <= set(refused)
    for key in ("carry", "switch"):
        assert "re-embed into hash-v1 (48-d)" in refused[key] and "carrying the own indexes" in refused[key]
        assert "after its switch" in refused[f"{key} dry"]
        assert refused[f"{key} job"].startswith("tenant indexes left as they are until the re-embed's switch")
    assert_carried(conn, large, small)
    assert own_index(conn, tenant_index_name(small)) is None  # nothing built during the carry

    after = tenant_indexes(settings, GROW, apply=True)  # after the switch it proceeds, on the new vectors
    assert [m.company_id for m in after.moves] == [small] and after.done
    assert_carried(conn, small, large)


def test_a_tenant_run_and_the_copy_never_build_at_once(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int], db_url: str) -> None:
    from opsctl.vindex.tenants_pg import TENANT_INDEX_LOCK

    large, small = companies
    start(settings, target(settings, "hash", DIM), "tester")
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


def test_the_switch_waits_for_a_tenant_run_that_began_before_the_carry(
        settings: Settings, conn: psycopg.Connection[Any], tenant: Any, other_tenant: Any, db_url: str) -> None:
    """No own index when the runner looks (nothing to carry), and a tenant run that began during the
    backfill builds one before the switch: the switch decides under the tenant runs' lock, so it
    neither queues its table lock behind that build nor switches without a copy of the new index."""
    from opsctl.vindex.tenants_pg import TENANT_INDEX_LOCK, build

    load_chunks(conn, tenant.company_id, 600, 1)
    load_chunks(conn, other_tenant.company_id, 150, 2)
    conn.execute("ANALYZE chunks")
    start(settings, target(settings, "hash", DIM), "tester")
    with psycopg.connect(db_url, autocommit=True) as other:  # the tenant run, begun during the backfill
        assert other.execute("SELECT pg_try_advisory_lock(%s, %s)", TENANT_INDEX_LOCK).fetchone() == (True,)

        def report(step: str, space: Any) -> None:
            if step == "switch" and own_index(conn, tenant_index_name(tenant.company_id)) is None:
                build(other, db_url, tenant.company_id, settings.hnsw_m, settings.hnsw_ef_construction)

        held = run(settings, "tester", report=report)
        assert "carry_tenant_indexes" not in held.steps and held.steps[-1] == "switch"
        assert held.waiting and "tenant index run" in held.waiting
        assert building(conn) is not None  # not switched: the tenant run still holds the lock
        other.execute("SELECT pg_advisory_unlock(%s, %s)", TENANT_INDEX_LOCK)
    result = run(settings, "tester")
    assert result.steps.index("carry_tenant_indexes") < result.steps.index("switch")
    assert result.finished == "the old vectors are dropped"
    assert_carried(conn, tenant.company_id, other_tenant.company_id)


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


def test_a_copy_killed_mid_build_whose_own_index_is_then_dropped_leaves_nothing(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int], db_url: str) -> None:
    """Between two runs of the carry a company loses its own index (by hand: tenant runs are refused
    then): the switch drops its copy, with the piece the killed build left unattached."""
    from opsctl.vindex.online import PARTITIONS_SQL, wait_for_other_builds

    large, _ = companies
    start(settings, target(settings, "hash", DIM), "tester")
    kill_when_ready(KILLED_COPY, db_url)
    for (partition,) in conn.execute(PARTITIONS_SQL).fetchall():  # the killed build ends in the server
        wait_for_other_builds(conn, partition)
    conn.execute(f"DROP INDEX {tenant_index_name(large)}")

    result = run(settings, "resumer")
    assert "carry_tenant_indexes" not in result.steps and result.finished == "the old vectors are dropped"
    assert own_index(conn, tenant_index_name(large)) is None and copies_left(conn) == 0
    switched = conn.execute("SELECT details FROM ops_events WHERE action = 'reembed.switch'").fetchone()
    assert switched is not None and switched[0]["tenant_indexes"] == []


KILLED_TENANT_RUN = """
import sys
from core.config import Settings
from opsctl.vindex.policy import VectorIndexPolicy
from opsctl.vindex.tenants_service import tenant_indexes
settings = Settings(database_url=sys.argv[1], embedder="hash", embed_dim=384)
policy = VectorIndexPolicy.model_validate({"tenants": {"min_rows": 100, "max_share": 0.9, "hysteresis": 0.2}})
def progress(partition, phase, done, total):  # a partition's piece being built
    print("ready", flush=True)
    sys.stdin.read()  # until killed
tenant_indexes(settings, policy, apply=True, progress=progress)
"""


def test_a_tenant_run_killed_during_the_backfill_is_carried_whole(
        settings: Settings, conn: psycopg.Connection[Any], companies: tuple[int, int], db_url: str) -> None:
    """kill -9 of a tenant run mid-build during the backfill: its incomplete own index (and the piece
    its build left in the server, unattached) does not stop the re-embed; after the switch the
    company has its own index, complete, on the new vectors."""
    large, small = companies
    in_backfill(settings, conn)
    kill_when_ready(KILLED_TENANT_RUN, db_url)
    found = own_index(conn, tenant_index_name(small))
    assert found is not None and not found[0], "killed before its pieces were attached: incomplete"

    result = run(settings, "tester")
    assert "carry_tenant_indexes" in result.steps and result.finished == "the old vectors are dropped"
    assert_carried(conn, small, large)
    assert_carried(conn, large, small)
    stray = conn.execute("SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
                         " WHERE c.relkind = 'i' AND c.relname LIKE %s AND NOT EXISTS (SELECT 1 FROM pg_inherits i"
                         " WHERE i.inhrelid = x.indexrelid)", (f"%\\_c{small}\\_hnsw\\_idx",)).fetchone()
    assert stray == (0,), "a piece of the killed build left behind"
