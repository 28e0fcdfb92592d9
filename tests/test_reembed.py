"""`opsctl index reembed` against real PostgreSQL: searches keep the old space until the one
transaction that switches, ingest during the re-embed gets new vectors, a killed re-embedder
resumes, a process configured with the old embedder follows the database."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from core import metrics
from core.config import Settings
from core.embed import HashEmbedder
from core.errors import ConfigError
from core.ingest.worker import IngestProcessor
from core.search.retrieve import Mode, SearchRequest, retrieve
from core.spaces.follow import SpaceEmbedder, follow_database, space_changed
from core.spaces.store import Space, active, building, column_dims
from opsctl.reembed import pg
from opsctl.reembed.service import run, start, target
from tests.conftest import RunningApi, client_for, drain, make_settings, project_root

WORDS = ["refund", "invoice", "parcel", "password", "backup", "disk", "kernel", "network", "socket", "cache",
         "queue", "worker", "index", "vector", "search", "tenant", "policy", "cluster", "replica", "schedule",
         "archive", "partition", "token", "session"]
QUERY = "restore a backup of the cluster replica"


def corpus(n: int, start_at: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(start_at)
    return [{"external_id": f"doc-{i}", "title": f"doc {i}",
             "text": " ".join(rng.choice(WORDS, size=12)) + f" item{i}"} for i in range(start_at, start_at + n)]


def ingest(api: RunningApi, key: str, docs: list[dict[str, Any]]) -> None:
    with client_for(api, key) as client:
        response = client.post("/v1/documents", json={"documents": docs})
    assert response.status_code == 202, response.text


def search(api: RunningApi, key: str, query: str = QUERY, k: int = 5) -> dict[str, Any]:
    with client_for(api, key) as client:
        response = client.post("/v1/search", json={"query": query, "mode": "vector", "k": k})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def cosine(dim: int, query: str, text: str) -> float:
    e = HashEmbedder(dim)
    return float(e.embed([query])[0] @ e.embed([text])[0])


def in_space(results: list[dict[str, Any]], dim: int) -> bool:
    """Every score is the cosine of the query and the text in the ``dim``-d hash space."""
    return all(abs(r["score"] - cosine(dim, QUERY, r["text"])) < 1e-4 for r in results)


def connect(db_url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(db_url, autocommit=True)
    register_vector(conn)
    return conn


def drain_following(settings: Settings, db_url: str) -> int:
    """The ingest worker as it runs: its embedder follows the database's active space."""
    with connect(db_url) as conn:
        processor = IngestProcessor(settings, follow_database(settings, conn))
        done = 0
        while (result := processor.run_batch(conn)).claimed:
            done += result.done
    return done


def events(conn: psycopg.Connection[Any], action: str) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT from_state, to_state FROM ops_events WHERE action = %s ORDER BY id",
                        (action,)).fetchall()


def _array(value: Any) -> Any:
    return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)


def stored_match(conn: psycopg.Connection[Any], dim: int) -> bool:
    rows = conn.execute("SELECT body, embedding FROM chunks ORDER BY id").fetchall()
    vectors = HashEmbedder(dim).embed([r[0] for r in rows])
    return bool(rows) and all(np.allclose(_array(r[1]), v, atol=1e-6) for r, v in zip(rows, vectors, strict=True))


def backfilled(api: RunningApi, tenant: Any, settings: Settings, chunks: int, dim: int) -> Space:
    """``chunks`` one-chunk documents ingested, a re-embed into hash ``dim`` started and backfilled."""
    assert settings.database_url
    ingest(api, tenant.api_key, corpus(chunks))
    drain(settings, settings.database_url)
    space = start(settings, target(settings, "hash", dim), "tester")
    with connect(settings.database_url) as conn:
        pg.add_column(conn, space)
        while pg.backfill_batch(conn, building(conn), HashEmbedder(dim), 16):  # type: ignore[arg-type]
            pass
    return space


@pytest.mark.parametrize("exact_max_rows", [10_000, 0])  # every chunk compared, or the HNSW index
def test_searches_use_the_old_space_until_the_switch_then_the_new(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str, exact_max_rows: int) -> None:
    api.settings.vector_exact_max_rows = exact_max_rows
    ingest(api, tenant.api_key, corpus(40))
    assert drain(settings, db_url) == 40
    before = search(api, tenant.api_key)
    assert before["results"] and in_space(before["results"], 384)

    space = start(settings, target(settings, "hash", 256), "tester")
    with connect(db_url) as conn:
        pg.add_column(conn, space)
        pg.backfill_batch(conn, building(conn), HashEmbedder(256), 20)  # type: ignore[arg-type]
        assert building(conn).chunks_done == 20  # type: ignore[union-attr]
    during = search(api, tenant.api_key, k=4)  # another request: not the cached answer
    assert during["cached"] is False and in_space(during["results"], 384)

    result = run(settings, "tester")
    assert result.finished == "the old vectors are dropped" and "switch" in result.steps

    after = search(api, tenant.api_key)
    assert after["cached"] is False  # the switch bumped the data version: the old space's answer is gone
    assert after["results"] and in_space(after["results"], 256) and not in_space(after["results"], 384)
    assert api.embedder.dim == 256  # the API, started in the old space, follows the database
    with connect(db_url) as conn:
        assert column_dims(conn) == {"embedding": 256}
        assert stored_match(conn, 256)
        assert active(conn).spec.dim == 256 and building(conn) is None
        assert events(conn, "reembed.start") == [("hash-v1 (384-d)", "hash-v1 (256-d)")]
        assert events(conn, "reembed.switch") == [("hash-v1 (384-d)", "hash-v1 (256-d)")]
        states = conn.execute("SELECT dim, state FROM vector_spaces ORDER BY id").fetchall()
        assert states == [(384, "retired"), (256, "active")]
        hnsw = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'chunks' AND indexdef LIKE "
                            "'%%hnsw (embedding vector_cosine_ops)%%'").fetchone()
        assert hnsw == (1,)


def test_chunks_written_during_the_re_embed_get_new_vectors_before_the_switch(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str) -> None:
    backfilled(api, tenant, settings, 30, 128)
    with connect(db_url) as conn:
        ingest(api, tenant.api_key, [*corpus(10, start_at=30), {"external_id": "doc-0", "text": "rewritten body"}])
        assert drain_following(settings, db_url) == 11  # in the old space, the new column left empty
        assert conn.execute("SELECT count(*) FROM chunks WHERE embedding_next IS NULL").fetchone() == (11,)
        result = run(settings, "tester", batch=2)  # the switch embeds up to 4 batches: 8 chunks
        assert result.steps.count("catch_up") == 2 and "build_index" in result.steps and "switch" in result.steps
        switched = conn.execute("SELECT details FROM ops_events WHERE action = 'reembed.switch'").fetchone()
        assert switched is not None and switched[0]["embedded_in_switch"] == 7
        assert stored_match(conn, 128)
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (40,)
    hit = search(api, tenant.api_key, "rewritten body")["results"][0]
    assert hit["external_id"] == "doc-0" and hit["score"] == pytest.approx(1.0, abs=1e-5)


KILLED_RUNNER = """
import sys
from core.config import Settings
from opsctl.reembed import service
settings = Settings(database_url=sys.argv[1], embedder="hash", embed_dim=384)
batches = 0
def report(step, space):
    global batches
    if step == "backfill":
        batches += 1
        if batches == 4:  # three batches committed
            print("ready", flush=True)
            sys.stdin.read()  # until killed
service.run(settings, "killed", batch=5, report=report)
"""


def kill_when_ready(script: str, db_url: str) -> None:
    """Run ``script`` (argument: the database URL) in a process of its own and kill -9 it once it prints "ready"."""
    child = subprocess.Popen([sys.executable, "-c", script, db_url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=project_root(),
                             env={**os.environ, "PYTHONPATH": str(project_root())})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)


def test_a_killed_re_embedder_resumes_after_its_cursor(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str) -> None:
    ingest(api, tenant.api_key, corpus(40))
    drain(settings, db_url)
    start(settings, target(settings, "hash", 192), "tester")
    kill_when_ready(KILLED_RUNNER, db_url)
    with connect(db_url) as conn:
        space = building(conn)
        assert space is not None and space.chunks_done == 15 and isinstance(space.cursor, list)
        result = run(settings, "resumer")
        assert not result.busy and result.embedded == 25  # the rest, nothing twice
        assert active(conn).spec.dim == 192 and stored_match(conn, 192)
        done = conn.execute("SELECT chunks_done, chunks_total FROM vector_spaces WHERE state = 'active'").fetchone()
        assert done == (40, 40)


def test_a_process_configured_with_the_old_embedder_after_the_switch_follows_the_database(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    ingest(api, tenant.api_key, corpus(12))
    drain(settings, db_url)
    with connect(db_url) as conn:
        stale = SpaceEmbedder(settings, active(conn))  # a process that embedded queries before the switch
    start(settings, target(settings, "hash", 64), "tester")
    run(settings, "tester")

    with connect(db_url) as conn:
        # a query vector of the old space is refused by the database, never compared with the new vectors
        req = SearchRequest(query=QUERY, mode=Mode.vector)
        with pytest.raises(psycopg.Error) as refused:
            retrieve(conn, stale, tenant.company_id, req)
        assert space_changed(refused.value)
        assert stale.refresh(conn) and stale.dim == 64
        assert retrieve(conn, stale, tenant.company_id, req)

        with caplog.at_level(logging.WARNING):
            started_now = follow_database(make_settings(database_url=db_url), conn)  # configured: hash 384
        assert started_now.dim == 64 and started_now.name == "hash-v1"
        assert "configured embedder hash-v1 (384-d), but the database's active vector space is hash-v1 (64-d)" \
            in caplog.text
        assert metrics.EMBEDDER_MISMATCH._value.get() == 1  # type: ignore[attr-defined]

    ingest(api, tenant.api_key, corpus(3, start_at=100))
    with pytest.raises(ConfigError, match="does not write the database's active vector space hash-v1 \\(64-d\\)"):
        drain(settings, db_url)  # an embedder fixed to the old space writes nothing
    with connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM ingest_jobs WHERE status = 'queued'").fetchone() == (3,)
    assert drain_following(settings, db_url) == 3
    with connect(db_url) as conn:
        assert stored_match(conn, 64)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPSCTL_DATABASE_URL": settings.database_url or "", "OPSCTL_ACTOR": "cli-tester",
           "PYTHONPATH": str(project_root())}
    return subprocess.run([sys.executable, "-m", "opsctl.cli", "index", "reembed", *args], env=env,
                          capture_output=True, text=True, cwd=project_root(), timeout=300)


def test_cli_plans_starts_shows_waits_and_aborts(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str) -> None:
    ingest(api, tenant.api_key, corpus(20))
    drain(settings, db_url)
    planned = cli(settings, "--embedder", "hash", "--dim", "96", "-o", "json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert (plan["chunks"], plan["sample_chunks"], plan["target"]) == (20, 20, "hash-v1 (96-d)")
    assert plan["estimate_seconds"] is not None and "dry run" in planned.stderr
    with connect(db_url) as conn:
        assert building(conn) is None  # a dry run records nothing

    same = cli(settings, "--embedder", "hash", "--apply")
    assert same.returncode == 1 and "hash-v1 (384-d) is the active vector space already" in same.stderr
    assert cli(settings, "--embedder", "word2vec").returncode == 2

    assert cli(settings, "--embedder", "hash", "--dim", "96", "--apply").returncode == 0
    shown = json.loads(cli(settings, "--status", "-o", "json").stdout)
    assert shown["building"]["dim"] == 96 and shown["building"]["chunks_total"] == 20
    assert shown["next"] == "add_column"

    kept = cli(settings, "--abort")
    assert kept.returncode == 0 and "dry run" in kept.stderr
    aborted = cli(settings, "--abort", "--apply")
    assert aborted.returncode == 0 and "aborted" in aborted.stderr
    with connect(db_url) as conn:
        assert building(conn) is None and events(conn, "reembed.abort") == [("building", "aborted")]

    waited = cli(settings, "--embedder", "hash", "--dim", "96", "--apply", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert "switched to hash-v1 (96-d)" in waited.stderr or "old vectors are dropped" in waited.stderr
    with connect(db_url) as conn:
        assert column_dims(conn) == {"embedding": 96} and stored_match(conn, 96)
        actors = {r[0] for r in conn.execute("SELECT actor FROM ops_events WHERE action LIKE 'reembed.%%'")}
        assert actors == {"cli-tester"}
    assert in_space(search(api, tenant.api_key)["results"], 96)


def test_status_gauges_and_the_daemon_job_carry_a_re_embed(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str, tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from opsctl.daemon.state_metrics import families
    from opsctl.daemon.status import fetch, space_line, summarize
    from opsctl.reembed.jobs import job_reembed

    def gauges(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], dict[str, float]]:
        raw = fetch(conn, None)
        summary = summarize(raw, datetime.now(UTC))
        values = {f.name: f.samples[0].value for f in families(raw, summary) if f.name.startswith("opsctl_reembed")}
        return summary["vector_space"], values

    ingest(api, tenant.api_key, corpus(20))
    drain(settings, db_url)
    start(settings, target(settings, "hash", 80), "tester")
    with connect(db_url) as conn:
        shown, values = gauges(conn)
    assert shown["building"]["chunks_total"] == 20 and shown["building"]["ratio"] == 0
    assert space_line(shown).startswith("hash-v1 (384-d); re-embedding into hash-v1 (80-d): 0% (0/20 chunks")
    assert values == {"opsctl_reembed_progress_ratio": 0, "opsctl_reembed_in_progress": 1}

    sentence = job_reembed(settings, tmp_path)
    assert sentence.startswith("re-embed: 20 chunks embedded (add_column, backfill, build_index, switch"), sentence
    assert sentence.endswith("the old vectors are dropped")
    assert job_reembed(settings, tmp_path) == "no re-embed in progress"
    with connect(db_url) as conn:
        shown, values = gauges(conn)
    assert shown == {"active": "hash-v1 (80-d)", "building": None}
    assert values == {"opsctl_reembed_progress_ratio": 1, "opsctl_reembed_in_progress": 0}


class GatedEmbedder:
    """The old space's embedder, holding its batch (and so the active space) until released."""

    name, dim = "hash-v1", 384

    def __init__(self) -> None:
        import threading

        self.inside, self.release = threading.Event(), threading.Event()

    def embed(self, texts: Any) -> Any:
        self.inside.set()
        assert self.release.wait(60)
        return HashEmbedder(384).embed(texts)


def test_the_switch_waits_for_an_ingest_batch_in_flight_then_embeds_its_chunks(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str) -> None:
    import threading
    import time

    space = backfilled(api, tenant, settings, 10, 72)
    with connect(db_url) as conn:
        pg.build_index(conn, space, settings, lambda *_: None)

    ingest(api, tenant.api_key, corpus(2, start_at=50))
    gated = GatedEmbedder()
    batch = threading.Thread(target=drain_with, args=(settings, db_url, gated))
    batch.start()
    assert gated.inside.wait(60)  # the batch holds the active space and is embedding in it
    switched: list[int] = []

    def switching() -> None:
        with connect(db_url) as conn:
            switched.append(pg.switch(conn, space, HashEmbedder(72), "tester", 64))

    switch = threading.Thread(target=switching)
    switch.start()
    with connect(db_url) as conn:
        deadline = time.monotonic() + 60
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND query LIKE %s", ("%FOR UPDATE%",)).fetchone() != (1,):
            assert time.monotonic() < deadline, "the switch never waited for the batch"
            time.sleep(0.05)
        assert not switched and active(conn).spec.dim == 384
    gated.release.set()
    batch.join(60)
    switch.join(60)
    assert switched == [2]  # the batch's two chunks, written in the old space, embedded by the switch
    with connect(db_url) as conn:
        assert active(conn).spec.dim == 72 and stored_match(conn, 72)
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (12,)


def drain_with(settings: Settings, db_url: str, embedder: Any) -> None:
    with connect(db_url) as conn:
        IngestProcessor(settings, embedder).run_batch(conn)


@pytest.mark.parametrize("exact", [True, False])
def test_the_space_check_runs_once_per_statement_not_per_row(db_url: str, tenant: Any, exact: bool) -> None:
    from psycopg import sql

    from core.search.retrieve import vector_query

    with connect(db_url) as conn:
        space = active(conn).id
        params = {"q": HashEmbedder(384).embed(["q"])[0], "company": tenant.company_id, "n": 10, "space": space}
        plan = " ".join(r[0] for r in conn.execute(
            sql.SQL("EXPLAIN (COSTS OFF) ") + vector_query(exact), params).fetchall())
    assert "One-Time Filter" in plan and "vector_space_is" in plan, plan


def test_the_backfill_leaves_the_keyword_statistics_untouched(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str) -> None:
    stats = "SELECT company_id, stripe, chunks, words, xmin::text FROM bm25_totals ORDER BY 1, 2"
    ingest(api, tenant.api_key, corpus(12))
    drain(settings, db_url)
    with connect(db_url) as conn:
        before = conn.execute(stats).fetchall()
        backfilled_space = start(settings, target(settings, "hash", 40), "tester")
        pg.add_column(conn, backfilled_space)
        assert pg.backfill_batch(conn, building(conn), HashEmbedder(40), 16) == 12  # type: ignore[arg-type]
        assert conn.execute(stats).fetchall() == before  # not even rewritten: the text did not change
        conn.execute("UPDATE chunks SET body = body || ' zebra' WHERE external_id = 'doc-0'")
        after = conn.execute("SELECT sum(chunks)::int, sum(words)::int FROM bm25_totals").fetchone()
        assert after == (12, sum(r[3] for r in before) + 1)  # a text that changes is still counted


def test_a_tenant_index_run_does_not_hold_the_re_embed(settings: Settings, db_url: str) -> None:
    """The two runs take different advisory locks: one's lock never makes the other "busy"."""
    from opsctl.vindex.tenants_pg import TENANT_INDEX_LOCK

    with connect(db_url) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s, %s)", TENANT_INDEX_LOCK).fetchone() == (True,)
        result = run(settings, "tester")
    assert not result.busy and result.sentence() == "no re-embed in progress"


def test_adding_the_column_gives_way_to_a_long_transaction_on_chunks(
        settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ADD COLUMN takes chunks' ACCESS EXCLUSIVE lock: queued behind a long transaction (an index
    build, a report) it would stop every search meanwhile. It waits at most lock_timeout and gives up."""
    from core.errors import OperationFailed
    from opsctl.vindex import online

    monkeypatch.setattr(online, "DDL_RETRIES", 0)
    space = start(settings, target(settings, "hash", 48), "tester")
    with connect(db_url) as holder, connect(db_url) as conn:
        holder.autocommit = False
        holder.execute("SELECT count(*) FROM chunks")  # holds ACCESS SHARE to its commit
        conn.execute("SET statement_timeout = '60s'")  # the code as it was: queued until this
        with pytest.raises(OperationFailed, match="could not take its locks"):
            pg.add_column(conn, space)
        holder.rollback()
        pg.add_column(conn, space)
        assert column_dims(conn)["embedding_next"] == 48
        storage = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'chunks'::regclass"
                               " AND attname = 'embedding_next'").fetchone()
        assert storage == ("m",)


def test_a_switch_that_cannot_take_its_locks_gives_way_and_the_runner_retries(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long transaction on chunks (a report, a dump) outlasts the switch's lock_timeout: the switch
    rolls back and the run ends waiting (retried at once, its queued ACCESS EXCLUSIVE lock would hold
    every search behind it again and again); the next run switches."""
    from opsctl.reembed import service, tenants

    space = backfilled(api, tenant, settings, 6, 40)
    with connect(db_url) as conn:
        pg.build_index(conn, space, settings, lambda *_: None)
    monkeypatch.setattr(pg, "SWITCH_LOCK_TIMEOUT", "200ms")
    with connect(db_url) as holder:
        holder.autocommit = False
        holder.execute("SELECT count(*) FROM chunks")  # holds ACCESS SHARE until its rollback
        with connect(db_url) as conn, pytest.raises(tenants.Waiting, match="could not take its locks"):
            pg.switch(conn, space, HashEmbedder(40), "tester", 64)
        result = service.run(settings, "tester", budget_seconds=60)
        assert result.steps.count("switch") == 1 and not result.finished  # tried once, not in a loop
        assert result.waiting and "could not take its locks" in result.waiting
        holder.rollback()
    result = service.run(settings, "tester")
    assert result.steps[-2:] == ["switch", "drop_retired"]  # switched, then the old vectors dropped
    with connect(db_url) as conn:
        assert active(conn).spec.dim == 40 and stored_match(conn, 40)


def test_a_search_that_follows_the_switch_leaves_no_pooled_connection_in_a_transaction(
        api: RunningApi, tenant: Any, settings: Settings, db_url: str) -> None:
    """The API's first vector search after a switch is refused by the database, reads the active space
    and searches again: on the connection it holds (its key lookup's), not one given back to the pool."""
    ingest(api, tenant.api_key, corpus(12))
    drain(settings, db_url)
    assert in_space(search(api, tenant.api_key)["results"], 384)
    start(settings, target(settings, "hash", 64), "tester")
    run(settings, "tester")
    followed = search(api, tenant.api_key, k=4)
    assert followed["results"] and in_space(followed["results"], 64) and api.embedder.dim == 64
    with connect(db_url) as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND state LIKE 'idle in transaction%%'").fetchone()
    assert left == (0,), "a pooled connection left inside a transaction"
    for k in (3, 2, 1):  # each on a connection of the pool, as it was handed back
        assert in_space(search(api, tenant.api_key, k=k)["results"], 64)
