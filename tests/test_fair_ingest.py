"""Fair ingest end to end (issue 15 §1): two companies through the real API and the real worker,
the lanes the intake gives each kind of send, and the queue's gauges per company."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
from pgvector.psycopg import register_vector

from core.config import Settings
from core.embed import make_embedder
from core.ingest.worker import IngestProcessor
from core.metrics import QueueCollector
from core.tenants import create_company, sign
from tests.conftest import RunningApi, client_for, make_settings
from tests.email_helpers import MBOX, RFC822, mbox

BULK_DELAY = 30.0


@pytest.fixture
def fair_api(db_url: str, redis_url: str) -> Any:
    running = RunningApi(make_settings(database_url=db_url, redis_url=redis_url,
                                       ingest_bulk_delay_seconds=BULK_DELAY))
    yield running
    running.close()


def docs(prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"external_id": f"{prefix}-{i}", "text": f"{prefix} document number {i} about topic {i % 5}."}
            for i in range(count)]


def post(api: RunningApi, key: str, documents: list[dict[str, Any]], **headers: str) -> list[int]:
    with client_for(api, key) as client:
        response = client.post("/v1/documents", json={"documents": documents}, headers=headers)
    assert response.status_code == 202, response.text
    return list(response.json()["job_ids"])


def batches_until_done(settings: Settings, db_url: str, job_id: int, batch: int) -> tuple[int, int]:
    """Run the real processor batch by batch until ``job_id`` is done: (batches run, jobs still waiting)."""
    processor = IngestProcessor(settings, make_embedder(settings))
    with psycopg.connect(db_url) as conn:
        register_vector(conn)
        for n in range(1, 1000):
            assert processor.run_batch(conn, batch).claimed, "the queue drained before the job was done"
            status = conn.execute("SELECT status FROM ingest_jobs WHERE id = %s", (job_id,)).fetchone()
            if status and status[0] == "done":
                waiting = conn.execute("SELECT count(*) FROM ingest_jobs WHERE status = 'queued'").fetchone()
                return n, int(waiting[0]) if waiting else 0
    raise AssertionError("never done")


@pytest.mark.parametrize(("claim", "first_batch"), [("fair", True), ("fifo", False)])
def test_a_companys_first_document_does_not_wait_behind_anothers_import(
        fair_api: RunningApi, conn: psycopg.Connection[Any], db_url: str, claim: str, first_batch: bool) -> None:
    a, b = create_company(conn, "importer"), create_company(conn, "newcomer")
    for start in range(0, 240, 60):  # A's import: bulk batches, all queued before B's document
        post(fair_api, a.api_key, docs("a", 240)[start:start + 60])
    [b_job] = post(fair_api, b.api_key, docs("b", 1))
    settings = fair_api.settings.model_copy(update={"ingest_claim": claim})
    batches, waiting = batches_until_done(settings, db_url, b_job, batch=8)
    if first_batch:  # fair: B's document rides the first batch, with almost all of A's import still queued
        assert (batches, waiting) == (1, 240 - 4)
    else:  # the FIFO baseline: B waits for the whole of A's import
        assert (batches, waiting) == (31, 0)


def test_interactive_before_bulk_within_a_company_and_bulk_still_progresses(
        fair_api: RunningApi, conn: psycopg.Connection[Any], db_url: str, tenant: Any) -> None:
    bulk = post(fair_api, tenant.api_key, docs("bulk", 12))  # one POST of many: bulk
    [first] = post(fair_api, tenant.api_key, docs("one", 1))  # then a single document: interactive
    processor = IngestProcessor(fair_api.settings, make_embedder(fair_api.settings))
    with psycopg.connect(db_url) as work:
        register_vector(work)
        processor.run_batch(work, 4)
        done = {r[0] for r in conn.execute("SELECT id FROM ingest_jobs WHERE status = 'done'")}
        assert done == {first, *bulk[:3]}, "the interactive job passed the bulk import queued before it"
        # the bulk jobs left are due now: queued BULK_DELAY ago (the clock moved by moving the jobs back)
        conn.execute("UPDATE ingest_jobs SET created_at = created_at - make_interval(secs => %s),"
                     " due_at = due_at - make_interval(secs => %s) WHERE status = 'queued'", (BULK_DELAY, BULK_DELAY))
        # interactive sends keep coming, a batch's worth each round: the bulk import is not starved
        for round_ in range(3):
            post(fair_api, tenant.api_key, docs(f"round{round_}", 4), **{"Ingest-Priority": "interactive"})
            processor.run_batch(work, 4)
        left = conn.execute("SELECT count(*) FROM ingest_jobs WHERE status = 'queued' AND id = ANY(%s)",
                            (bulk,)).fetchone()
        assert left == (0,), "the bulk jobs due first went first"


def lanes(conn: psycopg.Connection[Any], job_ids: list[int]) -> set[tuple[int, float]]:
    rows = conn.execute("SELECT priority, extract(epoch FROM due_at - created_at)::float8 FROM ingest_jobs"
                        " WHERE id = ANY(%s)", (job_ids,)).fetchall()
    return {(r[0], r[1]) for r in rows}


INTERACTIVE, BULK = (0, 0.0), (1, BULK_DELAY)


@pytest.mark.parametrize(("count", "headers", "lane"), [
    (1, {}, INTERACTIVE),
    (3, {}, BULK),
    (1, {"Ingest-Priority": "bulk"}, BULK),
    (3, {"Ingest-Priority": "interactive"}, INTERACTIVE),
])
def test_documents_are_queued_in_their_lane(fair_api: RunningApi, conn: psycopg.Connection[Any], tenant: Any,
                                            count: int, headers: dict[str, str], lane: tuple[int, float]) -> None:
    assert lanes(conn, post(fair_api, tenant.api_key, docs("d", count), **headers)) == {lane}


def test_a_bad_priority_header_is_a_422_and_nothing_is_queued(fair_api: RunningApi, conn: psycopg.Connection[Any],
                                                             tenant: Any) -> None:
    with client_for(fair_api, tenant.api_key) as client:
        response = client.post("/v1/documents", json={"documents": docs("d", 2)}, headers={"Ingest-Priority": "now"})
        mail = client.post("/v1/emails", content=RAW, headers={**RFC822, "Ingest-Priority": "asap"})
    for answer in (response, mail):
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "validation_error"
        assert "Ingest-Priority" in answer.json()["error"]["message"]
    assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (0,)


RAW = b"Message-ID: <m1@example.com>\r\nFrom: a@example.com\r\nSubject: Hi\r\n\r\nHello there.\r\n"
RAW2 = b"Message-ID: <m2@example.com>\r\nFrom: a@example.com\r\nSubject: Re: Hi\r\n\r\nHello again.\r\n"


def test_one_email_is_interactive_an_mbox_bulk_a_webhook_interactive(
        fair_api: RunningApi, conn: psycopg.Connection[Any], tenant: Any) -> None:
    with client_for(fair_api, tenant.api_key) as client:
        one = client.post("/v1/emails", content=RAW, headers=RFC822).json()["job_ids"]
        box = client.post("/v1/emails", content=mbox(RAW2), headers=MBOX).json()["job_ids"]
    body = json.dumps({"id": "evt_1", "text": "The printer is on fire."}).encode()
    headers = {"X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body),
               "X-Opsctl-Company": str(tenant.company_id), "Content-Type": "application/json"}
    with client_for(fair_api, None) as client:
        hook = client.post("/v1/webhooks/helpdesk", content=body, headers=headers).json()["job_ids"]
    assert lanes(conn, one) == {INTERACTIVE}
    assert lanes(conn, box) == {BULK}
    assert lanes(conn, hook) == {INTERACTIVE}


def test_queue_gauges_per_company_top_n_and_other(fair_api: RunningApi, conn: psycopg.Connection[Any]) -> None:
    for name, count in (("big", 5), ("mid", 3), ("small", 2), ("tiny", 1)):
        post(fair_api, create_company(conn, name).api_key, docs(name, count))
    families = {f.name: f for f in QueueCollector(fair_api.pool, 0, top_companies=2).collect()}
    depth = {s.labels["company"]: s.value for s in families["core_ingest_company_queue_depth"].samples}
    oldest = {s.labels["company"] for s in families["core_ingest_company_oldest_pending_seconds"].samples}
    assert depth == {"big": 5, "mid": 3, "other": 3}
    assert oldest == {"big", "mid", "other"}
    # the autoscaler's signal: the total, as before
    assert [s.value for s in families["core_ingest_queue_depth"].samples] == [11]
