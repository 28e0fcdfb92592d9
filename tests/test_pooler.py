"""PostgreSQL behind a transaction pooler: Debian's PgBouncer 1.18 in transaction mode, for real.

First what goes wrong through it (a session SET reaches the next client, a server-side prepared
statement is missing on the next server connection, a session advisory lock is re-entered by
another client), then every path of opsctl through it: the search settings per transaction,
ingest (documents and mail, the API's accept and the worker's batches, LISTEN on the direct URL),
search in every mode, the daemon's leader election and partition rotation on the direct URL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from core.config import Settings
from core.db import make_pool
from core.errors import ConfigError, OperationFailed
from core.pooler import SET_CONFIG_SQL, connect_kwargs, search_connection, search_settings
from tests.conftest import RunningApi, client_for, make_settings
from tests.test_ingest_search import DOCS, ingest, search
from tests.test_partitions import NOW, count, policy_for, world  # noqa: F401 (world: a fixture)
from tests.waiting import wait_for

DEFAULT_EF = "500"  # what migrations set as the database's default


def setting_and_backend(url: str, name: str) -> tuple[str, int]:
    """One fresh client through ``url``: the setting it sees, and the server backend it got."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute("SELECT current_setting(%s, true), pg_backend_pid()", (name,)).fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


# -- settings --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "direct", "error"), [
    ({}, None, None),
    ({"database_url": "postgresql://db/x"}, "postgresql://db/x", None),
    ({"database_url": "postgresql://pooler/x", "database_direct_url": "postgresql://db/x"}, "postgresql://db/x", None),
    ({"database_url": "postgresql://pooler/x", "database_pool_mode": "transaction"}, None, "database_direct_url"),
    ({"database_pool_mode": "transaction", "database_direct_url": "postgresql://db/x"}, None, "database_url"),
    ({"database_url": "postgresql://pooler/x", "database_pool_mode": "statement"}, None, "database_pool_mode"),
])
def test_pool_mode_settings(given: dict[str, Any], direct: str | None, error: str | None) -> None:
    from core.config import load_settings

    if error:
        with pytest.raises(ConfigError, match=error):
            load_settings(with_state=False, **given)
        return
    s = load_settings(with_state=False, **given)
    assert s.database_pool_mode == "session"
    assert s.direct_url == direct


def test_a_transaction_pooler_without_a_direct_url_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_cli_connect import run

    monkeypatch.setenv("OPSCTL_DATABASE_URL", "postgresql://pooler:6543/x")
    monkeypatch.setenv("OPSCTL_DATABASE_POOL_MODE", "transaction")
    code, out, err = run(capsys, "status")
    assert code == 2 and out == ""
    assert err.strip() == ("error: invalid settings: database_pool_mode transaction needs database_url (the pooler) "
                           "and database_direct_url (a session for LISTEN, advisory locks, DDL and backups)")


def test_the_state_of_opsctl_up_carries_the_pool_mode_and_the_direct_url(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A second terminal finds the pooler setup that `opsctl up` ran with, not just its URL."""
    from core.config import load_settings, write_state

    monkeypatch.setenv("OPSCTL_DATA_DIR", str(tmp_path))
    write_state(tmp_path, {"database_url": "postgresql://pooler:6543/x", "database_pool_mode": "transaction",
                           "database_direct_url": "postgresql://db:5432/x"})
    s = load_settings()
    assert (s.database_pool_mode, s.direct_url) == ("transaction", "postgresql://db:5432/x")


def test_a_missing_pgbouncer_fails_the_pooler_tests_saying_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tests.pgbouncer as bouncer

    monkeypatch.setattr(bouncer.shutil, "which", lambda name: None)
    monkeypatch.setattr(bouncer, "DEBIAN_PATH", tmp_path / "no-pgbouncer")
    with pytest.raises(RuntimeError, match="pgbouncer is not installed"):
        bouncer.PgBouncer(tmp_path, tmp_path, 5432).start()


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, (("hnsw.iterative_scan", "relaxed_order"),)),
    ({"hnsw_ef_search": 40}, (("hnsw.iterative_scan", "relaxed_order"), ("hnsw.ef_search", "40"))),
])
def test_search_settings(overrides: dict[str, Any], expected: tuple[tuple[str, str], ...]) -> None:
    assert search_settings(make_settings(**overrides)) == expected


def test_connect_kwargs() -> None:
    assert connect_kwargs("session") == {}
    assert connect_kwargs("transaction") == {"prepare_threshold": None}


# -- what breaks through a transaction pooler --------------------------------------------------------

def test_a_session_set_through_the_pooler_reaches_the_next_client(pooler_url: str) -> None:
    """Why the pool must not SET: the setting stays on the server connection, for whoever gets it."""
    with psycopg.connect(pooler_url, autocommit=True, prepare_threshold=None) as first:
        first.execute("SET hnsw.ef_search = 7")
        row = first.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
    value, backend = setting_and_backend(pooler_url, "hnsw.ef_search")
    assert backend == row[0]  # PgBouncer hands out the most recently used server connection
    assert value == "7"  # another client's session SET


@pytest.mark.parametrize(("mode", "breaks"), [("session", True), ("transaction", False)])
def test_server_side_prepares_through_the_pooler(pooler_url: str, mode: Any, breaks: bool) -> None:
    """A statement prepared on one server connection is missing on the next one (PgBouncer < 1.21);
    transaction mode's connections never prepare, not even for ``prepare=True``."""
    with psycopg.connect(pooler_url, autocommit=True, **connect_kwargs(mode)) as client, \
            psycopg.connect(pooler_url, autocommit=True, prepare_threshold=None) as other:
        client.execute("SELECT %s::int", (1,), prepare=True)
        with other.transaction():  # holds the server connection `client` prepared on
            other.execute("SELECT 1")
            if breaks:
                with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                    client.execute("SELECT %s::int", (2,), prepare=True)
            else:
                assert client.execute("SELECT %s::int", (2,), prepare=True).fetchone() == (2,)


# -- the search settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_search_settings_hold_in_the_search_and_leak_nowhere(pooled_settings: Settings, db_url: str,
                                                             mode: str) -> None:
    """Transaction mode: through PgBouncer, set locally in the search's transaction, gone after it on
    the very same server connection. Session mode (straight to PostgreSQL): set on the session."""
    settings = pooled_settings.model_copy(update={"hnsw_ef_search": 37})
    if mode == "session":
        settings = settings.model_copy(update={"database_url": db_url, "database_pool_mode": "session"})
    assert "hnsw_ef_search" in settings.model_fields_set
    assert settings.database_url
    pool = make_pool(settings.database_url, settings, min_size=1, max_size=1)
    try:
        with search_connection(pool) as conn:
            row = conn.execute("SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan'),"
                               " pg_backend_pid()").fetchone()
            assert row is not None and row[:2] == ("37", "relaxed_order")
            assert conn.prepare_threshold is (None if mode == "transaction" else 5)
        with search_connection(pool, vector=False) as conn:  # a keyword search: autocommit, no settings needed
            assert conn.autocommit and conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
        if mode == "transaction":
            value, backend = setting_and_backend(settings.database_url, "hnsw.ef_search")
            assert backend == row[2], "the same server connection, next client"
            assert value == DEFAULT_EF
            # off, or empty where pgvector is not loaded in that backend yet (a placeholder setting)
            assert setting_and_backend(settings.database_url, "hnsw.iterative_scan")[0] in ("off", "")
        else:
            with search_connection(pool) as conn:  # the session keeps them, no extra statement needed
                assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("37",)
    finally:
        pool.close()


def test_set_config_statement_sets_locally(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(SET_CONFIG_SQL, (True, ["hnsw.ef_search", "work_mem"], ["11", "5MB"]))
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("11",)
        assert conn.execute("SHOW work_mem").fetchone() == ("5MB",)
    assert conn.execute("SHOW hnsw.ef_search").fetchone() == (DEFAULT_EF,)


# -- ingest and search through the pooler ------------------------------------------------------------

RAW_MAIL = (b"From: Ann <ann@example.com>\r\nTo: desk@example.com\r\nSubject: Refund for order 7\r\n"
            b"Message-ID: <refund-7@example.com>\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n\r\n"
            b"Please refund order 7; the parcel arrived broken.\r\n")


@pytest.fixture
def pooled_api(pooled_settings: Settings) -> Iterator[RunningApi]:
    running = RunningApi(pooled_settings.model_copy(update={"hnsw_ef_search": 64}))
    yield running
    running.close()





def test_ingest_and_search_through_the_pooler(pooled_api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import core.search.retrieve as retrieve
    from core.embed import make_embedder
    from core.ingest.worker import Worker

    seen: list[tuple[str, Any]] = []  # (mode, the settings in effect where the search's statements run)
    answer = retrieve.retrieve_answer

    def spy(conn: psycopg.Connection[Any], embedder: Any, company_id: int, req: Any, *args: Any) -> Any:
        seen.append((req.mode.value, conn.execute("SELECT current_setting('hnsw.ef_search'),"
                                                  " current_setting('hnsw.iterative_scan', true)").fetchone()))
        return answer(conn, embedder, company_id, req, *args)

    monkeypatch.setattr(retrieve, "retrieve_answer", spy)

    settings = pooled_api.settings.model_copy(update={"worker_poll_seconds": 0.2})
    worker = Worker(settings, make_embedder(settings))
    assert (worker.url, worker.listen_url) == (settings.database_url, settings.direct_url)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        for n in range(3):  # more batches than psycopg's prepare threshold would allow (5 statements)
            ingest(pooled_api, tenant.api_key, [{**d, "external_id": f"{d['external_id']}-{n}"} for d in DOCS])
        with client_for(pooled_api, tenant.api_key) as client:
            response = client.post("/v1/emails", content=RAW_MAIL, headers={"Content-Type": "message/rfc822"})
            assert response.status_code == 202, response.text

        def idle() -> bool:
            row = conn.execute("SELECT count(*) FILTER (WHERE status <> 'done'), count(*) FROM ingest_jobs").fetchone()
            return row is not None and row[0] == 0 and row[1] == 10

        wait_for(idle, 60, "the worker to finish every job")
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    row = conn.execute("SELECT count(*), count(*) FILTER (WHERE last_error IS NOT NULL) FROM ingest_jobs").fetchone()
    assert row == (10, 0)
    assert conn.execute("SELECT count(*) FROM mail_messages").fetchone() == (1,)
    for mode in ("vector", "keyword", "hybrid"):
        for exact_max_rows, k in ((10_000, 2), (0, 3)):  # exact, then the HNSW index (another k: not cached)
            pooled_api.settings.vector_exact_max_rows = exact_max_rows
            found = search(pooled_api, tenant.api_key, "how many days for refunds", mode=mode, k=k)
            assert found["results"] and found["results"][0]["external_id"].startswith("kb-1-"), (mode, found)
    found = search(pooled_api, tenant.api_key, "refund broken parcel order 7", mode="keyword", k=5)
    assert "email:refund-7@example.com" in [r["external_id"] for r in found["results"]]
    vector_settings = {setting for mode, setting in seen if mode != "keyword"}
    assert vector_settings == {("64", "relaxed_order")}, "set locally in each vector and hybrid search"
    # and nowhere else (off, or unset in a backend that has not loaded pgvector yet)
    assert all(ef == DEFAULT_EF and scan in ("off", "", None) for mode, (ef, scan) in seen if mode == "keyword")
    assert len(seen) == 7


def test_pool_metrics(pooled_api: RunningApi) -> None:
    text = httpx.get(f"{pooled_api.url}/metrics", timeout=10).text
    values = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines()
              if line.startswith("core_db_pool_")}
    stats = pooled_api.pool.get_stats()
    assert values['core_db_pool_size{pool="core"}'] == stats["pool_size"] >= 1
    assert values['core_db_pool_available{pool="core"}'] == stats["pool_available"]
    assert values['core_db_pool_waiting{pool="core"}'] == 0


# -- what needs a session: the direct URL ------------------------------------------------------------

def test_a_session_advisory_lock_through_the_pooler_is_no_lock(pooler_url: str) -> None:
    """Why the leader lock must not go through the pooler: the second daemon re-enters the first one's
    lock on the server connection they share."""
    from opsctl.daemon.leader import LeaderLock

    first, second = LeaderLock(pooler_url, "first"), LeaderLock(pooler_url, "second")
    try:
        assert first.try_acquire()
        assert second.try_acquire(), "both 'lead'"
    finally:
        first.release()
        second.release()


def test_two_daemons_behind_the_pooler_elect_one_leader(pooled_settings: Settings, conn: psycopg.Connection[Any],
                                                        tmp_path: Path) -> None:
    from opsctl.daemon.leader import lock_holder
    from opsctl.daemon.service import Daemon, DaemonConfig

    (tmp_path / "schedule.yaml").write_text('kind: schedule\njobs:\n  tick:\n    cron: "0 0 1 1 *"\n'
                                            '    run: "tests.daemon_jobs:job_tick"\n')
    daemons = [Daemon(pooled_settings, DaemonConfig(tmp_path)) for _ in range(2)]
    for daemon in daemons:
        daemon.start()
    try:
        sentences = [daemon.cycle(daemon.clock()) for daemon in daemons]
        assert sentences[0].startswith("became leader")
        assert sentences[1].startswith("follower")
        assert daemons[1].cycle(daemons[1].clock()).startswith("follower")
        assert daemons[0].cycle(daemons[0].clock()).startswith("leader")
        holder = lock_holder(conn)
        assert holder is not None and holder["application_name"] == daemons[0].name
    finally:
        for daemon in daemons:
            daemon.stop_requested = True
            daemon.shutdown()


def test_rotation_behind_the_pooler_is_one_at_a_time(pooled_settings: Settings, conn: psycopg.Connection[Any],
                                                     world: int, tmp_path: Path) -> None:  # noqa: F811
    """While a rotation holds its lock, a second one through the same settings is refused (through the
    pooler, it would re-enter the lock on a shared server connection), and the first one finishes."""
    from opsctl.partitions.service import rotate

    refused: list[str] = []

    def second_rotation(step: Any, phase: str) -> None:
        if not refused:
            try:
                rotate(pooled_settings, policy_for(tmp_path), NOW, apply=True)
                refused.append("not refused")
            except OperationFailed as exc:
                refused.append(str(exc))

    result = rotate(pooled_settings, policy_for(tmp_path), NOW, apply=True, progress=second_rotation)
    assert refused and "another partition rotation is running" in refused[0]
    assert result.done and count(conn, "documents_default") == 0


@pytest.mark.parametrize("settings", [(), (("hnsw.ef_search", "12"),), (("hnsw.ef_search", "12"), ("work_mem", "6MB"))])
def test_begin_with_sets_locally_in_one_message(conn: psycopg.Connection[Any], settings: Any) -> None:
    from core.pooler import begin_with

    conn.execute(begin_with(settings))
    assert conn.info.transaction_status is psycopg.pq.TransactionStatus.INTRANS
    for name, value in settings:
        assert conn.execute("SELECT current_setting(%s)", (name,)).fetchone() == (value,)
    conn.execute("ROLLBACK")
    assert conn.execute("SHOW hnsw.ef_search").fetchone() == (DEFAULT_EF,)

