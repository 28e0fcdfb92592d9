"""Reading stored mail (``GET /v1/emails/{id}``, ``GET /v1/threads/{id}``): company-scoped index lookups.

A thread is read in one statement (one snapshot): the thread row asked for, or the survivor it
was merged into (one hop: every merge repoints the threads that pointed at those it folds away),
and its messages, which ``core.mail.threads.thread_tree`` turns into the tree (JWZ, ghosts where
a missing message joins branches); its time span is that of its messages' dates (:func:`thread_span`).
Mail rows do not depend on documents: a month of documents dropped by retention leaves its mail
readable here, only out of search.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.db import read_connection
from core.mail.threads import Member, thread_tree

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

EMAIL_SQL = """
SELECT message_id, thread_id, subject, from_addr, to_addrs, cc_addrs, sent_at, in_reply_to, refs, attachments,
       notes, synthetic_id
FROM mail_messages WHERE company_id = %s AND message_id = %s
"""

RAW_SQL = "SELECT raw_deflate FROM mail_messages WHERE company_id = %s AND message_id = %s"

THREAD_SQL = """
WITH asked AS (
    SELECT coalesce(merged_into, id) AS id FROM mail_threads WHERE company_id = %(company)s AND id = %(thread)s
), thread AS (
    SELECT h.id, h.subject, h.message_count
    FROM mail_threads h JOIN asked ON h.company_id = %(company)s AND h.id = asked.id
)
SELECT thread.id, thread.subject, thread.message_count,
       m.message_id, m.in_reply_to, m.refs, m.sent_at, m.subject, m.from_addr
FROM thread LEFT JOIN mail_messages m ON m.company_id = %(company)s AND m.thread_id = thread.id
"""


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def get_email(pool: ConnectionPool, company_id: int, message_id: str) -> dict[str, Any] | None:
    """A stored message's headers as read, or None (not stored, or another company's)."""
    with read_connection(pool) as conn:
        row = conn.execute(EMAIL_SQL, (company_id, message_id), prepare=True).fetchone()
    if row is None:
        return None
    return {"message_id": row[0], "thread_id": int(row[1]), "subject": row[2], "from": row[3], "to": row[4],
            "cc": row[5], "date": _iso(row[6]), "in_reply_to": row[7], "references": row[8], "attachments": row[9],
            "notes": row[10], "synthetic_id": row[11]}


def get_raw(pool: ConnectionPool, company_id: int, message_id: str) -> bytes | None:
    """A stored message's original bytes, or None."""
    with read_connection(pool) as conn:
        row = conn.execute(RAW_SQL, (company_id, message_id), prepare=True).fetchone()
    return None if row is None else zlib.decompress(row[0])


def get_thread(pool: ConnectionPool, company_id: int, thread_id: int) -> dict[str, Any] | None:
    """The thread (or the one it was merged into) as a tree, depth-first, oldest sibling first; or None
    (none of this company's, or one whose messages were all deleted: its row stays, its ids name it)."""
    with read_connection(pool) as conn:
        rows = conn.execute(THREAD_SQL, {"company": company_id, "thread": thread_id}, prepare=True).fetchall()
    members = [Member(r[3], r[4], tuple(r[5]), r[6], r[7], r[8]) for r in rows if r[3] is not None]
    if not members:
        return None
    head = rows[0]
    first_at, last_at = thread_span(members)
    return {"thread_id": int(head[0]), "subject": head[1], "message_count": head[2],
            "participants": participants(members), "first_at": _iso(first_at), "last_at": _iso(last_at),
            "messages": [{"message_id": n.message_id, "parent": n.parent, "depth": n.depth, "ghost": n.ghost,
                          "subject": n.member.subject if n.member else None,
                          "from": n.member.from_ if n.member else None,
                          "date": _iso(n.member.date) if n.member else None} for n in thread_tree(members)]}


def participants(members: list[Member]) -> list[str]:
    """Everyone who wrote in the thread, in the order of their first message (undated ones last) (pure)."""
    dated = sorted(members, key=lambda m: (m.date is None, m.date.timestamp() if m.date else 0.0, m.message_id))
    return list(dict.fromkeys(m.from_ for m in dated if m.from_))


def thread_span(members: list[Member]) -> tuple[datetime | None, datetime | None]:
    """The earliest and the latest Date of the thread's messages, as each message shows it; an undated
    message does not count, and a thread with no dated message has no span: (None, None) (pure).
    Not the thread row's ``first_at``/``last_at``: those count an undated message at its arrival (they
    order threads for subject grouping), which a reader would take for when it was written."""
    dates = [m.date for m in members if m.date is not None]
    return (min(dates), max(dates)) if dates else (None, None)
