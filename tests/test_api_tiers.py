"""Tiers over HTTP: the RateLimit-* fields, one limit shared by two API processes through Redis,
per-process limits while Redis is down, and quotas that refuse a request and write nothing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from core import metrics
from tests.conftest import RunningApi, client_for, drain, free_port

POLICY = """kind: tenants
defaultTier: small
tiers:
  small: {ratePerSecond: 0.001, burst: 4, maxDocuments: 3, maxStoredBytes: 100, maxK: 5}
  big: {ratePerSecond: 0.001, burst: 50}
"""


@pytest.fixture
def tiered(settings: Any, tmp_path: Path) -> Any:
    path = tmp_path / "tenants.yaml"
    path.write_text(POLICY)
    return settings.model_copy(update={"tenants_policy": path})


def send_event(api: RunningApi, tenant: Any, event: bytes = b'{"id": "e1", "text": "one"}') -> httpx.Response:
    """A webhook event signed with the company's secret, sent without a key."""
    from core.tenants import sign

    with client_for(api, None) as sender:
        return sender.post("/v1/webhooks/crm", content=event, headers={
            "X-Opsctl-Company": str(tenant.company_id),
            "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), event)})


def jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM ingest_jobs").fetchone()
    assert row is not None
    return int(row[0])


def docs(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"documents": [{"external_id": e, "text": t} for e, t in pairs]}


def test_answers_carry_the_rate_limit_fields(tiered: Any, tenant: Any) -> None:
    api = RunningApi(tiered)
    try:
        with client_for(api, tenant.api_key) as client:
            answers = [client.post("/v1/search", json={"query": "x", "k": 2}) for _ in range(5)]
    finally:
        api.close()
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in answers] == ["3", "2", "1", "0", "0"]
    assert {r.headers["RateLimit-Limit"] for r in answers} == {"4"}
    assert answers[0].headers["RateLimit-Policy"] == "4;w=4000"
    assert int(answers[3].headers["RateLimit-Reset"]) == 4000
    assert answers[4].json()["error"]["code"] == "rate_limited"
    assert int(answers[4].headers["Retry-After"]) == 1000
    assert "Retry-After" not in answers[3].headers


def test_a_tier_set_by_update_applies_at_once(tiered: Any, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    from core.tenants import set_tier

    api = RunningApi(tiered)
    try:
        with client_for(api, tenant.api_key) as client:
            assert client.post("/v1/search", json={"query": "x", "k": 2}).headers["RateLimit-Limit"] == "4"
            set_tier(conn, "acme", "big", apply=True)
            assert client.post("/v1/search", json={"query": "x", "k": 2}).headers["RateLimit-Limit"] == "50"
    finally:
        api.close()


def test_k_over_the_tier_is_refused(tiered: Any, tenant: Any) -> None:
    api = RunningApi(tiered)
    try:
        with client_for(api, tenant.api_key) as client:
            refused = client.post("/v1/search", json={"query": "x", "k": 6})
    finally:
        api.close()
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "k_too_large"


def test_a_batch_over_the_document_quota_writes_nothing(tiered: Any, tenant: Any,
                                                        conn: psycopg.Connection[Any]) -> None:
    api = RunningApi(tiered)
    try:
        with client_for(api, tenant.api_key) as client:
            assert client.post("/v1/documents", json=docs(("a", "one"), ("b", "two"))).status_code == 202
            over = client.post("/v1/documents", json=docs(("c", "three"), ("d", "four")))
            again = client.post("/v1/documents", json=docs(("a", "uno"), ("b", "dos"), ("c", "tres")))
            too_big = client.post("/v1/documents", json=docs(("a", "x" * 101)))
    finally:
        api.close()
    assert over.status_code == 403 and over.json()["error"]["code"] == "quota_documents"
    assert "4 documents" in over.json()["error"]["message"]
    assert again.status_code == 202  # updates of a and b replace them: three documents in all
    assert too_big.status_code == 403 and too_big.json()["error"]["code"] == "quota_bytes"
    assert jobs(conn) == 5
    rows = conn.execute("SELECT external_id FROM ingest_jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["a", "b", "a", "b", "c"]


def test_racing_batches_at_the_edge_do_not_both_pass(tiered: Any, tenant: Any,
                                                      conn: psycopg.Connection[Any]) -> None:
    """Two requests each fitting the quota alone (2 + 2 of 3): one is refused, whatever the order.
    The first holds the quota lock (a transaction of our own here) while the second is sent."""
    from core.tiers import parse_policy

    api = RunningApi(tiered.model_copy(update={"tenants_policy": None}))
    api.services.tiers = parse_policy(POLICY.replace("burst: 4,", "burst: 40,"), "tenants.yaml")
    answers: list[httpx.Response] = []
    try:
        with psycopg.connect(tiered.database_url) as holder:
            from core.ingest.quota import LOCK_SQL

            holder.execute(LOCK_SQL, (tenant.company_id,))  # as an intake in flight would hold it

            def send(pairs: tuple[tuple[str, str], ...]) -> None:
                with client_for(api, tenant.api_key) as client:
                    answers.append(client.post("/v1/documents", json=docs(*pairs)))

            racers = [threading.Thread(target=send, args=(p,)) for p in ((("a", "1"), ("b", "2")),
                                                                         (("c", "3"), ("d", "4")))]
            for racer in racers:
                racer.start()
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            deadline = time.monotonic() + 30
            while conn.execute(waiting).fetchone() != (2,):  # both wait on the lock
                assert time.monotonic() < deadline
                time.sleep(0.01)
            holder.rollback()
        for racer in racers:
            racer.join(30)
    finally:
        api.close()
    assert sorted(r.status_code for r in answers) == [202, 403]
    assert jobs(conn) == 2


def test_without_document_quotas_nothing_is_counted(settings: Any, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    api = RunningApi(settings)  # the built-in single tier: no quotas
    try:
        with client_for(api, tenant.api_key) as client:
            sent = client.post("/v1/documents", json=docs(*[(str(i), "t") for i in range(20)]))
    finally:
        api.close()
    assert sent.status_code == 202 and jobs(conn) == 20


# -- shared across processes ---------------------------------------------------------------------

def api_process(settings: Any) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    root = Path(__file__).parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.api_process", settings.model_dump_json(), str(port)],
                            cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the API process died"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the API process did not start"
        time.sleep(0.05)


@pytest.fixture
def two_apis(tiered: Any) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(2):
            proc, url = api_process(tiered)
            procs.append(proc)
            urls.append(url)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def test_two_api_processes_share_one_limit(two_apis: list[str], tenant: Any) -> None:
    """burst 4 in all: alternating between the two processes, the fifth request is refused (each
    process alone would have let 4 through: 8)."""
    statuses = []
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    for i in range(8):
        answer = httpx.post(f"{two_apis[i % 2]}/v1/search", json={"query": "x", "k": 2}, headers=auth, timeout=30)
        statuses.append(answer.status_code)
    assert statuses == [200] * 4 + [429] * 4


def test_with_redis_down_the_limit_holds_per_process(tiered: Any, tenant: Any, redis_server: Any) -> None:
    """Redis stopped: each process limits on its own (burst 4 here), and says so in its metrics."""
    api = RunningApi(tiered)
    local_before = metrics.RATE_LIMIT_LOCAL._value.get()
    try:
        redis_server.stop()
        with client_for(api, tenant.api_key) as client:
            statuses = [client.post("/v1/search", json={"query": "x", "k": 2}).status_code for _ in range(5)]
            exposed = client.get("/metrics").text
    finally:
        api.close()
        redis_server.start()
    assert statuses == [200] * 4 + [429]
    assert metrics.RATE_LIMIT_LOCAL._value.get() - local_before == 5
    assert "core_rate_limit_shared 0.0" in exposed


def test_a_webhook_over_the_quota_writes_nothing(tiered: Any, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    api = RunningApi(tiered)
    try:
        with client_for(api, tenant.api_key) as client:
            assert client.post("/v1/documents", json=docs(("a", "1"), ("b", "2"), ("c", "3"))).status_code == 202
        refused = send_event(api, tenant, b'{"id": "e1", "text": "one more"}')
    finally:
        api.close()
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota_documents"
    assert refused.headers["RateLimit-Remaining"] == "2"  # the signed event was charged, then refused
    assert jobs(conn) == 3


# -- the tier read: none beyond the principal's --------------------------------------------------

TIER_READ = "SELECT tier FROM companies"


@pytest.fixture
def tier_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement that reads a company's tier on its own (not with the principal's row)."""
    seen: list[str] = []
    execute = psycopg.Connection.execute

    def counting(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(query, str) and TIER_READ in query:
            seen.append(query)
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    return seen


def test_a_document_quota_check_reads_no_tier_beyond_the_principal(tiered: Any, tenant: Any,
                                                                    tier_reads: list[str]) -> None:
    api = RunningApi(tiered)
    try:
        with client_for(api, tenant.api_key) as client:
            sent = client.post("/v1/documents", json=docs(("a", "1")))
    finally:
        api.close()
    assert sent.status_code == 202
    assert tier_reads == []  # the principal's statement read the tier already


def test_a_signed_webhook_under_a_single_tier_reads_no_tier(settings: Any, tenant: Any,
                                                           tier_reads: list[str]) -> None:
    api = RunningApi(settings)  # the built-in single tier: every company holds it
    try:
        sent = send_event(api, tenant)
    finally:
        api.close()
    assert sent.status_code == 202
    assert tier_reads == []


def test_a_signed_webhook_is_charged_at_its_company_tier(tiered: Any, tenant: Any, conn: psycopg.Connection[Any],
                                                         tier_reads: list[str]) -> None:
    from core.tenants import set_tier

    set_tier(conn, "acme", "big", apply=True)
    api = RunningApi(tiered)
    try:
        sent = send_event(api, tenant)
    finally:
        api.close()
    assert sent.status_code == 202 and sent.headers["RateLimit-Limit"] == "50"
    assert len(tier_reads) == 1  # once, for the charge and the quota both


def test_without_document_quotas_the_intake_opens_no_savepoint(settings: Any, tenant: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The default tier adds nothing to an intake: no transaction around the queueing's own (which
    would turn it into a SAVEPOINT and a RELEASE, two round trips per request)."""
    nested: list[bool] = []
    transaction = psycopg.Connection.transaction

    def watching(self: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
        nested.append(self.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS)
        return transaction(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "transaction", watching)
    api = RunningApi(settings)  # the built-in single tier: no quotas
    try:
        with client_for(api, tenant.api_key) as client:
            sent = client.post("/v1/documents", json=docs(("a", "1")))
    finally:
        api.close()
    assert sent.status_code == 202
    assert nested and not any(nested)


MAIL_POLICY = """kind: tenants
defaultTier: mail
tiers:
  mail: {ratePerSecond: 1000, burst: 1000, maxDocuments: 2, maxStoredBytes: 100000}
"""


def message(n: int) -> bytes:
    return (f"Message-ID: <m{n}@example.com>\r\nFrom: a@example.com\r\nTo: b@example.com\r\n"
            f"Subject: note {n}\r\n\r\nbody {n}\r\n").encode()


def test_e_mail_counts_against_the_document_quota_and_a_refusal_writes_nothing(
        settings: Any, tenant: Any, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """Messages become documents: one message, an mbox and a raw-MIME webhook are checked like
    documents (a queued message by its raw size), all or nothing."""
    from core.tenants import sign

    path = tmp_path / "tenants.yaml"
    path.write_text(MAIL_POLICY)
    api = RunningApi(settings.model_copy(update={"tenants_policy": path}))
    rfc822 = {"Content-Type": "message/rfc822"}
    try:
        with client_for(api, tenant.api_key) as client:
            assert client.post("/v1/emails", content=message(1), headers=rfc822).status_code == 202
            mbox = b"".join(b"From a@example.com Fri Nov 27 06:00:00 2026\n" + message(n).replace(b"\r\n", b"\n")
                            for n in (2, 3))
            over_mbox = client.post("/v1/emails", content=mbox, headers={"Content-Type": "application/mbox"})
            again = client.post("/v1/emails", content=message(1), headers=rfc822)  # a duplicate adds nothing
            second = client.post("/v1/emails", content=message(2), headers=rfc822)
            over_one = client.post("/v1/emails", content=message(3), headers=rfc822)
        with client_for(api, None) as sender:
            raw = message(4)
            over_hook = sender.post("/v1/webhooks/email", content=raw, headers={
                "X-Opsctl-Company": str(tenant.company_id), "Content-Type": "message/rfc822",
                "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), raw)})
    finally:
        api.close()
    assert over_mbox.status_code == 403 and over_mbox.json()["error"]["code"] == "quota_documents", over_mbox.text
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert second.status_code == 202
    for refused in (over_one, over_hook):
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota_documents", refused.text
    rows = conn.execute("SELECT external_id FROM ingest_jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["email:m1@example.com", "email:m2@example.com"]


BYTES_POLICY = """kind: tenants
defaultTier: mail
tiers:
  mail: {ratePerSecond: 1000, burst: 1000, maxStoredBytes: 1000}
"""


def padded(n: int) -> bytes:
    """A message of about 600 raw bytes whose stored text is a few dozen (its headers are not text)."""
    return message(n).replace(b"Subject:", b"X-Padding: " + b"p" * 500 + b"\r\nSubject:")


def test_a_duplicate_message_is_not_refused_by_the_bytes_quota(
        settings: Any, tenant: Any, conn: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> None:
    """A message the company has already is a no-op (answered as a duplicate): it must not count its raw
    size again, which a stored copy (its text, much smaller) would not take."""
    path = tmp_path / "tenants.yaml"
    path.write_text(BYTES_POLICY)
    tiered_settings = settings.model_copy(update={"tenants_policy": path})
    api = RunningApi(tiered_settings)
    rfc822 = {"Content-Type": "message/rfc822"}
    try:
        with client_for(api, tenant.api_key) as client:
            assert client.post("/v1/emails", content=padded(1), headers=rfc822).status_code == 202
            drain(tiered_settings, db_url)  # m1 stored: its text counts, not its raw size
            assert client.post("/v1/emails", content=padded(2), headers=rfc822).status_code == 202
            before = jobs(conn)
            again = client.post("/v1/emails", content=padded(1), headers=rfc822)
            third = client.post("/v1/emails", content=padded(3), headers=rfc822)
    finally:
        api.close()
    assert again.status_code == 202 and again.json()["duplicate"] is True, again.text
    assert third.status_code == 403 and third.json()["error"]["code"] == "quota_bytes", third.text
    assert jobs(conn) == before
