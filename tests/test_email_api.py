"""E-mail over HTTP: intake (POST /v1/emails, signed webhooks), reading a message and a thread."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from core.tenants import sign
from tests.conftest import RunningApi, client_for, drain
from tests.email_helpers import RFC822, post_email
from tests.mailfixtures import (
    alternative,
    attachment,
    encoded_word,
    encrypted,
    html,
    message,
    mixed,
    part,
    plain,
    text_attachment,
)


def test_a_message_is_queued_read_and_returned_as_sent(api: RunningApi, tenant: Any, db_url: str) -> None:
    raw = message(message_id="a/b+c@example.com", subject=encoded_word("Grüße aus Köln"),
                  cc="Carl <carl@example.com>, dora@example.com",
                  body=mixed(alternative(plain("See the report.\n"), html("<p>See the <b>report</b>.</p>")),
                             attachment("report.pdf", b"%PDF-1.4 binary", "application/pdf"),
                             text_attachment("notes.txt", "plain notes")))
    with client_for(api, tenant.api_key) as client:
        answer = post_email(client, raw)
        assert answer == {"accepted": 1, "job_ids": answer["job_ids"], "message_id": "a/b+c@example.com",
                          "duplicate": False}
        path = "/v1/emails/" + quote("a/b+c@example.com", safe="")
        assert client.get(path).status_code == 404, "not stored before the worker ran"
        drain(api.settings, db_url)
        found = client.get(path).json()
        original = client.get(path, params={"raw": "1"})
    assert found["message_id"] == "a/b+c@example.com"
    assert found["subject"] == "Grüße aus Köln"
    assert found["from"] == "Ann Example <ann@example.com>"
    assert found["to"] == ["bob@example.com"]
    assert found["cc"] == ["Carl <carl@example.com>", "dora@example.com"]
    assert found["date"] == "2024-03-04T09:30:00+00:00"
    assert found["in_reply_to"] is None and found["references"] == []
    assert found["synthetic_id"] is False
    assert found["attachments"] == [
        {"filename": "report.pdf", "content_type": "application/pdf", "size": 15, "indexed": False},
        {"filename": "notes.txt", "content_type": "text/plain", "size": 11, "indexed": True}]
    assert isinstance(found["thread_id"], int)
    assert set(found) == {"message_id", "thread_id", "subject", "from", "to", "cc", "date", "in_reply_to",
                          "references", "attachments", "notes", "synthetic_id"}
    assert original.status_code == 200
    assert original.headers["content-type"] == "message/rfc822"
    assert original.content == raw, "the original bytes, exactly"


@pytest.mark.parametrize(("raw", "note"), [
    pytest.param(message(message_id=None), "no Message-ID", id="no-message-id"),
    pytest.param(message(message_id="d@x", date="the day after tomorrow"), "Date", id="unparseable-date"),
    pytest.param(message(message_id="c@x", body=plain(b"caf\xe9 \xff\xfe", charset="x-unknown")), "x-unknown",
                 id="unknown-charset"),
    pytest.param(message(message_id="e@x", body=mixed(plain("Secret below.\n"), encrypted())), "encrypted",
                 id="encrypted-part"),
    pytest.param(b"\x00\xff\xfe not a message at all \x00", "no Message-ID", id="not-a-message"),
    pytest.param(message(message_id="h@x", extra_headers=[("X-Broken\x01Header", "value"), ("Subject", "=?bad?Q?")],
                         body=part([("Content-Type", "multipart/mixed; boundary=missing")], b"no parts here")), None,
                 id="broken-headers-and-mime"),
])
def test_broken_mail_is_stored_with_what_can_be_read(api: RunningApi, tenant: Any, db_url: str,
                                                    conn: psycopg.Connection[Any], raw: bytes,
                                                    note: str | None) -> None:
    with client_for(api, tenant.api_key) as client:
        answer = post_email(client, raw)
        drain(api.settings, db_url)
        job = client.get(f"/v1/jobs/{answer['job_ids'][0]}").json()
        assert job["status"] == "done" and job["attempts"] == 1, job
        assert job["op"] == "email" and job["outcome"].startswith("stored in thread "), job
        found = client.get("/v1/emails/" + quote(answer["message_id"], safe="")).json()
        assert client.get("/v1/emails/" + quote(answer["message_id"], safe=""), params={"raw": 1}).content == raw
    if note is not None:
        assert any(note in n for n in found["notes"]), found["notes"]
    assert conn.execute("SELECT count(*) FROM documents WHERE external_id = %s",
                        ("email:" + answer["message_id"],)).fetchone() == (1,)


def test_the_index_leaves_out_quotes_and_the_raw_keeps_them(api: RunningApi, tenant: Any, db_url: str,
                                                           conn: psycopg.Connection[Any]) -> None:
    body = "Yes, Thursday works.\n\nOn Mon, Ann wrote:\n> Can we meet on Thursday about the zebra budget?\n" \
           "> It is urgent.\n\n-- \nBob\nSales, ACME\n"
    raw = message(message_id="reply@x", subject="Re: meeting", in_reply_to="root@x", references=["root@x"],
                  body=body)
    with client_for(api, tenant.api_key) as client:
        post_email(client, raw)
        drain(api.settings, db_url)
        hits = client.post("/v1/search", json={"query": "zebra", "mode": "keyword"}).json()["results"]
        assert client.get("/v1/emails/reply@x", params={"raw": "true"}).content == raw
    stored = conn.execute("SELECT body, title FROM documents WHERE external_id = 'email:reply@x'").fetchone()
    assert stored is not None
    assert "Thursday works" in stored[0] and "zebra" not in stored[0] and "Sales, ACME" not in stored[0]
    assert stored[1] == "Re: meeting"
    assert hits == [], "quoted text is not indexed"


def test_intake_refusals(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    raw = message(message_id="r@x")
    with client_for(api, tenant.api_key) as client:
        wrong = client.post("/v1/emails", content=raw, headers={"Content-Type": "text/plain"})
        assert wrong.status_code == 415 and wrong.json()["error"]["code"] == "unsupported_media_type"
        empty = client.post("/v1/emails", content=b"", headers=RFC822)
        assert empty.status_code == 422 and "empty" in empty.json()["error"]["message"]
        too_big = client.post("/v1/emails", content=b"x" * (api.settings.max_body_bytes + 1), headers=RFC822)
        assert too_big.status_code == 413
        assert client.get("/v1/emails/%20").status_code == 422
        assert client.get("/v1/emails/r@x", params={"raw": "maybe"}).status_code == 422
        assert client.get("/v1/threads/01").status_code == 422
        assert client.get("/v1/threads/99").status_code == 404
        with_params = client.post("/v1/emails", content=raw, headers={"Content-Type": "Message/RFC822; x=y"})
        assert with_params.status_code == 202
    with client_for(api, None) as stranger:
        assert stranger.post("/v1/emails", content=raw, headers=RFC822).status_code == 401
        assert stranger.get("/v1/emails/r@x").status_code == 401
    assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (1,), "only the accepted one was written"


def test_concurrent_sends_of_one_message_queue_one_job(api: RunningApi, tenant: Any,
                                                       conn: psycopg.Connection[Any]) -> None:
    raw = message(message_id="race@x")
    answers: list[dict[str, Any]] = []
    start = threading.Barrier(8)

    def send() -> None:
        with client_for(api, tenant.api_key) as client:
            start.wait()
            answers.append(post_email(client, raw))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["accepted"] for a in answers) == [0] * 7 + [1]
    assert len({a["job_ids"][0] for a in answers}) == 1, "every duplicate names the one job"
    assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (1,)


def test_a_thread_reads_as_a_tree_and_a_merged_id_answers_with_the_survivor(
        api: RunningApi, tenant: Any, db_url: str) -> None:
    def mail(mid: str, minute: int, *refs: str, sender: str = "Ann <ann@x>") -> bytes:
        return message(message_id=mid, references=refs, in_reply_to=refs[-1] if refs else None, from_=sender,
                       subject="Plan" if not refs else "Re: Plan", date=f"Mon, 4 Mar 2024 10:{minute:02d}:00 +0000")

    with client_for(api, tenant.api_key) as client:
        # two replies to a root never received (a ghost), and a separate thread c
        post_email(client, mail("b@x", 1, "a@x", sender="Bob <bob@x>"))
        post_email(client, mail("d@x", 3, "a@x", "b@x", sender="Dora <dora@x>"))
        post_email(client, mail("c@x", 2, "a@x"))
        post_email(client, mail("e@x", 4))
        drain(api.settings, db_url)
        e_thread = client.get("/v1/emails/e@x").json()["thread_id"]
        post_email(client, mail("f@x", 5, "e@x", "b@x", sender="Bob <bob@x>"))  # links the two threads
        drain(api.settings, db_url)
        survivor = client.get("/v1/emails/b@x").json()["thread_id"]
        assert survivor != e_thread, "the larger thread survives"
        assert client.get("/v1/emails/e@x").json()["thread_id"] == survivor
        merged = client.get(f"/v1/threads/{e_thread}").json()
        tree = client.get(f"/v1/threads/{survivor}").json()
    assert merged == tree, "a thread merged away answers with its survivor"
    assert tree["thread_id"] == survivor
    assert tree["message_count"] == 5
    assert tree["subject"] == "Re: Plan"
    assert tree["participants"] == ["Bob <bob@x>", "Ann <ann@x>", "Dora <dora@x>"]
    assert tree["first_at"] == "2024-03-04T10:01:00+00:00" and tree["last_at"] == "2024-03-04T10:05:00+00:00"
    shape = [(m["message_id"], m["parent"], m["depth"], m["ghost"]) for m in tree["messages"]]
    assert shape == [
        ("a@x", None, 0, True),
        ("b@x", "a@x", 1, False), ("d@x", "b@x", 2, False), ("f@x", "b@x", 2, False),
        ("c@x", "a@x", 1, False),
        ("e@x", None, 0, False),
    ]
    first = tree["messages"][1]
    assert (first["subject"], first["from"], first["date"]) == ("Re: Plan", "Bob <bob@x>", "2024-03-04T10:01:00+00:00")


def webhook(api: RunningApi, tenant: Any, source: str, body: bytes, content_type: str) -> httpx.Response:
    headers = {"X-Opsctl-Company": str(tenant.company_id), "Content-Type": content_type,
               "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body)}
    with client_for(api, None) as client:
        return client.post(f"/v1/webhooks/{source}", content=body, headers=headers)


def test_signed_webhooks_take_raw_mime(api: RunningApi, tenant: Any, db_url: str,
                                       conn: psycopg.Connection[Any]) -> None:
    raw = message(message_id="hook@x", body=plain(b"caf\xe9", charset="latin-1", encoding="8bit"))
    first = webhook(api, tenant, "email", raw, "application/octet-stream")
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 1, "job_ids": first.json()["job_ids"], "external_id": "email:hook@x",
                            "message_id": "hook@x", "duplicate": False}
    other = message(message_id="hook2@x")
    assert webhook(api, tenant, "mailgun", other, "message/rfc822").json()["external_id"] == "email:hook2@x"
    again = webhook(api, tenant, "mailgun", raw + b"\r\n", "message/rfc822")
    assert again.json() == {"accepted": 0, "job_ids": first.json()["job_ids"], "external_id": "email:hook@x",
                            "message_id": "hook@x", "duplicate": True}
    # the source `email` takes raw mail only: no event can take the name of a message's document
    event = webhook(api, tenant, "email", b'{"id": "evt-1", "text": "a JSON event"}', "application/json")
    assert event.json()["message_id"].endswith("@opsctl.synthetic")
    event_doc = webhook(api, tenant, "crm", b'{"id": "evt-1", "text": "a CRM event"}', "application/json")
    assert event_doc.json()["external_id"] == "crm:evt-1" and "message_id" not in event_doc.json()
    drain(api.settings, db_url)
    sources = dict(conn.execute("SELECT external_id, source FROM ingest_jobs").fetchall())
    assert sources == {"email:hook@x": "webhook:email", "email:hook2@x": "webhook:mailgun",
                       event.json()["external_id"]: "webhook:email", "crm:evt-1": "webhook:crm"}
    with client_for(api, tenant.api_key) as client:
        assert client.get("/v1/emails/hook@x").json()["subject"] == "Hello"
        assert client.get("/v1/emails/hook2@x").status_code == 200
