"""Accepting raw messages (``POST /v1/emails``, one message or an mbox; the signed webhooks): one
transaction, all or nothing.

One message is a batch of one (:func:`accept_email`), so both forms take the same locks and apply
the same duplicate rule, in four statements whatever the count: the company's accept locks on every
Message-ID of the body (in one order: two requests sharing ids cannot deadlock, and a message sent
at once alone and in an mbox is queued once), one read of those ids stored or queued, the pure plan
(:func:`plan_emails`: a duplicate of stored mail, of queued mail or of an earlier message of the
body is answered with that job), one insert of the new jobs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from core.ingest.accept import NOTIFY_CHANNEL
from core.ingest.fair import INTERACTIVE, Lane
from core.ingest.mail import email_external_id


@dataclass(frozen=True)
class EmailAccepted:
    """The answer for one message: its new job, or (a ``duplicate``) the job of the company's copy."""

    job_id: int | None  # None: stored by a job that no longer exists
    duplicate: bool


@dataclass(frozen=True)
class Known:
    """A Message-ID the company has: stored (by ``job_id``, None when that job is gone) or queued."""

    job_id: int | None


@dataclass(frozen=True)
class Planned:
    """One message of the body: queued (not a ``duplicate``), or answered with the ``job_id`` of the
    company's copy, or with the new job of the body's message number ``same_as`` (0-based)."""

    duplicate: bool
    job_id: int | None = None
    same_as: int | None = None


def plan_emails(message_ids: Sequence[str], known: Mapping[str, Known]) -> list[Planned]:
    """What to do with each message of a body, in body order (pure): a Message-ID the company has is
    a duplicate of its job, one met earlier in the body a duplicate of that message, the rest queued."""
    first: dict[str, int] = {}
    plan = []
    for index, message_id in enumerate(message_ids):
        if message_id in known:
            plan.append(Planned(True, job_id=known[message_id].job_id))
        elif message_id in first:
            plan.append(Planned(True, same_as=first[message_id]))
        else:
            first[message_id] = index
            plan.append(Planned(False))
    return plan


LOCK_ALL_SQL = """
SELECT count(pg_advisory_xact_lock(%(company)s::int, k))
FROM (SELECT DISTINCT hashtext('accept:' || e) AS k FROM unnest(%(external_ids)s::text[]) AS e ORDER BY k) AS keys
"""

# One primary-key probe per id, whatever the planner knows: LATERAL ... LIMIT 1 cannot become a hash
# join over the table, and the statement is planned at each call (``prepare=False``): a plan cached
# while mail_messages was empty reads the company's whole mail through its thread index per call.
# The newest job of the key still to run decides first: an e-mail job is the copy queued; a delete
# (``DELETE /v1/emails/{id}``) means the stored copy is on its way out, so the message is queued
# again (the newest word wins, as for documents). Then the copy stored. A job done is no copy: its
# message is stored, or was deleted, or never was (superseded by a delete).
KNOWN_EMAILS_SQL = """
SELECT t.message_id, m.job_id, m.stored IS NOT NULL, j.id, j.op
FROM unnest(%(message_ids)s::text[], %(external_ids)s::text[]) AS t(message_id, external_id)
LEFT JOIN LATERAL (SELECT true AS stored, job_id FROM mail_messages
                   WHERE company_id = %(company)s AND message_id = t.message_id LIMIT 1) AS m ON true
LEFT JOIN LATERAL (SELECT id, op FROM ingest_jobs
                   WHERE company_id = %(company)s AND external_id = t.external_id AND status IN ('queued', 'failed')
                   ORDER BY id DESC LIMIT 1) AS j ON true
WHERE j.op = 'email' OR (m.stored AND j.id IS NULL)
"""

# the bytea arrays are sent in binary (``%b``): as text, every raw message would be hex-escaped by
# the client and parsed back by the server (twice its size, both ways CPU)
INSERT_EMAIL_JOBS_SQL = """
INSERT INTO ingest_jobs (company_id, external_id, op, content_hash, raw, source, priority, due_at)
SELECT %s, t.external_id, 'email', t.content_hash, t.raw, %s, %s, now() + make_interval(secs => %s)
FROM unnest(%s::text[], %b::bytea[], %b::bytea[]) WITH ORDINALITY AS t(external_id, content_hash, raw, ord)
ORDER BY t.ord
RETURNING id
"""


def read_known(conn: psycopg.Connection[Any], company_id: int, message_ids: Sequence[str]) -> dict[str, Known]:
    """The ids among ``message_ids`` this company has queued (its e-mail job still to run) or stored
    (the job that stored it; not when a delete of it is still to run)."""
    distinct = sorted(set(message_ids))
    rows = conn.execute(KNOWN_EMAILS_SQL, {"company": company_id, "message_ids": distinct,
                                           "external_ids": [email_external_id(m) for m in distinct]},
                        prepare=False).fetchall()
    return {r[0]: Known(int(r[3])) if r[4] == "email" else Known(None if r[1] is None else int(r[1])) for r in rows}


def queued_by(conn: psycopg.Connection[Any], company_id: int,
              messages: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The (message_id, raw) of ``messages`` that ``accept_emails`` would queue now: not those the
    company has stored or queued, nor a body's repeats of an id (what the document quotas count)."""
    plan = plan_emails([m for m, _ in messages], read_known(conn, company_id, [m for m, _ in messages]))
    return [message for message, planned in zip(messages, plan, strict=True) if not planned.duplicate]


def accept_emails(conn: psycopg.Connection[Any], company_id: int, messages: Sequence[tuple[str, bytes]],
                  source: str, lane: Lane = INTERACTIVE) -> list[EmailAccepted]:
    """Queue the (message_id, raw) ``messages`` durably in one transaction (in ``lane``:
    ``core.ingest.fair``), each unless the company has
    it stored or queued already or an earlier one of ``messages`` has its id; the answer per message."""
    ids = [message_id for message_id, _ in messages]
    with conn.transaction():
        conn.execute(LOCK_ALL_SQL, {"company": company_id, "external_ids": sorted({email_external_id(m) for m in ids})})
        plan = plan_emails(ids, read_known(conn, company_id, ids))
        fresh = [i for i, planned in enumerate(plan) if not planned.duplicate]
        new_ids: list[int] = []
        if fresh:
            rows = conn.execute(INSERT_EMAIL_JOBS_SQL, (
                company_id, source, lane.code, lane.delay_seconds, [email_external_id(ids[i]) for i in fresh],
                [hashlib.sha256(messages[i][1]).digest() for i in fresh], [messages[i][1] for i in fresh])).fetchall()
            new_ids = [int(r[0]) for r in rows]
            conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    queued = dict(zip(fresh, new_ids, strict=True))
    return [EmailAccepted(queued[i], False) if not p.duplicate
            else EmailAccepted(queued[p.same_as] if p.same_as is not None else p.job_id, True)
            for i, p in enumerate(plan)]


def accept_email(conn: psycopg.Connection[Any], company_id: int, message_id: str, raw: bytes,
                 source: str, lane: Lane = INTERACTIVE) -> EmailAccepted:
    """Queue one message durably unless the company has it stored or queued already: a batch of one."""
    return accept_emails(conn, company_id, [(message_id, raw)], source, lane)[0]
