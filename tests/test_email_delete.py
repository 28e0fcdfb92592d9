"""Deleting mail end to end (real API, queue and worker): a delete of a mail document, or
``DELETE /v1/emails/{id}``, deletes the message whole; its id stays in the registry (the thread
keeps its shape and its merges) and the message can be sent again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from core.tenants import create_company
from tests.conftest import RunningApi, client_for, drain
from tests.email_helpers import check_consistent, mbox, post_email, post_mbox, threads_of
from tests.mailfixtures import DEFAULT_DATE, message


def at(minute: int) -> Any:
    return DEFAULT_DATE + timedelta(minutes=minute)


def mail(mid: str, *refs: str, minute: int = 0, subject: str | None = None) -> bytes:
    return message(message_id=mid, references=refs, in_reply_to=refs[-1] if refs else None,
                   subject=subject or (f"Re: plan {mid}" if refs else f"plan {mid}"),
                   date=at(minute), body=f"Message {mid} about kumquats.\n")


def email_path(mid: str) -> str:
    return "/v1/emails/" + quote(mid, safe="")


def tree(client: httpx.Client, thread_id: int) -> list[tuple[str, str | None, int, bool]]:
    found = client.get(f"/v1/threads/{thread_id}").json()
    return [(m["message_id"], m["parent"], m["depth"], m["ghost"]) for m in found["messages"]]


def found_by_search(client: httpx.Client) -> set[str]:
    response = client.post("/v1/search", json={"query": "kumquats", "mode": "keyword", "k": 50})
    assert response.status_code == 200, response.text
    return {hit["external_id"] for hit in response.json()["results"]}


def thread_row(conn: psycopg.Connection[Any], company_id: int, thread_id: int) -> tuple[Any, ...]:
    row = conn.execute("SELECT message_count, first_at, last_at, subject, merged_into FROM mail_threads"
                       " WHERE company_id = %s AND id = %s", (company_id, thread_id)).fetchone()
    assert row is not None
    return tuple(row)


def outcome(client: httpx.Client, job_id: int) -> str:
    answer: str = client.get(f"/v1/jobs/{job_id}").json()["outcome"]
    return answer


def test_deleting_a_mail_document_deletes_the_message_and_it_can_be_sent_again(
        api: RunningApi, tenant: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    with client_for(api, tenant.api_key) as client:
        for raw in (mail("a@x"), mail("b@x", "a@x", minute=1), mail("c@x", "a@x", "b@x", minute=2),
                    mail("d@x", "a@x", minute=3)):
            post_email(client, raw)
        drain(api.settings, db_url)
        thread = client.get(email_path("b@x")).json()["thread_id"]
        deleted = client.delete("/v1/documents/" + quote("email:b@x", safe=""))
        assert deleted.status_code == 202
        drain(api.settings, db_url)
        assert outcome(client, deleted.json()["job_ids"][0]) == "deleted"
        assert client.get(email_path("b@x")).status_code == 404
        assert client.get(email_path("b@x"), params={"raw": "1"}).status_code == 404
        assert found_by_search(client) == {"email:a@x", "email:c@x", "email:d@x"}
        # b is a ghost with one child: pruned, c hangs under a
        assert tree(client, thread) == [("a@x", None, 0, False), ("c@x", "a@x", 1, False), ("d@x", "a@x", 1, False)]
        assert client.get(f"/v1/threads/{thread}").json()["message_count"] == 3
        assert threads_of(conn, tenant.company_id) == {frozenset({"a@x", "c@x", "d@x"})}
        check_consistent(conn, tenant.company_id)

        again = post_email(client, mail("b@x", "a@x", minute=1))
        assert again["duplicate"] is False and again["accepted"] == 1
        drain(api.settings, db_url)
        assert client.get(email_path("b@x")).json()["thread_id"] == thread, "into the same thread"
        assert tree(client, thread) == [("a@x", None, 0, False), ("b@x", "a@x", 1, False), ("c@x", "b@x", 2, False),
                                        ("d@x", "a@x", 1, False)]
        assert found_by_search(client) == {"email:a@x", "email:b@x", "email:c@x", "email:d@x"}
        assert client.get(f"/v1/threads/{thread}").json()["message_count"] == 4
    check_consistent(conn, tenant.company_id)


def test_a_deleted_message_stays_a_ghost_where_it_joins_branches(api: RunningApi, tenant: Any, db_url: str,
                                                                 conn: psycopg.Connection[Any]) -> None:
    with client_for(api, tenant.api_key) as client:
        for raw in (mail("a@x"), mail("b@x", "a@x", minute=1), mail("c@x", "a@x", minute=2)):
            post_email(client, raw)
        drain(api.settings, db_url)
        thread = client.get(email_path("a@x")).json()["thread_id"]
        assert client.delete(email_path("a@x")).status_code == 202
        drain(api.settings, db_url)
        assert tree(client, thread) == [("a@x", None, 0, True), ("b@x", "a@x", 1, False), ("c@x", "a@x", 1, False)]
    check_consistent(conn, tenant.company_id)


def test_the_thread_counters_follow_a_delete(api: RunningApi, tenant: Any, db_url: str,
                                            conn: psycopg.Connection[Any]) -> None:
    with client_for(api, tenant.api_key) as client:
        for raw in (mail("a@x", subject="Kickoff"), mail("b@x", "a@x", minute=10, subject="Re: Kickoff"),
                    mail("c@x", "a@x", "b@x", minute=20, subject="Re: Kickoff")):
            post_email(client, raw)
        drain(api.settings, db_url)
        thread = client.get(email_path("a@x")).json()["thread_id"]
        for mid in ("a@x", "c@x"):
            assert client.delete(email_path(mid)).status_code == 202
        drain(api.settings, db_url)
        read = client.get(f"/v1/threads/{thread}").json()
    assert thread_row(conn, tenant.company_id, thread) == (1, at(10), at(10), "Re: Kickoff", None)
    assert (read["message_count"], read["subject"], read["first_at"], read["last_at"]) == (
        1, "Re: Kickoff", at(10).isoformat(), at(10).isoformat())
    check_consistent(conn, tenant.company_id)


def test_a_thread_with_no_message_left_is_not_found_and_fills_again(api: RunningApi, tenant: Any, db_url: str,
                                                                   conn: psycopg.Connection[Any]) -> None:
    with client_for(api, tenant.api_key) as client:
        post_email(client, mail("solo@x", "gone@x", minute=5))
        drain(api.settings, db_url)
        thread = client.get(email_path("solo@x")).json()["thread_id"]
        assert client.delete(email_path("solo@x")).status_code == 202
        drain(api.settings, db_url)
        missing = client.get(f"/v1/threads/{thread}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        check_consistent(conn, tenant.company_id)
        # the ids stay registered: a message naming the ghost, or the message again, lands in the
        # same thread, whose counters start again from what it holds
        post_email(client, mail("other@x", "gone@x", minute=30))
        drain(api.settings, db_url)
        assert client.get(email_path("other@x")).json()["thread_id"] == thread
        assert thread_row(conn, tenant.company_id, thread) == (1, at(30), at(30), "Re: plan other@x", None)
        post_email(client, mail("solo@x", "gone@x", minute=5))
        drain(api.settings, db_url)
        assert client.get(email_path("solo@x")).json()["thread_id"] == thread
        assert client.get(f"/v1/threads/{thread}").json()["message_count"] == 2
    assert thread_row(conn, tenant.company_id, thread) == (2, at(5), at(30), "Re: plan solo@x", None)
    check_consistent(conn, tenant.company_id)


def test_delete_of_the_message_that_merged_two_threads_keeps_them_merged(
        api: RunningApi, tenant: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    with client_for(api, tenant.api_key) as client:
        for raw in (mail("a@x"), mail("b@x", "a@x", minute=1), mail("c@x", minute=2)):
            post_email(client, raw)
        drain(api.settings, db_url)
        first, second = (client.get(email_path(m)).json()["thread_id"] for m in ("a@x", "c@x"))
        assert first != second
        post_email(client, mail("link@x", "a@x", "c@x", minute=3))
        drain(api.settings, db_url)
        survivor = client.get(email_path("link@x")).json()["thread_id"]
        assert survivor == first, "the larger thread survives"
        answer = client.delete(email_path("link@x"))
        assert answer.status_code == 202
        drain(api.settings, db_url)
        assert client.get(email_path("link@x")).status_code == 404
        assert threads_of(conn, tenant.company_id) == {frozenset({"a@x", "b@x", "c@x"})}
        for asked in (first, second):
            read = client.get(f"/v1/threads/{asked}").json()
            assert (read["thread_id"], read["message_count"]) == (survivor, 3)
        # nothing stored names both sides any more: one thread (the registry keeps the link), two roots
        assert tree(client, survivor) == [("a@x", None, 0, False), ("b@x", "a@x", 1, False), ("c@x", None, 0, False)]
        # a message naming c now lands in the merged thread
        post_email(client, mail("d@x", "c@x", minute=4))
        drain(api.settings, db_url)
        assert client.get(email_path("d@x")).json()["thread_id"] == survivor
    check_consistent(conn, tenant.company_id)


def test_delete_email_route_normalises_the_id_and_answers_like_a_document_delete(
        api: RunningApi, tenant: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    other = create_company(conn, "globex")
    with client_for(api, tenant.api_key) as client, client_for(api, other.api_key) as theirs:
        post_email(client, mail("mine@x"))
        post_email(theirs, mail("theirs@x"))
        drain(api.settings, db_url)
        answers = {asked: client.delete(email_path(asked)) for asked in ("<mine@x>", "theirs@x", "never@x")}
        assert {a: (r.status_code, set(r.json())) for a, r in answers.items()} == {
            a: (202, {"accepted", "job_ids"}) for a in answers}
        assert all(r.json()["accepted"] == 1 and len(r.json()["job_ids"]) == 1 for r in answers.values())
        drain(api.settings, db_url)
        outcomes = {asked: client.get(f"/v1/jobs/{r.json()['job_ids'][0]}").json() for asked, r in answers.items()}
        assert {a: (o["external_id"], o["op"], o["outcome"]) for a, o in outcomes.items()} == {
            "<mine@x>": ("email:mine@x", "delete", "deleted"),
            "theirs@x": ("email:theirs@x", "delete", "nothing to delete"),
            "never@x": ("email:never@x", "delete", "nothing to delete")}
        assert client.get(email_path("mine@x")).status_code == 404
        assert theirs.get(email_path("theirs@x")).status_code == 200, "another company's mail is untouched"
        nothing = client.delete(email_path("<>"))
        assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "not_found"
        assert client.delete("/v1/emails/%20").status_code == 422
    check_consistent(conn, tenant.company_id)
    check_consistent(conn, other.company_id)


def test_a_message_sent_again_while_its_delete_waits_stays_stored(api: RunningApi, tenant: Any, db_url: str,
                                                                 conn: psycopg.Connection[Any]) -> None:
    """The newest word on a message wins, as for documents: its delete queued, then the message sent
    again, is the message kept (the send is not answered with the job that stored it before)."""
    with client_for(api, tenant.api_key) as client:
        first = post_email(client, mail("keep@x"))
        drain(api.settings, db_url)
        assert client.delete(email_path("keep@x")).status_code == 202
        again = post_email(client, mail("keep@x"))
        assert again["duplicate"] is False and again["job_ids"] != first["job_ids"]
        assert post_email(client, mail("keep@x")) == {**again, "accepted": 0, "duplicate": True}
        drain(api.settings, db_url)
        assert client.get(email_path("keep@x")).status_code == 200
        assert found_by_search(client) == {"email:keep@x"}
    check_consistent(conn, tenant.company_id)


@pytest.mark.parametrize("together", [False, True], ids=["batches-apart", "one-batch"])
def test_a_delete_and_a_reply_naming_the_deleted_message(api: RunningApi, tenant: Any, db_url: str,
                                                          conn: psycopg.Connection[Any], together: bool) -> None:
    """A delete and a reply to the deleted message in one batch (the mail locks of both taken at once)
    or in two: the reply joins the thread, under the ghost."""
    with client_for(api, tenant.api_key) as client:
        post_email(client, mail("root@x"))
        post_email(client, mail("mid@x", "root@x", minute=1))
        drain(api.settings, db_url)
        thread = client.get(email_path("root@x")).json()["thread_id"]
        assert client.delete(email_path("mid@x")).status_code == 202
        if not together:
            drain(api.settings, db_url)
        post_email(client, mail("late@x", "root@x", "mid@x", minute=2))
        drain(api.settings, db_url)
        assert client.get(email_path("late@x")).json()["thread_id"] == thread
        assert tree(client, thread) == [("root@x", None, 0, False), ("late@x", "root@x", 1, False)]
    check_consistent(conn, tenant.company_id)


def sent(client: httpx.Client, raw: bytes, form: str) -> tuple[bool, int | None]:
    """(duplicate, job id) of one message sent alone or in an mbox."""
    if form == "rfc822":
        answer = post_email(client, raw)
        return answer["duplicate"], (answer["job_ids"] or [None])[0]
    one = post_mbox(client, mbox(raw))["messages"][0]
    return one["duplicate"], one["job_id"]


@pytest.mark.parametrize("form", ["rfc822", "mbox"])
def test_both_forms_apply_one_duplicate_rule_around_a_delete(api: RunningApi, tenant: Any, db_url: str,
                                                             conn: psycopg.Connection[Any], form: str) -> None:
    """One accept for a message alone and in an mbox: stored is a duplicate of the job that stored
    it; deleted (the delete done, or still to run) it is queued again; queued, a duplicate of that job."""
    raw = mail("both@x")
    with client_for(api, tenant.api_key) as client:
        stored_by = post_email(client, raw)["job_ids"][0]
        drain(api.settings, db_url)
        assert sent(client, raw, form) == (True, stored_by)
        assert client.delete(email_path("both@x")).status_code == 202
        duplicate, waiting = sent(client, raw, form)
        assert not duplicate and waiting is not None and waiting > stored_by, "its delete waits: queued again"
        assert sent(client, raw, form) == (True, waiting)
        drain(api.settings, db_url)
        assert client.get(email_path("both@x")).status_code == 200
        assert client.delete(email_path("both@x")).status_code == 202
        drain(api.settings, db_url)
        assert client.get(email_path("both@x")).status_code == 404
        duplicate, again = sent(client, raw, form)
        assert not duplicate and again is not None and again > waiting, "deleted: queued again"
        drain(api.settings, db_url)
        assert client.get(email_path("both@x")).status_code == 200
    check_consistent(conn, tenant.company_id)
