"""Retention: a month of documents and chunks dropped (as `opsctl partitions rotate` does) takes that
month's mail out of search and leaves every message and thread readable; new mail still threads, and
a delete still deletes a message whose document is gone."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import RunningApi, client_for, drain
from tests.email_helpers import check_consistent, post_email, threads_of
from tests.mailfixtures import message


def test_a_dropped_month_leaves_mail_readable_and_threaded(api: RunningApi, tenant: Any, db_url: str,
                                                          conn: psycopg.Connection[Any]) -> None:
    for table in ("documents", "chunks"):
        conn.execute(f"CREATE TABLE {table}_p2024_03 PARTITION OF {table}"
                     " FOR VALUES FROM ('2024-03-01 00:00+00') TO ('2024-04-01 00:00+00')")
    old = message(message_id="old@x", date="Mon, 4 Mar 2024 09:30:00 +0000", body="walrus in March\n")
    reply = message(message_id="reply@x", date="Tue, 5 Mar 2024 09:30:00 +0000", body="walrus again\n",
                    in_reply_to="old@x", references=["old@x"])
    with client_for(api, tenant.api_key) as client:
        post_email(client, old)
        post_email(client, reply)
        drain(api.settings, db_url)
        assert len(client.post("/v1/search", json={"query": "walrus", "mode": "keyword"}).json()["results"]) == 2
        thread = client.get("/v1/emails/old@x").json()["thread_id"]
        for table in ("documents", "chunks"):  # the rotation's detach and drop
            conn.execute(f"ALTER TABLE {table} DETACH PARTITION {table}_p2024_03")
            conn.execute(f"DROP TABLE {table}_p2024_03")
        conn.execute("UPDATE companies SET data_version = data_version + 1")  # as `opsctl cache flush` would
        assert client.post("/v1/search", json={"query": "walrus", "mode": "keyword"}).json()["results"] == []
        assert client.get("/v1/emails/old@x").json()["thread_id"] == thread
        assert client.get("/v1/emails/old@x", params={"raw": 1}).content == old
        assert [m["message_id"] for m in client.get(f"/v1/threads/{thread}").json()["messages"]] == \
            ["old@x", "reply@x"]
        # the same message sent again is a duplicate (it is stored), and a new reply joins the thread
        assert post_email(client, old)["duplicate"] is True
        post_email(client, message(message_id="late@x", body="walrus late\n", in_reply_to="reply@x",
                                   references=["old@x", "reply@x"]))
        drain(api.settings, db_url)
        hits = client.post("/v1/search", json={"query": "walrus", "mode": "keyword", "group_by": "thread"}).json()
        assert threads_of(conn, tenant.company_id) == {frozenset({"old@x", "reply@x", "late@x"})}
        check_consistent(conn, tenant.company_id)
        assert [(h["external_id"], h["thread_id"], h["matched_messages"]) for h in hits["results"]] == \
            [("email:late@x", thread, 1)]
        # a message whose document retention dropped is still deleted whole by its delete
        deleted = client.delete("/v1/emails/old@x").json()["job_ids"][0]
        drain(api.settings, db_url)
        assert client.get(f"/v1/jobs/{deleted}").json()["outcome"] == "deleted"
        assert client.get("/v1/emails/old@x").status_code == 404
        assert client.get(f"/v1/threads/{thread}").json()["message_count"] == 2
    assert threads_of(conn, tenant.company_id) == {frozenset({"reply@x", "late@x"})}
    check_consistent(conn, tenant.company_id)
