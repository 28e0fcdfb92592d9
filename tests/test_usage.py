"""Per-company usage (issue 15 §3): counted in the API and the workers, flushed to usage_hourly one
statement per flush, read back by ``opsctl tenant usage`` and the Prometheus view (top N + other).

The pure parts by tables; the rest against the real database, API and ingest worker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgvector.psycopg import register_vector

from core.usage.metrics import UsageCollector, view
from core.usage.recorder import UsageRecorder, flush, read_series, read_usage
from core.usage.tally import Counts, Tally, Usage, flush_rows, series, summarise, top_with_other
from tests.conftest import RunningApi, client_for
from tests.test_cli_output import cells, run
from tests.test_ingest_search import DOCS, ingest

T0 = datetime(2026, 11, 27, 10, 25, 7, tzinfo=UTC)
H10 = datetime(2026, 11, 27, 10, tzinfo=UTC)
H11 = datetime(2026, 11, 27, 11, tzinfo=UTC)


# -- pure -------------------------------------------------------------------------------------------

def test_a_tally_counts_by_company_and_hour_and_gives_back_what_a_failed_flush_took() -> None:
    tally = Tally()
    tally.count(1, T0, searches=1, cache_hits=1)
    tally.count(1, T0 + timedelta(minutes=30), searches=1, cache_misses=1, embeddings=1)  # 10:55
    tally.count(1, T0 + timedelta(minutes=40), ingest_jobs=3)  # 11:05: the next hour
    tally.count(2, T0, searches=1, cache_misses=1)
    taken = tally.take()
    assert len(tally) == 0
    assert taken == {(1, H10): Counts(2, 1, 1, 0, 1), (1, H11): Counts(0, 0, 0, 3, 0), (2, H10): Counts(1, 0, 1)}
    tally.count(1, T0, searches=5)
    tally.restore(taken)
    assert tally.take()[(1, H10)] == Counts(7, 1, 1, 0, 1)


@pytest.mark.parametrize(("taken", "expected"), [
    ({}, []),
    ({(2, H10): Counts(1), (1, H11): Counts(2), (1, H10): Counts(3)},
     [(1, H10, Counts(3)), (1, H11, Counts(2)), (2, H10, Counts(1))]),  # key order: one lock order for all
    ({(1, H10): Counts(), (2, H10): Counts(ingest_jobs=1)}, [(2, H10, Counts(ingest_jobs=1))]),  # nothing: no row
])
def test_a_flush_writes_its_rows_in_key_order_and_skips_empty_ones(taken: Any, expected: Any) -> None:
    assert flush_rows(taken) == expected


def companies() -> list[Usage]:
    return [Usage(1, "acme", documents=10, stored_bytes=500), Usage(2, "globex", documents=99, stored_bytes=10),
            Usage(3, "initech")]


HOURLY = [(1, (5, 4, 1, 0, 1)), (2, (1, 0, 1, 7, 20)), (1, (2, 0, 2, 0, 2)), (3, (0, 0, 0, 0, 0)),
          (9, (100, 0, 0, 0, 0))]  # 9: a company deleted since


@pytest.mark.parametrize(("sort", "top", "order"), [
    ("activity", None, ["globex", "acme", "initech"]),  # 8 = 1 search + 7 jobs; 7 searches
    ("searches", None, ["acme", "globex", "initech"]),
    ("embeddings", None, ["globex", "acme", "initech"]),
    ("documents", 2, ["globex", "acme"]),
    ("stored_bytes", 1, ["acme"]),
    ("ingest_jobs", None, ["globex", "acme", "initech"]),  # ties (0, 0) by id
])
def test_usage_is_summed_per_company_and_sorted_by_use(sort: str, top: int | None, order: list[str]) -> None:
    ranked = summarise(companies(), HOURLY, sort, top)
    assert [u.name for u in ranked] == order


def test_a_summary_counts_every_hour_and_its_hit_rate() -> None:
    acme, globex, initech = sorted(summarise(companies(), HOURLY), key=lambda u: u.company_id)
    assert acme.counts == Counts(7, 4, 3, 0, 3) and acme.hit_rate == pytest.approx(4 / 7)
    assert globex.hit_rate == 0.0 and initech.hit_rate is None
    assert acme.as_dict()["cache_hit_rate"] == 0.5714
    with pytest.raises(ValueError, match="cannot sort by 'name'"):
        summarise(companies(), HOURLY, "name")


def test_hours_group_into_steps_with_the_last_stored_totals() -> None:
    rows = [(datetime(2026, 11, 26, 22, tzinfo=UTC), (1, 1, 0, 0, 0), 5, 8, 100),
            (datetime(2026, 11, 26, 23, tzinfo=UTC), (2, 0, 2, 3, 9), 7, 12, 140),
            (datetime(2026, 11, 27, 0, tzinfo=UTC), (1, 0, 1, 0, 1), None, None, None),
            (datetime(2026, 11, 27, 5, tzinfo=UTC), (0, 0, 0, 1, 2), 8, 13, 150)]
    days = series(rows, 24)
    assert [(b.start.day, b.counts, b.documents, b.stored_bytes) for b in days] == [
        (26, Counts(3, 1, 2, 3, 9), 7, 140), (27, Counts(1, 0, 1, 1, 3), 8, 150)]
    six = series(rows, 6)
    assert [b.start for b in six] == [datetime(2026, 11, 26, 18, tzinfo=UTC), datetime(2026, 11, 27, 0, tzinfo=UTC)]
    assert six[1].documents == 8 and six[1].counts == Counts(1, 0, 1, 1, 3)
    assert series(rows, 1)[2].documents is None  # an hour flushed by no one who read the totals


@pytest.mark.parametrize(("values", "n", "expected"), [
    ({}, 3, {}),
    ({"a": 1.0, "b": 2.0}, 3, {"b": 2.0, "a": 1.0}),
    ({"a": 1.0, "b": 2.0, "c": 2.0, "d": 5.0}, 2, {"d": 5.0, "b": 2.0, "other": 3.0}),  # ties by name
    ({"a": 0.0, "b": 0.0}, 1, {"a": 0.0, "other": 0.0}),
    ({f"c{i}": float(i) for i in range(1000)}, 10, {**{f"c{i}": float(i) for i in range(999, 989, -1)},
                                                   "other": float(sum(range(990)))}),
])
def test_the_prometheus_view_names_the_top_n_and_sums_the_rest(values: Any, n: int, expected: Any) -> None:
    out = top_with_other(values, n)
    assert out == expected and len(out) <= n + 1


def test_a_company_named_other_stays_apart_from_the_rest() -> None:
    rows = [(1, "other", 5, 6, 7, 1, 0, 0, 0, 0), (2, "acme", 1, 1, 1, 2, 0, 0, 0, 0),
            (3, "zeta", 0, 0, 0, 3, 0, 0, 0, 0)]
    found = view(rows, 1)
    assert found["core_tenant_documents"] == {"other#1": 5.0, "other": 1.0}
    assert found["core_tenant_searches_hour"] == {"zeta": 3.0, "other": 3.0}


# -- the database -----------------------------------------------------------------------------------

def make_companies(conn: psycopg.Connection[Any], *names: str) -> list[int]:
    from core.tenants import create_company

    return [create_company(conn, name).company_id for name in names]


def stored(conn: psycopg.Connection[Any], company: int) -> tuple[int, int]:
    row = conn.execute("SELECT (SELECT coalesce(sum(bytes), 0) FROM stored_bytes WHERE company_id = %s),"
                       " (SELECT coalesce(sum(octet_length(body)), 0) FROM documents WHERE company_id = %s)",
                       (company, company)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_flushes_add_up_in_one_row_per_company_and_hour(conn: psycopg.Connection[Any]) -> None:
    acme, globex = make_companies(conn, "acme", "globex")
    first, second = Tally(), Tally()  # two processes
    first.count(acme, T0, searches=2, cache_hits=1, cache_misses=1)
    second.count(acme, T0, searches=1, cache_misses=1, embeddings=1)
    second.count(globex, T0 + timedelta(hours=1), ingest_jobs=4, embeddings=9)
    second.count(10**9, T0, searches=1)  # a company deleted meanwhile: skipped, the rest written
    assert flush(conn, first) == 1 and flush(conn, second) == 3
    rows = conn.execute("SELECT company_id, hour, searches, cache_hits, cache_misses, ingest_jobs, embeddings,"
                        " documents, chunks, stored_bytes FROM usage_hourly ORDER BY 1, 2").fetchall()
    assert rows == [(acme, H10, 3, 1, 2, 0, 1, None, None, None), (globex, H11, 0, 0, 0, 4, 9, None, None, None)]
    assert flush(conn, first) == 0  # taken: nothing twice


def test_a_failed_flush_keeps_its_counts_for_the_next(conn: psycopg.Connection[Any], db_url: str) -> None:
    (acme,) = make_companies(conn, "acme")
    tally = Tally()
    tally.count(acme, T0, searches=3)
    broken = psycopg.connect(db_url)
    broken.close()  # the database away
    with pytest.raises(psycopg.OperationalError):
        flush(broken, tally)
    assert flush(conn, tally) == 1
    assert conn.execute("SELECT searches FROM usage_hourly").fetchone() == (3,)


def test_a_recorder_flushes_what_is_left_at_close(db_url: str, conn: psycopg.Connection[Any]) -> None:
    (acme,) = make_companies(conn, "acme")
    recorder = UsageRecorder(lambda: psycopg.connect(db_url), interval=0, clock=lambda: T0).start()
    recorder.count(acme, searches=1, cache_hits=1)
    recorder.count(acme, searches=1, cache_misses=1)
    assert conn.execute("SELECT count(*) FROM usage_hourly").fetchone() == (0,)  # interval 0: at close only
    recorder.close()
    assert conn.execute("SELECT hour, searches, cache_hits, cache_misses FROM usage_hourly").fetchall() == [
        (H10, 2, 1, 1)]


def test_search_and_ingest_are_counted_per_company(settings: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    from core.embed import make_embedder
    from core.ingest.worker import IngestProcessor
    from core.tenants import create_company

    acme, globex = create_company(conn, "acme"), create_company(conn, "globex")
    api = RunningApi(settings.model_copy(update={"usage_flush_seconds": 0}))
    worker_usage = UsageRecorder(lambda: psycopg.connect(db_url), interval=0)
    try:
        ingest(api, acme.api_key, DOCS)
        ingest(api, globex.api_key, DOCS[:1])
        processor = IngestProcessor(settings, make_embedder(settings), worker_usage)
        with psycopg.connect(db_url) as work:
            register_vector(work)
            while processor.run_batch(work).claimed:
                pass
        worker_usage.flush()
        with client_for(api, acme.api_key) as client:
            for body in ({"query": "refunds", "mode": "hybrid"}, {"query": "refunds", "mode": "hybrid"},
                         {"query": "parcels", "mode": "keyword"}):
                assert client.post("/v1/search", json=body).status_code == 200
        with client_for(api, globex.api_key) as client:
            assert client.post("/v1/search", json={"query": "x", "k": 10**6}).status_code in (400, 403, 422)
        api.services.usage.flush()
    finally:
        api.close()
    by_company = {u.name: u for u in read_usage(conn, datetime.now(UTC) - timedelta(hours=1))}
    a, g = by_company["acme"], by_company["globex"]
    # a hybrid search missed and embedded its query, its repeat hit the cache, a keyword search embeds nothing
    assert a.counts == Counts(searches=3, cache_hits=1, cache_misses=2, ingest_jobs=3, embeddings=3 + 1)
    assert g.counts == Counts(ingest_jobs=1, embeddings=1)  # a refused search is not a search
    # stored data: the triggers' counts, equal to counting the tables
    assert (a.documents, a.chunks, a.stored_bytes) == (3, 3, sum(len(d["text"].encode()) for d in DOCS))
    assert (g.documents, g.stored_bytes) == (1, len(DOCS[0]["text"].encode()))
    # the flushed rows carry the totals at the flush
    assert conn.execute("SELECT documents, chunks, stored_bytes FROM usage_hourly WHERE company_id = %s",
                        (acme.company_id,)).fetchone() == (3, 3, a.stored_bytes)
    days = read_series(conn, acme.company_id, datetime.now(UTC) - timedelta(hours=1), timedelta(days=1))
    assert len(days) == 1 and days[0].counts == a.counts


def test_stored_bytes_follow_inserts_updates_deletes_and_detached_partitions(conn: psycopg.Connection[Any]) -> None:
    (acme,) = make_companies(conn, "acme")
    conn.execute("CREATE TABLE documents_p2001 PARTITION OF documents FOR VALUES FROM ('2001-01-01') TO ('2001-02-01')")
    now = datetime.now(UTC)
    insert = ("INSERT INTO documents (company_id, external_id, body, content_hash, created_at)"
              " VALUES (%s, %s, %s, '\\x00', %s)")
    conn.execute(insert, (acme, "a", "héllo wörld", now))  # UTF-8 bytes, not characters
    conn.execute(insert, (acme, "b", "x" * 50000, now))  # TOASTed
    conn.execute(insert, (acme, "old", "y" * 70, datetime(2001, 1, 5, tzinfo=UTC)))
    assert stored(conn, acme) == (13 + 50000 + 70, 13 + 50000 + 70)
    conn.execute("UPDATE documents SET body = 'short' WHERE company_id = %s AND external_id = 'b'", (acme,))
    conn.execute("DELETE FROM documents WHERE company_id = %s AND external_id = 'a'", (acme,))
    assert stored(conn, acme) == (5 + 70, 5 + 70)
    # a partition detached (retention: opsctl.partitions.pg) is subtracted, as its document counts are
    with conn.transaction():
        conn.execute("SELECT bm25_apply('documents_p2001'::regclass, -1)")
        conn.execute("ALTER TABLE documents DETACH PARTITION documents_p2001")
    assert stored(conn, acme) == (5, 5)


def test_the_prometheus_view_reads_the_previous_hour(settings: Any, conn: psycopg.Connection[Any]) -> None:
    from core.db import make_pool

    ids = make_companies(conn, "a", "b", "c")
    hour = conn.execute("SELECT date_trunc('hour', now(), 'UTC') - interval '1 hour'").fetchone()[0]  # type: ignore[index]
    tally = Tally()
    for n, company in enumerate(ids, start=1):
        tally.count(company, hour, searches=n * 10, cache_hits=n)
        tally.count(company, hour + timedelta(hours=1), searches=1000)  # the hour under way: not yet
    flush(conn, tally)
    pool = make_pool(settings.database_url, settings)
    try:
        families = {f.name: {s.labels["company"]: s.value for s in f.samples}
                    for f in UsageCollector(pool, top=2, min_interval=0).collect()}
    finally:
        pool.close()
    assert families["core_tenant_searches_hour"] == {"c": 30.0, "b": 20.0, "other": 10.0}
    assert families["core_tenant_cache_hits_hour"] == {"c": 3.0, "b": 2.0, "other": 1.0}
    assert set(families) == {"core_tenant_documents", "core_tenant_chunks", "core_tenant_stored_bytes",
                             "core_tenant_searches_hour", "core_tenant_cache_hits_hour",
                             "core_tenant_cache_misses_hour", "core_tenant_ingest_jobs_hour",
                             "core_tenant_embeddings_hour"}


# -- the command ------------------------------------------------------------------------------------

@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPSCTL_DATABASE_URL", db_url)
    return db_url


def test_tenant_usage_lists_companies_by_use_and_one_company_over_time(
        database: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]) -> None:
    acme, globex, _ = make_companies(conn, "acme", "globex", "initech")
    now = datetime.now(UTC)
    tally = Tally()
    tally.count(acme, now, searches=4, cache_hits=3, cache_misses=1)
    tally.count(acme, now - timedelta(days=2), searches=50)  # outside --since 1d
    tally.count(globex, now, searches=1, ingest_jobs=9, embeddings=12)
    flush(conn, tally)

    code, out, _ = run(capsys, "tenant", "usage", "--since", "1d", "-o", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["globex", "acme", "initech"]
    assert rows[1] | {"company_id": 0} == {"company_id": 0, "name": "acme", "tier": None, "documents": 0, "chunks": 0,
                                           "stored_bytes": 0, "searches": 4, "cache_hits": 3, "cache_misses": 1,
                                           "ingest_jobs": 0, "embeddings": 0, "cache_hit_rate": 0.75}
    code, out, _ = run(capsys, "tenant", "usage", "--since", "7d", "--sort", "searches", "--top", "1")
    table = cells(out)
    assert code == 0 and len(table) == 2 and table[1][:7] == ["acme", "", "0", "0", "0 B", "54", "75.0%"]
    assert table[0] == ["NAME", "TIER", "DOCUMENTS", "CHUNKS", "STORED", "SEARCHES", "CACHE HIT RATE",
                        "INGEST JOBS", "EMBEDDINGS"]
    code, out, _ = run(capsys, "tenant", "usage", "acme", "--since", "7d", "--every", "1d", "-o", "yaml")
    import yaml

    days = yaml.safe_load(out)
    assert code == 0 and [d["searches"] for d in days] == [50, 4]
    code, _, err = run(capsys, "tenant", "usage", "--every", "90m", "acme")
    assert code == 2 and "whole hours" in err
    code, _, err = run(capsys, "tenant", "usage", "--sort", "name")
    assert code == 2 and "--sort name" in err
    code, _, err = run(capsys, "tenant", "usage", "nobody")
    assert code == 1 and "no company 'nobody'" in err


def test_a_worker_flushes_its_counts_when_stopped_and_a_killed_one_loses_them(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """usage_flush_seconds 0: a worker adds its counts at stop only, so what kill -9 loses is all it
    counted (with the default, at most the last 10 s)."""
    import signal

    from core.metrics import queue_stats
    from tests.test_crash import start_worker
    from tests.waiting import wait_for

    monkeypatch.setenv("OPSCTL_USAGE_FLUSH_SECONDS", "0")  # read by the workers started here
    for round_, stop in enumerate((signal.SIGKILL, signal.SIGTERM)):
        ingest(api, tenant.api_key, [{**d, "text": f"{d['text']} ({round_})"} for d in DOCS])
        worker = start_worker(api.settings, tmp_path, batch=8)
        try:
            wait_for(lambda: queue_stats(conn)[:2] == (0, 0), 120, "the queue to drain")
            assert conn.execute("SELECT count(*) FROM usage_hourly").fetchone() == (0,)  # nothing flushed yet
        finally:
            worker.send_signal(stop)
            worker.wait(30)
    # the killed worker's 3 jobs are lost to usage (not to the data); the stopped one's are all there
    assert conn.execute("SELECT ingest_jobs, embeddings FROM usage_hourly WHERE company_id = %s",
                        (tenant.company_id,)).fetchall() == [(3, 3)]


@pytest.mark.parametrize("argv", [("tenant", "usage"), ("slow-queries",), ("events",)])
@pytest.mark.parametrize("since", ["99999999d", "1000000000d"])
def test_a_window_reaching_before_year_one_is_bad_usage(database: str, capsys: pytest.CaptureFixture[str],
                                                       argv: tuple[str, ...], since: str) -> None:
    """--since longer than the calendar holds: exit 2 and a line naming the option, no traceback."""
    code, _, err = run(capsys, *argv, "--since", since)
    assert code == 2, err
    assert err.startswith("error: --since") and len(err.strip().splitlines()) == 1, err
