"""A mailbox in one request: ``POST /v1/emails`` with ``Content-Type: application/mbox`` (RFC 4155).

Real server, real database: the answer per message in body order, duplicates inside the body and
against stored or queued mail, the refusals (nothing written by any of them, all or nothing), tenancy,
and mail sent as an mbox threaded exactly like the same mail sent one message per request."""

from __future__ import annotations

import random
import threading
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from core.ingest.mailaccept import Known, Planned, accept_emails, plan_emails
from core.mail.message import message_id_of
from tests.conftest import RunningApi, client_for, drain, make_settings
from tests.email_helpers import MBOX, mbox, post_email, post_mbox, synthetic_list, threads_of
from tests.mailfixtures import message


def refused(client: httpx.Client, body: bytes, status: int = 422,
            headers: dict[str, str] = MBOX) -> dict[str, Any]:
    response = client.post("/v1/emails", content=body, headers=headers)
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM ingest_jobs").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(("ids", "known", "plan"), [
    (["a", "b"], {}, [Planned(False), Planned(False)]),
    (["a", "b", "a", "a"], {}, [Planned(False), Planned(False), Planned(True, same_as=0), Planned(True, same_as=0)]),
    (["a", "b", "a"], {"a": Known(7)}, [Planned(True, job_id=7), Planned(False), Planned(True, job_id=7)]),
    (["a"], {"a": Known(None)}, [Planned(True)]),  # stored by a job since removed
    ([], {"a": Known(1)}, []),
])
def test_plan_emails(ids: list[str], known: dict[str, Known], plan: list[Planned]) -> None:
    assert plan_emails(ids, known) == plan


COUNTERS_SQL = """
SELECT c.relname, pg_stat_get_xact_tuples_returned(c.oid) FROM pg_class c
WHERE c.oid IN (SELECT unnest(%(tables)s::regclass[])
                UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%(tables)s::regclass[]))
"""


def rows_read(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows read so far in this transaction from mail_messages, ingest_jobs and each of their indexes."""
    tables = ["mail_messages", "ingest_jobs"]
    return {r[0]: int(r[1]) for r in conn.execute(COUNTERS_SQL, {"tables": tables}).fetchall()}


def test_the_accept_probes_the_ids_of_the_body_not_the_companys_mail(
        db_url: str, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    """With statements the connection used while the tables were empty (the plans a fresh deployment
    would cache), accepting an mbox into a company holding thousands of messages reads only the
    rows of the ids it names."""
    company = tenant.company_id
    with psycopg.connect(db_url) as api_conn:
        for i in range(8):
            accept_emails(api_conn, company, [(f"warm{i}@x", b"x\n"), (f"warm{i}b@x", b"y\n")], "api")
        conn.execute("DELETE FROM ingest_jobs")
        conn.execute("""INSERT INTO mail_messages (company_id, message_id, thread_id, synthetic_id, to_addrs, cc_addrs,
                                                   refs, attachments, notes, created_at, raw_size, raw_deflate, job_id)
                        SELECT %s, 's' || n || '@seed', n / 40, false, '{}', '{}', '{}', '[]', '{}', now(), 0, '', n
                        FROM generate_series(1, 3000) n""", (company,))
        conn.execute("""INSERT INTO ingest_jobs (company_id, external_id, op, status)
                        SELECT %s, 'email:s' || n || '@seed', 'email', 'done' FROM generate_series(1, 3000) n""",
                     (company,))
        with api_conn.transaction():
            before = rows_read(api_conn)
            answers = accept_emails(api_conn, company, [("s7@seed", b"a\n"), ("new1@x", b"b\n"),
                                                        ("new2@x", b"c\n")], "api")
            after = rows_read(api_conn)
    assert [a.duplicate for a in answers] == [True, False, False] and answers[0].job_id == 7
    read = {name: after[name] - before[name] for name in after if after[name] > before[name]}
    assert sum(read.values()) <= 6, read


def test_an_mbox_is_queued_in_one_request_and_every_message_stored_byte_exact(
        api: RunningApi, tenant: Any, db_url: str) -> None:
    quoting = (b"Message-ID: <q@x>\nSubject: quoting\n\nHi,\nFrom here on we meet.\n>From the archive\n"
               b"From x Mon Jan  5 09:00:00 2026\n\n")
    crlf = message(message_id="crlf@x")
    anonymous = message(message_id=None, subject="no id", linesep=b"\n")
    with client_for(api, tenant.api_key) as client:
        answer = post_mbox(client, mbox(quoting, crlf, anonymous))
        synthetic = message_id_of(anonymous)[0]
        assert answer["accepted"] == 3 and len(answer["job_ids"]) == 3
        assert answer["messages"] == [{"message_id": mid, "job_id": job, "duplicate": False}
                                      for mid, job in zip(["q@x", "crlf@x", synthetic], answer["job_ids"], strict=True)]
        assert set(answer) == {"accepted", "job_ids", "messages"}
        drain(api.settings, db_url)
        for raw, mid in ((quoting, "q@x"), (crlf, "crlf@x"), (anonymous, synthetic)):
            stored = client.get("/v1/emails/" + quote(mid, safe=""), params={"raw": 1})
            assert stored.status_code == 200 and stored.content == raw, mid
            job = client.get(f"/v1/jobs/{answer['job_ids'][0]}").json()
            assert job["status"] == "done", job


def test_duplicates_inside_the_body_and_against_queued_and_stored_mail(
        api: RunningApi, tenant: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    a, b, c, d = (message(message_id=f"{x}@x") for x in "abcd")
    with client_for(api, tenant.api_key) as client:
        stored = post_email(client, a)
        drain(api.settings, db_url)
        queued = post_email(client, b)
        answer = post_mbox(client, mbox(c, a, b, c, d, b"Message-ID: <c@x>\nSubject: other bytes, same id\n\nx\n"))
    job_c, job_d = answer["job_ids"]
    assert answer["accepted"] == 2
    assert answer["messages"] == [
        {"message_id": "c@x", "job_id": job_c, "duplicate": False},
        {"message_id": "a@x", "job_id": stored["job_ids"][0], "duplicate": True},
        {"message_id": "b@x", "job_id": queued["job_ids"][0], "duplicate": True},
        {"message_id": "c@x", "job_id": job_c, "duplicate": True},
        {"message_id": "d@x", "job_id": job_d, "duplicate": False},
        {"message_id": "c@x", "job_id": job_c, "duplicate": True},
    ]
    assert jobs(conn) == 4, "a, b, then c and d: nothing else written"


def test_refusals_write_nothing(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    good = message(message_id="g@x")
    with client_for(api, tenant.api_key) as client:
        not_mbox = refused(client, message(message_id="n@x"))
        assert not_mbox["code"] == "validation_error"
        assert "not an mbox: line 1 comes before any 'From <address> <date>' line" in not_mbox["message"]
        for empty in (b"", b"\n\r\n  \n"):
            assert "no message" in refused(client, empty)["message"]
        two = mbox(good, message(message_id="h@x"))
        empty_later = refused(client, two + b"From x Mon Jan  5 09:00:00 2026\n\n")
        line = len(two.splitlines()) + 1
        assert f"message 3 (line {line}) is empty" in empty_later["message"], empty_later
        wrong = refused(client, mbox(good), 415, {"Content-Type": "text/plain"})
        assert wrong["code"] == "unsupported_media_type"
        assert "message/rfc822" in wrong["message"] and "application/mbox" in wrong["message"]
        too_big = mbox(good) + b"x" * api.settings.max_body_bytes
        assert refused(client, too_big, 413)["code"] == "body_too_large"
    with client_for(api, None) as stranger:
        assert stranger.post("/v1/emails", content=mbox(good), headers=MBOX).status_code == 401
    assert jobs(conn) == 0, "no refused request wrote anything"


def test_at_most_max_documents_per_request_messages(db_url: str, redis_url: str, tenant: Any,
                                                    conn: psycopg.Connection[Any]) -> None:
    api = RunningApi(make_settings(database_url=db_url, redis_url=redis_url, max_documents_per_request=3))
    try:
        with client_for(api, tenant.api_key) as client:
            four = mbox(*(message(message_id=f"{i}@x") for i in range(4)))
            error = refused(client, four)
            assert error["message"] == ("messages: at most 3 per request (max_documents_per_request), got 4"), error
            assert jobs(conn) == 0
            assert post_mbox(client, mbox(*(message(message_id=f"{i}@x") for i in range(3))))["accepted"] == 3
    finally:
        api.close()


def test_concurrent_mboxes_sharing_messages_queue_each_once(settings: Any, tenant: Any,
                                                            conn: psycopg.Connection[Any]) -> None:
    """Six mboxes of the same messages in different orders, and the same messages one by one, at once:
    the accept locks are taken in one order, so no request deadlocks (a 5xx) and each message is queued once."""
    raws = [message(message_id=f"c{i}@x") for i in range(30)]
    api = RunningApi(settings.model_copy(update={"rate_limit_burst": 10**6}))
    answers: list[dict[str, Any]] = []
    start = threading.Barrier(7, timeout=60)

    def send_mbox(seed: int) -> None:
        shuffled = random.Random(seed).sample(raws, len(raws))
        with client_for(api, tenant.api_key) as client:
            start.wait()
            answers.extend(post_mbox(client, mbox(*shuffled))["messages"])

    def send_alone() -> None:
        with client_for(api, tenant.api_key) as client:
            start.wait()
            for raw in raws:
                answer = post_email(client, raw)
                answers.append({"message_id": answer["message_id"], "job_id": answer["job_ids"][0],
                                "duplicate": answer["duplicate"]})

    try:
        threads = [threading.Thread(target=send_mbox, args=(seed,)) for seed in range(6)]
        threads.append(threading.Thread(target=send_alone))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        api.close()
    assert len(answers) == 7 * 30, "every request answered 202"
    for i in range(30):
        mine = [a for a in answers if a["message_id"] == f"c{i}@x"]
        assert sum(not a["duplicate"] for a in mine) == 1, mine
        assert len({a["job_id"] for a in mine}) == 1, "every duplicate names the one job"
    assert jobs(conn) == 30


def test_each_company_has_its_own_mail(api: RunningApi, tenant: Any, other_tenant: Any, db_url: str) -> None:
    shared, own = message(message_id="shared@x"), message(message_id="own@x")
    with client_for(api, tenant.api_key) as first, client_for(api, other_tenant.api_key) as second:
        assert post_mbox(first, mbox(shared, own))["accepted"] == 2
        answer = post_mbox(second, mbox(shared))
        assert answer["accepted"] == 1 and answer["messages"][0]["duplicate"] is False, "not another company's"
        drain(api.settings, db_url)
        assert second.get("/v1/emails/own@x").status_code == 404
        assert second.get("/v1/emails/shared@x").status_code == 200
        assert first.get("/v1/emails/own@x").status_code == 200


def test_mail_sent_as_mboxes_is_threaded_exactly_like_mail_sent_one_by_one(
        settings: Any, tenant: Any, other_tenant: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    raws, expected = synthetic_list(threads=25, seed=11, cross_links=4)
    api = RunningApi(settings.model_copy(update={"rate_limit_burst": 10**6}))  # a few hundred requests at once
    try:
        with client_for(api, tenant.api_key) as one_by_one, client_for(api, other_tenant.api_key) as batched:
            for raw in raws:
                post_email(one_by_one, raw)
            for start in range(0, len(raws), 40):
                assert post_mbox(batched, mbox(*raws[start:start + 40]))["accepted"] == len(raws[start:start + 40])
            drain(api.settings, db_url)
            single, mboxed = threads_of(conn, tenant.company_id), threads_of(conn, other_tenant.company_id)
            assert single == mboxed == expected
            for thread in expected:
                first = sorted(thread)[0]
                trees = []
                for client in (one_by_one, batched):
                    thread_id = client.get("/v1/emails/" + quote(first, safe="")).json()["thread_id"]
                    tree = client.get(f"/v1/threads/{thread_id}").json()
                    trees.append({k: v for k, v in tree.items() if k != "thread_id"})
                assert trees[0] == trees[1], first
    finally:
        api.close()
