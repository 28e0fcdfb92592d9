"""Helpers of the e-mail tests: send raw mail through the real API, read threads back from the database."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from core.mail.message import message_id_of
from tests.mailfixtures import ThreadCase

RFC822 = {"Content-Type": "message/rfc822"}


def post_email(client: httpx.Client, raw: bytes) -> dict[str, Any]:
    response = client.post("/v1/emails", content=raw, headers=RFC822)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def ids_of(case: ThreadCase) -> dict[str, str]:
    """Each label of a case → the message id it is stored under (a synthetic one for a mail without one)."""
    return {mail.label: message_id_of(mail.raw())[0] for mail in case.mails}


def expected_threads(case: ThreadCase) -> set[frozenset[str]]:
    ids = ids_of(case)
    return {frozenset(ids[label] for label in thread) for thread in case.threads}


def threads_of(conn: psycopg.Connection[Any], company_id: int) -> set[frozenset[str]]:
    """The company's stored messages, grouped by the thread they are in now."""
    groups: dict[int, set[str]] = {}
    for message_id, thread_id in conn.execute(
            "SELECT message_id, thread_id FROM mail_messages WHERE company_id = %s", (company_id,)).fetchall():
        groups.setdefault(thread_id, set()).add(message_id)
    return {frozenset(g) for g in groups.values()}


def check_consistent(conn: psycopg.Connection[Any], company_id: int) -> None:
    """The mail tables agree: every id and message in a live thread, every count right, every
    merged thread empty and pointing at a live one (one hop)."""
    bad_ids = conn.execute(
        "SELECT count(*) FROM mail_ids i JOIN mail_threads h ON h.company_id = i.company_id AND h.id = i.thread_id"
        " WHERE i.company_id = %s AND h.merged_into IS NOT NULL", (company_id,)).fetchone()
    assert bad_ids == (0,), "registry rows point at merged threads"
    orphans = conn.execute(
        "SELECT count(*) FROM mail_ids i WHERE i.company_id = %s AND NOT EXISTS"
        " (SELECT 1 FROM mail_threads h WHERE h.company_id = i.company_id AND h.id = i.thread_id)",
        (company_id,)).fetchone()
    assert orphans == (0,), "registry rows point at no thread"
    counts = conn.execute(
        "SELECT h.id, h.message_count, (SELECT count(*) FROM mail_messages m WHERE m.company_id = h.company_id"
        " AND m.thread_id = h.id) FROM mail_threads h WHERE h.company_id = %s AND h.merged_into IS NULL",
        (company_id,)).fetchall()
    assert all(r[1] == r[2] for r in counts), counts
    assert all(r[1] > 0 for r in counts), "a live thread without messages"
    chains = conn.execute(
        "SELECT count(*) FROM mail_threads h"
        " JOIN mail_threads s ON s.company_id = h.company_id AND s.id = h.merged_into"
        " WHERE h.company_id = %s AND s.merged_into IS NOT NULL", (company_id,)).fetchone()
    assert chains == (0,), "a merged thread points at another merged thread"
    every_message_registered = conn.execute(
        "SELECT count(*) FROM mail_messages m LEFT JOIN mail_ids i ON i.company_id = m.company_id"
        " AND i.message_id = m.message_id WHERE m.company_id = %s AND i.thread_id IS DISTINCT FROM m.thread_id",
        (company_id,)).fetchone()
    assert every_message_registered == (0,)
