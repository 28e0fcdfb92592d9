"""Threads end to end: JWZ's edge cases through the real API, queue and worker, in many arrival orders."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest

from core.tenants import create_company
from tests.conftest import RunningApi, client_for, drain
from tests.email_helpers import check_consistent, expected_threads, ids_of, post_email, threads_of
from tests.mailfixtures import THREAD_CASES, Mail, ThreadCase, message

CASES = {case.name: case for case in THREAD_CASES}


def orders(case: ThreadCase) -> list[tuple[Mail, ...]]:
    """Every arrival order of a case (its mails are few), the given one first."""
    return list(dict.fromkeys([case.mails, *itertools.permutations(case.mails)]))


def send(api: RunningApi, key: str, mails: tuple[Mail, ...]) -> list[dict[str, Any]]:
    with client_for(api, key) as client:
        return [post_email(client, mail.raw()) for mail in mails]


@pytest.mark.parametrize("name", list(CASES))
def test_every_arrival_order_in_shared_batches(api: RunningApi, conn: psycopg.Connection[Any], db_url: str,
                                               name: str) -> None:
    """Each order in a company of its own, all queued first: batches of 16 hold several orders,
    some split across two batches, and the messages of one batch thread each other."""
    case = CASES[name]
    runs = []
    for i, order in enumerate(orders(case)):
        tenant = create_company(conn, f"{name}-{i}")
        send(api, tenant.api_key, order)
        runs.append((tenant.company_id, order))
    drain(api.settings, db_url)
    for company_id, order in runs:
        assert threads_of(conn, company_id) == expected_threads(case), [m.label for m in order]
        check_consistent(conn, company_id)


@pytest.mark.parametrize("name", list(CASES))
def test_one_message_per_batch_given_and_reversed(api: RunningApi, conn: psycopg.Connection[Any], db_url: str,
                                                  name: str) -> None:
    """Each message in a batch of its own, so every link goes through the stored registry."""
    case = CASES[name]
    for i, order in enumerate((case.mails, tuple(reversed(case.mails)))):
        tenant = create_company(conn, f"{name}-single-{i}")
        with client_for(api, tenant.api_key) as client:
            for mail in order:
                post_email(client, mail.raw())
                drain(api.settings, db_url)
        assert threads_of(conn, tenant.company_id) == expected_threads(case), [m.label for m in order]
        check_consistent(conn, tenant.company_id)


def test_duplicates_are_answered_and_stored_once(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                 db_url: str) -> None:
    first = message(message_id="dup@x", body="One.\n")
    redelivered = message(message_id="dup@x", body="One.\n", extra_headers=[("Received", "from mx2 by mx3")])
    with client_for(api, tenant.api_key) as client:
        queued = post_email(client, first)
        assert queued == {"accepted": 1, "job_ids": queued["job_ids"], "message_id": "dup@x", "duplicate": False}
        again = post_email(client, redelivered)  # queued, not yet stored: the queued job
        assert again == {"accepted": 0, "job_ids": queued["job_ids"], "message_id": "dup@x", "duplicate": True}
        drain(api.settings, db_url)
        stored = post_email(client, first)  # stored: the job that stored it
        assert stored == again
        assert client.get(f"/v1/jobs/{queued['job_ids'][0]}").json()["outcome"].startswith("stored in thread ")
    assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM mail_messages").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM documents WHERE external_id = 'email:dup@x'").fetchone() == (1,)


def test_the_same_id_twice_in_one_batch_and_across_batches_is_stored_once(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any], db_url: str) -> None:
    """Jobs the API never deduplicated (queued straight into the table: an old dead job requeued,
    a restore): the worker stores the message once all the same."""
    raw = message(message_id="twice@x")
    queue = "INSERT INTO ingest_jobs (company_id, external_id, op, raw) VALUES (%s, 'email:twice@x', 'email', %s)"
    for _ in range(2):
        conn.execute(queue, (tenant.company_id, raw))
    drain(api.settings, db_url)
    conn.execute(queue, (tenant.company_id, raw))
    drain(api.settings, db_url)
    outcomes = [r[0] for r in conn.execute("SELECT outcome FROM ingest_jobs ORDER BY id").fetchall()]
    assert outcomes[0].startswith("superseded by job ")
    assert outcomes[1].startswith("stored in thread ")
    assert outcomes[2] == "duplicate: the message is stored already"
    assert conn.execute("SELECT count(*) FROM mail_messages").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM documents").fetchone() == (1,)


def test_tenancy_the_same_message_id_in_two_companies(api: RunningApi, tenant: Any, other_tenant: Any,
                                                       conn: psycopg.Connection[Any], db_url: str) -> None:
    parent, reply = message(message_id="p@x"), message(message_id="r@x", references=["p@x"], in_reply_to="p@x")
    with client_for(api, tenant.api_key) as acme, client_for(api, other_tenant.api_key) as globex:
        assert post_email(acme, parent)["duplicate"] is False
        assert post_email(globex, parent)["duplicate"] is False, "another company's copy is not a duplicate"
        post_email(globex, reply)
        drain(api.settings, db_url)
        assert threads_of(conn, tenant.company_id) == {frozenset({"p@x"})}
        assert threads_of(conn, other_tenant.company_id) == {frozenset({"p@x", "r@x"})}
        mine, theirs = acme.get("/v1/emails/p@x").json(), globex.get("/v1/emails/p@x").json()
        assert mine["thread_id"] != theirs["thread_id"]
        assert acme.get("/v1/emails/r@x").status_code == 404
        assert acme.get(f"/v1/threads/{theirs['thread_id']}").status_code == 404
        assert globex.get(f"/v1/threads/{theirs['thread_id']}").json()["message_count"] == 2


def test_grouping_by_subject_is_off_by_default_and_a_setting(api: RunningApi, conn: psycopg.Connection[Any],
                                                              db_url: str) -> None:
    case = CASES["unrelated-same-subject"]
    for on in (False, True):
        tenant = create_company(conn, f"subjects-{on}")
        send(api, tenant.api_key, case.mails)
        drain(api.settings.model_copy(update={"mail_group_by_subject": on}), db_url)
        expected = {frozenset({"a@x", "b@x"})} if on else expected_threads(case)
        assert threads_of(conn, tenant.company_id) == expected
        check_consistent(conn, tenant.company_id)


def test_ids_of_the_cases_are_what_the_api_answers(api: RunningApi, tenant: Any) -> None:
    case = CASES["missing-ids"]
    answers = send(api, tenant.api_key, case.mails)
    assert [a["message_id"] for a in answers] == [ids_of(case)[m.label] for m in case.mails]
