"""Mail through real worker processes: two workers at once on messages that share ids, and kill -9 mid-batch."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.metrics import queue_stats
from tests.conftest import RunningApi, client_for
from tests.email_helpers import check_consistent, synthetic_list, threads_of
from tests.test_crash import start_worker
from tests.waiting import wait_for

RFC822 = {"Content-Type": "message/rfc822"}


@pytest.fixture
def api(settings: Any) -> Iterator[RunningApi]:
    """The API without its rate limit: one message per request, hundreds of them."""
    running = RunningApi(settings.model_copy(update={"rate_limit_per_second": 1e6, "rate_limit_burst": 10**6}))
    yield running
    running.close()


def send_all(api: RunningApi, key: str, raws: list[bytes]) -> None:
    with client_for(api, key) as client:
        for raw in raws:
            assert client.post("/v1/emails", content=raw, headers=RFC822).status_code == 202


def drained(conn: psycopg.Connection[Any]) -> bool:
    waiting, in_flight = queue_stats(conn)[:2]
    return waiting == 0 and in_flight == 0


def assert_stored_once(conn: psycopg.Connection[Any], company_id: int, expected: set[frozenset[str]]) -> None:
    assert threads_of(conn, company_id) == expected, "exact thread membership"
    check_consistent(conn, company_id)
    stored = sum(len(t) for t in expected)
    assert conn.execute("SELECT count(*) FROM mail_messages WHERE company_id = %s",
                        (company_id,)).fetchone() == (stored,)
    docs = conn.execute("SELECT count(*), count(DISTINCT external_id) FROM documents WHERE company_id = %s",
                        (company_id,)).fetchone()
    assert docs == (stored, stored), "one document per message"
    duplicates = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM chunks GROUP BY company_id, external_id, ord HAVING count(*) > 1) d"
    ).fetchone()
    assert duplicates == (0,)
    statuses = dict(conn.execute("SELECT status, count(*) FROM ingest_jobs GROUP BY status").fetchall())
    assert statuses == {"done": stored}
    assert conn.execute("SELECT count(*) FROM ingest_jobs WHERE raw IS NOT NULL").fetchone() == (0,), \
        "a done job keeps no copy of the message"


def test_two_workers_on_messages_that_share_ids(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                tmp_path: Path) -> None:
    """Replies and parents of the same threads in batches of 3 taken by two workers at once: the id
    locks serialize what overlaps, so no thread is started twice and no merge is lost."""
    raws, expected = synthetic_list(threads=40, seed=11, cross_links=6)
    send_all(api, tenant.api_key, raws)
    workers = [start_worker(api.settings, tmp_path, batch=3) for _ in range(2)]
    try:
        wait_for(lambda: drained(conn), 240, "the queue to drain")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        assert [worker.wait(30) for worker in workers] == [0, 0]
    assert_stored_once(conn, tenant.company_id, expected)
    log = (tmp_path / "worker.log").read_text()
    pids = {line.split("worker[")[1].split("]")[0] for line in log.splitlines() if " batch: " in line}
    assert len(pids) == 2, "both workers took batches"
    # nothing was settled by a failure: no unique violation retried, no deadlock, no job retried
    assert [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line] == []
    assert conn.execute("SELECT max(attempts) FROM ingest_jobs").fetchone() == (1,)


def test_kill_9_mid_batch_loses_and_duplicates_nothing(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                       tmp_path: Path) -> None:
    raws, expected = synthetic_list(threads=30, seed=5, cross_links=4)
    send_all(api, tenant.api_key, raws)
    for _ in range(3):
        worker = start_worker(api.settings, tmp_path, batch=4)
        wait_for(lambda: queue_stats(conn)[1] > 0, 60, "a batch in flight")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_for(lambda: queue_stats(conn)[1] == 0, 30, "the killed batch to be released")
    assert queue_stats(conn)[0] > 0, "the kills happened mid-way, with work left"
    worker = start_worker(api.settings, tmp_path, batch=4)
    try:
        wait_for(lambda: drained(conn), 240, "the queue to drain")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert_stored_once(conn, tenant.company_id, expected)
