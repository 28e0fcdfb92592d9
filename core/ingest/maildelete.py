"""Deleting stored mail, in the worker's transaction (``IngestProcessor._apply``; docs/mail.md).

A delete job of a mail document (external_id ``email:<message id>``, queued by
``DELETE /v1/documents/{external_id}`` or ``DELETE /v1/emails/{message_id}``) deletes the message
with its document: its ``mail_messages`` row, the headers and the original. Its id stays in the
registry (``mail_ids``): the thread keeps its shape (the message is a ghost where others name it)
and its merges (threads a message linked stay one), and the message sent again is stored again,
into the same thread. The delete of a message whose document retention dropped deletes it too.

Under the threading locks (``core.ingest.mail``): the mail locks on the deleted ids (taken in the
batch's one sorted pass when it threads new mail too), then their threads ``FOR UPDATE``; the rows
deleted in one statement; each thread recounted from what it holds (one aggregate over its messages,
by its index: :class:`core.ingest.mailplan.Remaining`). A thread left with no message keeps its row,
counted 0 (its ids still name it): ``GET /v1/threads/{id}`` answers 404 until a message joins it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from core.ingest.mail import MAIL_LOCKS_SQL, columns, lock_names, pinned, read_ids, write_plan
from core.ingest.mailplan import MailPlan, Remaining, ThreadWrite

DELETE_MESSAGES_SQL = """
DELETE FROM mail_messages m
USING unnest(%s::bigint[], %s::text[]) AS t(company_id, message_id)
WHERE m.company_id = t.company_id AND m.message_id = t.message_id
  AND m.company_id = ANY(%s::bigint[]) AND m.message_id = ANY(%s::text[])
RETURNING m.company_id, m.message_id, m.thread_id
"""

# per thread: its count and span, and its oldest message with a subject (whether it names another)
REMAINING_SQL = """
SELECT t.company_id, t.id, c.n, c.first_at, c.last_at, o.subject, coalesce(o.unreferenced, false)
FROM unnest(%s::bigint[], %s::bigint[]) AS t(company_id, id)
CROSS JOIN LATERAL (SELECT count(*) AS n, min(m.created_at) AS first_at, max(m.created_at) AS last_at
                    FROM mail_messages m WHERE m.company_id = t.company_id AND m.thread_id = t.id) AS c
LEFT JOIN LATERAL (SELECT m.subject, cardinality(m.refs) = 0 AS unreferenced
                   FROM mail_messages m
                   WHERE m.company_id = t.company_id AND m.thread_id = t.id AND m.subject IS NOT NULL
                   ORDER BY m.created_at, m.message_id LIMIT 1) AS o ON true
"""


def delete_messages(conn: psycopg.Connection[Any], keys: Sequence[tuple[int, str]], group_by_subject: bool,
                    *, locked: bool) -> set[tuple[int, str]]:
    """Delete the stored messages ``keys`` ((company, message id); the ids stay registered) and
    recount their threads; the keys that were stored. ``locked``: their mail locks are held already
    (taken with the batch's threading locks, in one pass)."""
    ids = sorted(set(keys))
    if not ids:
        return set()
    if not locked:
        conn.execute(MAIL_LOCKS_SQL, lock_names((), ids))
    known = read_ids(conn, ids, [])
    rows = conn.execute(DELETE_MESSAGES_SQL, pinned(columns(ids)), prepare=False).fetchall()
    if not rows:
        return set()
    threads = sorted({(int(r[0]), int(r[2])) for r in rows})
    changed = tuple(
        ThreadWrite(company, thread, Remaining(n, first, last, subject, unreferenced).state(
            known.threads[(company, thread)], group_by_subject))
        for company, thread, n, first, last, subject, unreferenced
        in conn.execute(REMAINING_SQL, columns(threads), prepare=False))
    write_plan(conn, MailPlan((), (), changed, (), ()))
    return {(int(r[0]), r[1]) for r in rows}
