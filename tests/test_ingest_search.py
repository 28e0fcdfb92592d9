"""Ingest → search round trips through the real API, database, Redis and workers."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import RunningApi, client_for, drain

DOCS = [
    {"external_id": "kb-1", "title": "Refunds", "text": "Refunds are issued within 14 days of the return.",
     "metadata": {"lang": "en", "team": "billing"}},
    {"external_id": "kb-2", "title": "Shipping", "text": "Parcels ship from Rotterdam every weekday morning.",
     "metadata": {"lang": "en", "team": "logistics"}},
    {"external_id": "kb-3", "title": "Passwords", "text": "Reset your password from the account security page.",
     "metadata": {"lang": "en", "team": "support"}},
]


def ingest(api: RunningApi, key: str, docs: list[dict[str, Any]]) -> list[int]:
    with client_for(api, key) as client:
        response = client.post("/v1/documents", json={"documents": docs})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == len(docs)
    ids: list[int] = body["job_ids"]
    return ids


def search(api: RunningApi, key: str, query: str, **extra: Any) -> dict[str, Any]:
    with client_for(api, key) as client:
        response = client.post("/v1/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def count(conn: psycopg.Connection[Any], sql: str, *args: Any) -> int:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(("mode", "exact_max_rows"), [
    ("vector", 10_000), ("vector", 0), ("keyword", 10_000), ("hybrid", 10_000), ("hybrid", 0)])
def test_round_trip_every_mode(api: RunningApi, tenant: Any, db_url: str, mode: str, exact_max_rows: int) -> None:
    api.settings.vector_exact_max_rows = exact_max_rows  # 0: the HNSW index, else every chunk compared
    ingest(api, tenant.api_key, DOCS)
    assert drain(api.settings, db_url) == 3
    result = search(api, tenant.api_key, "how many days for refunds", mode=mode, k=2)
    assert result["cached"] is False
    assert result["results"], result
    top = result["results"][0]
    assert top["external_id"] == "kb-1"
    assert "Refunds are issued" in top["text"]
    assert set(top) == {"document_id", "external_id", "chunk_id", "text", "score"}
    assert len(result["results"]) <= 2


def test_job_status_moves_to_done(api: RunningApi, tenant: Any, db_url: str) -> None:
    (job_id,) = ingest(api, tenant.api_key, DOCS[:1])
    with client_for(api, tenant.api_key) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        drain(api.settings, db_url)
        body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "done"
    assert body["attempts"] == 1
    assert body["outcome"] == "created"


def test_same_content_is_a_noop_new_content_an_update(api: RunningApi, tenant: Any, db_url: str,
                                                      conn: psycopg.Connection[Any]) -> None:
    first = ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    again = ingest(api, tenant.api_key, DOCS)
    assert again == first, "re-sending identical documents returns the existing jobs"
    assert count(conn, "SELECT count(*) FROM ingest_jobs") == 3

    changed = {**DOCS[0], "text": "Refunds now take 30 days, sent to the original card."}
    (update_job,) = ingest(api, tenant.api_key, [changed])
    assert update_job not in first
    drain(api.settings, db_url)
    assert count(conn, "SELECT count(*) FROM documents WHERE external_id = 'kb-1'") == 1
    texts = [r[0] for r in conn.execute(
        "SELECT body FROM chunks WHERE external_id = 'kb-1' ORDER BY ord").fetchall()]
    assert texts == ["Refunds now take 30 days, sent to the original card."]
    result = search(api, tenant.api_key, "original card", mode="keyword")
    assert [r["external_id"] for r in result["results"]] == ["kb-1"]


def test_back_and_forth_update_ends_on_the_latest(api: RunningApi, tenant: Any, db_url: str,
                                                  conn: psycopg.Connection[Any]) -> None:
    a = {"external_id": "x", "text": "alpha version of the page"}
    b = {"external_id": "x", "text": "beta version of the page"}
    ingest(api, tenant.api_key, [a])
    drain(api.settings, db_url)
    ingest(api, tenant.api_key, [b])
    ingest(api, tenant.api_key, [a])  # back to A before B was processed: not a no-op
    drain(api.settings, db_url)
    outcomes = [r[0] for r in conn.execute("SELECT outcome FROM ingest_jobs ORDER BY id").fetchall()]
    assert outcomes[0] == "created"
    assert outcomes[1].startswith("superseded by job")
    assert outcomes[2] == "updated"
    assert [r[0] for r in conn.execute("SELECT body FROM chunks").fetchall()] == ["alpha version of the page"]


def test_delete_removes_document_and_chunks(api: RunningApi, tenant: Any, db_url: str,
                                            conn: psycopg.Connection[Any]) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    with client_for(api, tenant.api_key) as client:
        response = client.delete("/v1/documents/kb-2")
    assert response.status_code == 202
    drain(api.settings, db_url)
    assert count(conn, "SELECT count(*) FROM documents WHERE external_id = 'kb-2'") == 0
    assert count(conn, "SELECT count(*) FROM chunks WHERE external_id = 'kb-2'") == 0
    assert count(conn, "SELECT count(*) FROM documents") == 2
    result = search(api, tenant.api_key, "Rotterdam parcels", mode="keyword")
    assert result["results"] == []


def test_cache_hit_then_invalidated_by_ingest(api: RunningApi, tenant: Any, db_url: str) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    first = search(api, tenant.api_key, "password reset")
    second = search(api, tenant.api_key, "password  reset ")  # same query once normalized
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["results"] == first["results"]
    ingest(api, tenant.api_key, [{"external_id": "kb-4", "text": "Password reset links expire after one hour."}])
    drain(api.settings, db_url)
    third = search(api, tenant.api_key, "password reset")
    assert third["cached"] is False, "a completed ingest must invalidate the cached answer"
    assert "kb-4" in [r["external_id"] for r in third["results"]]


def test_filters(api: RunningApi, tenant: Any, db_url: str) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    for mode in ("vector", "keyword", "hybrid"):
        result = search(api, tenant.api_key, "refunds shipping password", mode=mode,
                        filters={"metadata": {"team": "logistics"}})
        assert [r["external_id"] for r in result["results"]] == ["kb-2"], mode
    result = search(api, tenant.api_key, "refunds", mode="vector", filters={"external_ids": ["kb-3"]})
    assert [r["external_id"] for r in result["results"]] == ["kb-3"]


def test_created_at_places_documents_in_partitions(api: RunningApi, tenant: Any, db_url: str,
                                                   conn: psycopg.Connection[Any]) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    ingest(api, tenant.api_key, [{"external_id": "now", "text": "this month", "created_at": now.isoformat()},
                                 {"external_id": "old", "text": "long ago", "created_at": "2001-02-03T04:05:06Z"}])
    drain(api.settings, db_url)
    rows = dict(conn.execute("SELECT external_id, tableoid::regclass::text FROM documents").fetchall())
    assert rows["now"] == f"documents_p{now:%Y_%m}"
    assert rows["old"] == "documents_default"
    result = search(api, tenant.api_key, "long ago", mode="keyword",
                    filters={"created_before": "2002-01-01T00:00:00Z"})
    assert [r["external_id"] for r in result["results"]] == ["old"]


def test_tenant_isolation(api: RunningApi, tenant: Any, other_tenant: Any, db_url: str,
                          conn: psycopg.Connection[Any]) -> None:
    jobs_a = ingest(api, tenant.api_key, DOCS)
    ingest(api, other_tenant.api_key, [{"external_id": "kb-1", "text": "Globex secret: refunds never happen."}])
    drain(api.settings, db_url)
    for mode in ("vector", "keyword", "hybrid"):
        a = search(api, tenant.api_key, "refunds secret globex", mode=mode, k=10)
        b = search(api, other_tenant.api_key, "refunds secret globex", mode=mode, k=10)
        assert all("Globex" not in r["text"] for r in a["results"]), mode
        assert [r["text"] for r in b["results"]] == ["Globex secret: refunds never happen."], mode
    with client_for(api, other_tenant.api_key) as client:
        assert client.get(f"/v1/jobs/{jobs_a[0]}").status_code == 404
        response = client.delete("/v1/documents/kb-2")
        assert response.status_code == 202
    drain(api.settings, db_url)
    # B's delete of "kb-2" touches only B's (non-existent) kb-2: A still has all three
    assert count(conn, "SELECT count(*) FROM documents WHERE company_id = %s", tenant.company_id) == 3
    assert count(conn, "SELECT count(*) FROM documents WHERE company_id = %s", other_tenant.company_id) == 1


def test_search_works_with_redis_down(api: RunningApi, tenant: Any, db_url: str, redis_server: Any) -> None:
    from prometheus_client import REGISTRY

    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    before = REGISTRY.get_sample_value("core_search_cache_requests_total", {"result": "error"}) or 0.0
    redis_server.kill()
    try:
        for query in ("refunds", "refunds issued", "refunds within days"):
            result = search(api, tenant.api_key, query)
            assert result["cached"] is False
            assert result["results"][0]["external_id"] == "kb-1"
        again = search(api, tenant.api_key, "refunds")
        assert again["cached"] is True, "answered from the API process's near cache, Redis or not"
        assert again["results"][0]["external_id"] == "kb-1"
        # ingest keeps working too
        ingest(api, tenant.api_key, [{"external_id": "kb-9", "text": "written while the cache was down"}])
        drain(api.settings, db_url)
        assert search(api, tenant.api_key, "cache was down", mode="keyword")["results"][0]["external_id"] == "kb-9"
        with client_for(api, None) as client:
            ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["redis"].startswith("unavailable")
    finally:
        redis_server.start()
    after = REGISTRY.get_sample_value("core_search_cache_requests_total", {"result": "error"}) or 0.0
    assert after - before >= 3


def test_webhook_signed_event_is_ingested(api: RunningApi, tenant: Any, db_url: str) -> None:
    import json
    import time

    from core.tenants import sign

    body = json.dumps({"id": "evt_1", "type": "ticket.created", "subject": "Printer on fire",
                       "text": "The office printer is on fire again."}).encode()
    headers = {"X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body),
               "X-Opsctl-Company": str(tenant.company_id), "Content-Type": "application/json"}
    with client_for(api, None) as client:
        response = client.post("/v1/webhooks/helpdesk", content=body, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json()["external_id"] == "helpdesk:evt_1"
        redelivered = client.post("/v1/webhooks/helpdesk", content=body, headers=headers)
    assert redelivered.json()["job_ids"] == response.json()["job_ids"]
    drain(api.settings, db_url)
    hits = search(api, tenant.api_key, "printer fire", mode="keyword")["results"]
    assert [h["external_id"] for h in hits] == ["helpdesk:evt_1"]


def test_metrics_exposed(api: RunningApi, tenant: Any, db_url: str) -> None:
    ingest(api, tenant.api_key, DOCS)
    with client_for(api, None) as client:
        text = client.get("/metrics").text
    assert "core_ingest_queue_depth 3.0" in text
    assert "core_ingest_oldest_pending_seconds" in text
    assert 'core_http_request_duration_seconds_count{method="POST",route="/v1/documents",status="202"}' in text
    assert 'core_db_pool_connections{state="max"} 8.0' in text
    drain(api.settings, db_url)
    with client_for(api, None) as client:
        text = client.get("/metrics").text
    assert "core_ingest_queue_depth 0.0" in text
