"""Helpers of the e-mail tests: send raw mail through the real API, read threads back from the database."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from core.mail.mbox import mbox_entry
from core.mail.message import message_id_of
from tests.mailfixtures import ThreadCase

RFC822 = {"Content-Type": "message/rfc822"}
MBOX = {"Content-Type": "application/mbox"}


def post_email(client: httpx.Client, raw: bytes) -> dict[str, Any]:
    return posted(client, raw, RFC822)


def mbox(*raws: bytes) -> bytes:
    entries = [mbox_entry(raw) for raw in raws]
    assert all(entries), "test mail ends in a newline"
    return b"".join(e for e in entries if e)


def post_mbox(client: httpx.Client, body: bytes) -> dict[str, Any]:
    return posted(client, body, MBOX)


def posted(client: httpx.Client, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/v1/emails", content=body, headers=headers)
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
    """The mail tables agree: every id and message in a live thread, every count right, a live thread
    without messages only when they were deleted, every merged thread empty and pointing at a live
    one (one hop)."""
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
    # a live thread without messages is one whose messages were all deleted: its ids still name it
    emptied = conn.execute(
        "SELECT h.id, h.subject, h.subject_key, (SELECT count(*) FROM mail_ids i WHERE i.company_id = h.company_id"
        " AND i.thread_id = h.id) FROM mail_threads h WHERE h.company_id = %s AND h.merged_into IS NULL"
        " AND h.message_count = 0", (company_id,)).fetchall()
    assert all(r[1] is None and r[2] == "" and r[3] > 0 for r in emptied), emptied
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


def synthetic_list(threads: int, seed: int, cross_links: int = 0) -> tuple[list[bytes], set[frozenset[str]]]:
    """A mailing list in a scrambled arrival order: ``threads`` trees of realistic sizes (most short,
    a few long), replies naming their whole ancestry (some only their parent, as clients that cut
    References), plus ``cross_links`` replies that also name a message of another thread (merges).
    Returns the raw messages and the threads they must end in (connected ids, by union-find)."""
    import random

    from tests.mailfixtures import message

    rng = random.Random(seed)
    parent: dict[str, str] = {}
    union: dict[str, str] = {}

    def find(x: str) -> str:
        while union.setdefault(x, x) != x:
            x = union[x]
        return x

    mails: list[tuple[str, tuple[str, ...]]] = []
    for t in range(threads):
        members: list[str] = []
        for i in range(rng.choice([1, 1, 2, 2, 3, 4, 6, 9, 14, 40])):
            mid = f"t{t}m{i}@list.example"
            refs: tuple[str, ...] = ()
            if members:
                up = rng.choice(members)
                chain = [up]
                while chain[-1] in parent:
                    chain.append(parent[chain[-1]])
                parent[mid] = up
                refs = tuple(reversed(chain)) if rng.random() < 0.8 else (up,)
            members.append(mid)
            mails.append((mid, refs))
    for _ in range(cross_links):
        i, j = rng.randrange(len(mails)), rng.randrange(len(mails))
        mid, refs = mails[i]
        mails[i] = (mid, (*refs, mails[j][0])) if mails[j][0] != mid else (mid, refs)
    for mid, refs in mails:
        for ref in refs:
            union[find(ref)] = find(mid)
    groups: dict[str, set[str]] = {}
    stored = {mid for mid, _ in mails}
    for mid in stored:
        groups.setdefault(find(mid), set()).add(mid)
    rng.shuffle(mails)
    raws = [message(message_id=mid, references=refs, in_reply_to=refs[-1] if refs else None, subject="list",
                    body=f"Message {mid} about list things.\n") for mid, refs in mails]
    return raws, {frozenset(g) for g in groups.values()}
