"""E-mail through the ingest queue: the worker's mail stage (docs/mail.md). The durable accept (the
API's side: one message or an mbox, through the same code) is ``core.ingest.mailaccept``.

The worker's stage, per batch, inside the batch's transaction (``IngestProcessor._apply``):

1. every message is parsed (``core.mail.parse_message``: pure, never raises);
2. the batch's key locks cover every id the messages name (own, In-Reply-To, References) and,
   when grouping by subject, their subjects: two workers holding messages that share an id are
   serialized there, so they cannot both start a thread for it;
3. ONE registry read (``mail_ids``, index lookups) for all those ids, then the threads they name
   are locked ``FOR UPDATE`` in id order with their counters. A thread found merged away
   meanwhile (by a batch that held other ids of it) sends the stage back to the registry read,
   inside a savepoint, so locks are always taken in order;
4. the pure plan (``core.ingest.mailplan.plan_mail``), then the writes, each one statement over
   the whole batch: new threads, counters, merges (the smaller threads' registry and message rows
   rewritten, their thread rows kept with ``merged_into``), new ids, the messages (COPY), and the
   documents through the worker's own path.

A parse problem is never a failed job: the parser gives what it can read, with notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from isal import isal_zlib
from psycopg.types.json import Jsonb

from core.ingest.mailplan import MailIn, MailPlan, ThreadState, plan_mail
from core.mail.message import ParsedMessage, normalize_subject, parse_message
from core.mail.text import storable

if TYPE_CHECKING:
    from core.ingest.worker import Job

EMAIL_PREFIX = "email:"
# The original is deflated by ISA-L (``isal``): a standard zlib stream (``zlib.decompress`` reads it, and
# every row deflated before), 3 % larger than zlib's level 6 on real mail for a sixth of its CPU (about
# 20 against 130 microseconds for a 7 kB message; zlib's level 1 is still 100).
RAW_LEVEL = 2  # ISA-L's levels are 0 to 3
LOCK_TRIES = 20  # registry re-reads when threads keep being merged under the batch (each one means progress)


def email_external_id(message_id: str) -> str:
    return EMAIL_PREFIX + message_id


def message_id_from(external_id: str) -> str:
    return external_id.removeprefix(EMAIL_PREFIX)


# -- the worker's stage ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Letter:
    """One e-mail job of a batch, parsed."""

    job: Job
    parsed: ParsedMessage


def read_letter(job: Job) -> Letter:
    """The job's message, parsed. The id is the one the API answered (its job's key); a parser
    failure (a bug: it never raises by contract) still stores the bytes, with a note."""
    message_id = message_id_from(job.external_id)
    raw = job.raw or b""
    try:
        parsed = parse_message(raw)
    except Exception as exc:  # whatever the bytes do, the message is kept
        text = storable(raw.decode("utf-8", "replace"))
        parsed = ParsedMessage(message_id=message_id, synthetic_id=False, subject=None, from_=None, to=(), cc=(),
                               date=None, in_reply_to=None, references=(), body_text=text, index_text=text,
                               attachments=(), notes=(storable(f"unreadable: {type(exc).__name__}: {exc}")[:500],))
    if parsed.message_id != message_id:
        parsed = replace(parsed, message_id=message_id)
    return Letter(job, parsed)


def written_at(date: datetime | None, now: datetime) -> datetime:
    """When a message was written, as its document's ``created_at`` (partitions, retention, time
    filters): its Date, or ``now`` when it has none or one in the future (pure)."""
    return now if date is None or date > now else date


def subject_key(parsed: ParsedMessage, group_by_subject: bool) -> str:
    """The key a message groups by: only with grouping on, and only for a message naming no other."""
    if not group_by_subject or parsed.references:
        return ""
    return normalize_subject(parsed.subject)


# The stage's arrays travel in binary (``%b``): psycopg writes a text array element by element in
# Python, escaping each one, and PostgreSQL parses it back; a binary one is packed, and read as is.
# Every read of the mail tables by key is one primary-key probe per key, whatever the planner knows:
# a LATERAL subquery with LIMIT 1 cannot be flattened into a hash join over the whole table (what a
# plain JOIN with unnest becomes on a young table), and these statements are planned at each call
# (``prepare=False``): a plan cached while the tables were empty probes mail_messages through its
# thread index by company alone, reading the company's whole mail per key (tests/test_email_cost.py).
STORED_SQL = """
SELECT t.company_id, t.message_id
FROM unnest(%b::bigint[], %b::text[]) AS t(company_id, message_id)
CROSS JOIN LATERAL (SELECT FROM mail_messages m
                    WHERE m.company_id = t.company_id AND m.message_id = t.message_id LIMIT 1) m
"""


def stored_messages(conn: psycopg.Connection[Any], letters: Sequence[Letter]) -> set[tuple[int, str]]:
    """Which of the letters' messages are stored already (their jobs' key locks are held: no other
    batch can be storing one of them)."""
    rows = conn.execute(STORED_SQL, columns([(x.job.company_id, x.parsed.message_id) for x in letters]),
                        prepare=False)
    return {(r[0], r[1]) for r in rows}


def lock_names(messages: Sequence[MailIn], also: Sequence[tuple[int, str]] = ()) -> tuple[list[int], list[str]]:
    """(company ids, names) the threading locks: every id the messages name, and each subject they
    group by (``subject <key>``: ids hold no whitespace, so no id is named so), and the (company,
    id) pairs ``also`` (the batch's deleted messages: every mail lock of a batch in one sorted pass)."""
    names = sorted({(m.company_id, name) for m in messages for name in (m.message_id, *m.references)}
                   | {(m.company_id, "subject " + m.subject_key) for m in messages if m.subject_key} | set(also))
    return [c for c, _ in names], [n for _, n in names]


# One bigint per (company, name), always negative: the job locks use positive bigints (job ids), the
# document keys the two-int4 form, so these meet neither. Taken in one sorted pass: no deadlock.
MAIL_LOCKS_SQL = """
SELECT count(pg_advisory_xact_lock(k)) FROM (
    SELECT DISTINCT hashtextextended(t.company_id::text || ':' || t.name, 0) | (1::bigint << 63) AS k
    FROM unnest(%b::bigint[], %b::text[]) AS t(company_id, name)
    ORDER BY 1
) s
"""


REGISTRY_SQL = """
SELECT t.company_id, t.message_id, i.thread_id, m.stored IS NOT NULL
FROM unnest(%b::bigint[], %b::text[]) AS t(company_id, message_id)
CROSS JOIN LATERAL (SELECT thread_id FROM mail_ids i
                    WHERE i.company_id = t.company_id AND i.message_id = t.message_id LIMIT 1) i
LEFT JOIN LATERAL (SELECT true AS stored FROM mail_messages m
                   WHERE m.company_id = t.company_id AND m.message_id = t.message_id LIMIT 1) m ON true
"""

SUBJECT_THREADS_SQL = """
SELECT t.company_id, t.subject_key, h.id
FROM unnest(%b::bigint[], %b::text[]) AS t(company_id, subject_key)
CROSS JOIN LATERAL (
    SELECT id FROM mail_threads
    WHERE company_id = t.company_id AND subject_key = t.subject_key AND merged_into IS NULL
    ORDER BY last_at DESC LIMIT 1
) h
"""

# locked in the order given (the caller sorts): the LATERAL probe runs once per pair, in that order
LOCK_THREADS_SQL = """
SELECT h.company_id, h.id, h.merged_into, h.message_count, h.first_at, h.last_at, h.subject, h.subject_key
FROM unnest(%b::bigint[], %b::bigint[]) AS t(company_id, id)
CROSS JOIN LATERAL (SELECT * FROM mail_threads h WHERE h.company_id = t.company_id AND h.id = t.id FOR UPDATE) h
"""

NEW_THREAD_IDS_SQL = "SELECT nextval(pg_get_serial_sequence('mail_threads', 'id')) FROM generate_series(1, %s)"

INSERT_THREADS_SQL = """
INSERT INTO mail_threads (company_id, id, subject, subject_key, message_count, first_at, last_at)
SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::int[], %b::timestamptz[],
                     %b::timestamptz[])
"""

# The updates join the rows to change with unnest; the trailing ``= ANY`` pins (the same company
# and thread ids again: ``pinned``) keep the target's scan on its index whatever the statistics say.
UPDATE_THREADS_SQL = """
UPDATE mail_threads h SET subject = t.subject, subject_key = t.subject_key, message_count = t.message_count,
       first_at = t.first_at, last_at = t.last_at
FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::int[], %b::timestamptz[], %b::timestamptz[])
     AS t(company_id, id, subject, subject_key, message_count, first_at, last_at)
WHERE h.company_id = t.company_id AND h.id = t.id AND h.company_id = ANY(%b::bigint[]) AND h.id = ANY(%b::bigint[])
"""


def _merge_sql(table: str, assign: str, column: str) -> str:
    return (f"UPDATE {table} x SET {assign}"
            " FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]) AS t(company_id, id, into_id)"
            f" WHERE x.company_id = t.company_id AND x.{column} = t.id"
            f" AND x.company_id = ANY(%b::bigint[]) AND x.{column} = ANY(%b::bigint[])")


# a merge, in this order: threads that pointed at the ones folded away point at the survivor (reads
# take one hop), the folded threads themselves, then their ids and messages (the smaller side)
MERGE_SQL = (
    _merge_sql("mail_threads", "merged_into = t.into_id", "merged_into"),
    _merge_sql("mail_threads", "merged_into = t.into_id, message_count = 0", "id"),
    _merge_sql("mail_ids", "thread_id = t.into_id", "thread_id"),
    _merge_sql("mail_messages", "thread_id = t.into_id", "thread_id"),
)

REGISTER_SQL = """
INSERT INTO mail_ids (company_id, message_id, thread_id)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::bigint[])
"""

COPY_MESSAGES_SQL = (
    "COPY mail_messages (company_id, message_id, thread_id, synthetic_id, subject, from_addr, to_addrs, cc_addrs,"
    " sent_at, in_reply_to, refs, attachments, notes, created_at, raw_size, raw_deflate, job_id)"
    " FROM STDIN WITH (FORMAT BINARY)"
)
MESSAGE_TYPES = ["int8", "text", "int8", "bool", "text", "text", "text[]", "text[]", "timestamptz", "text", "text[]",
                 "jsonb", "text[]", "timestamptz", "int4", "bytea", "int8"]


class _ThreadsMoved(Exception):
    """A thread the batch read was merged away before it was locked: read the registry again."""


@dataclass(frozen=True)
class Known:
    registry: dict[tuple[int, str], int]
    stored: set[tuple[int, str]]
    threads: dict[tuple[int, int], ThreadState]
    by_subject: dict[tuple[int, str], int]


def read_known(conn: psycopg.Connection[Any], messages: Sequence[MailIn]) -> Known:
    """The registry rows of every id the messages name, and their threads, locked and stable."""
    ids = sorted({(m.company_id, name) for m in messages for name in (m.message_id, *m.references)})
    subjects = sorted({(m.company_id, m.subject_key) for m in messages if m.subject_key})
    return read_ids(conn, ids, subjects)


def read_ids(conn: psycopg.Connection[Any], ids: list[tuple[int, str]], subjects: list[tuple[int, str]]) -> Known:
    """The registry rows of ``ids`` (sorted (company, id) pairs) and of the newest thread of each
    subject key, and their threads, locked ``FOR UPDATE`` in order and stable (none merged away)."""
    for _ in range(LOCK_TRIES):
        try:
            with conn.transaction():
                return _read_and_lock(conn, ids, subjects)
        except _ThreadsMoved:
            continue
    raise RuntimeError(f"threads kept merging under this batch ({LOCK_TRIES} tries); the batch will be retried")


def _read_and_lock(conn: psycopg.Connection[Any], ids: list[tuple[int, str]],
                   subjects: list[tuple[int, str]]) -> Known:
    registry: dict[tuple[int, str], int] = {}
    stored: set[tuple[int, str]] = set()
    for company, name, thread, is_stored in conn.execute(REGISTRY_SQL, columns(ids), prepare=False):
        registry[(company, name)] = thread
        if is_stored:
            stored.add((company, name))
    by_subject: dict[tuple[int, str], int] = {}
    if subjects:
        by_subject = {(r[0], r[1]): r[2] for r in conn.execute(SUBJECT_THREADS_SQL, columns(subjects))}
    wanted = sorted({(c, t) for (c, _), t in registry.items()} | {(c, t) for (c, _), t in by_subject.items()})
    threads: dict[tuple[int, int], ThreadState] = {}
    if wanted:
        for row in conn.execute(LOCK_THREADS_SQL, columns(wanted)):
            if row[2] is not None:
                raise _ThreadsMoved
            threads[(row[0], row[1])] = ThreadState(row[3], row[4], row[5], row[6], row[7])
    if len(threads) != len(wanted):
        raise RuntimeError(f"mail ids name threads that do not exist: {sorted(set(wanted) - set(threads))[:5]}")
    return Known(registry, stored, threads, by_subject)


def pinned(args: tuple[list[Any], ...]) -> tuple[list[Any], ...]:
    """The arguments of an update joined with ``unnest``, then its first two columns again (the ``= ANY`` pins)."""
    return (*args, args[0], args[1])


def columns(rows: Sequence[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Rows as one list per column (the arguments of an ``unnest``)."""
    if not rows:
        return ()
    return tuple(list(column) for column in zip(*rows, strict=True))


def thread_letters(conn: psycopg.Connection[Any], letters: Sequence[Letter], now: datetime,
                   group_by_subject: bool, lock_also: Sequence[tuple[int, str]] = ()) -> list[int | None]:
    """Thread and store ``letters`` (none stored already: ``stored_messages``); per letter, its
    thread. Locks every id they name first, and the (company, id) pairs ``lock_also`` in the same
    pass: what overlaps with another batch waits for its commit, so the rows are built (and the
    originals deflated) before."""
    messages = [MailIn(letter.job.company_id, letter.parsed.message_id, letter.parsed.references,
                       written_at(letter.parsed.date, now), letter.parsed.subject,
                       subject_key(letter.parsed, group_by_subject)) for letter in letters]
    rows = [message_row(letter, message) for letter, message in zip(letters, messages, strict=True)]
    conn.execute(MAIL_LOCKS_SQL, lock_names(messages, lock_also))
    known = read_known(conn, messages)
    plan = plan_mail(messages, known.registry, known.stored, known.threads, known.by_subject, group_by_subject)
    if plan.created:
        ids = sorted(int(r[0]) for r in conn.execute(NEW_THREAD_IDS_SQL, (len(plan.created),)))
        plan = plan.numbered(ids)
    write_plan(conn, plan)
    store_messages(conn, rows, plan.thread_of)
    return list(plan.thread_of)


def _thread_rows(writes: Sequence[Any]) -> tuple[list[Any], ...]:
    return columns([(w.company_id, w.thread_id, w.state.subject, w.state.subject_key, w.state.message_count,
                     w.state.first_at, w.state.last_at) for w in writes])


def write_plan(conn: psycopg.Connection[Any], plan: MailPlan) -> None:
    if plan.created:
        conn.execute(INSERT_THREADS_SQL, _thread_rows(plan.created))
    if plan.changed:
        conn.execute(UPDATE_THREADS_SQL, pinned(_thread_rows(plan.changed)))
    if plan.merged:
        merges = pinned(columns([(m.company_id, m.thread_id, m.into) for m in plan.merged]))
        for statement in MERGE_SQL:
            conn.execute(statement, merges)
    if plan.registered:
        conn.execute(REGISTER_SQL, columns(plan.registered))


THREAD_COLUMN = 2  # of a message row: filled in once the plan says the thread


def message_row(letter: Letter, message: MailIn) -> list[Any]:
    """The ``mail_messages`` row of a letter (``COPY_MESSAGES_SQL``'s columns), its thread not known yet."""
    p, raw = letter.parsed, letter.job.raw or b""
    attachments = [{"filename": a.filename, "content_type": a.content_type, "size": a.size, "indexed": a.indexed}
                   for a in p.attachments]
    return [message.company_id, p.message_id, None, p.synthetic_id, p.subject, p.from_, list(p.to), list(p.cc),
            p.date, p.in_reply_to, list(p.references), Jsonb(attachments), list(p.notes), message.at, len(raw),
            deflate_original(raw), letter.job.id]


def deflate_original(raw: bytes) -> bytes:
    """The bytes ``mail_messages.raw_deflate`` holds: ``raw`` as a zlib stream (``zlib.decompress`` gives it back)."""
    return isal_zlib.compress(raw, RAW_LEVEL)


def store_messages(conn: psycopg.Connection[Any], rows: Sequence[list[Any]], threads: Sequence[int | None]) -> None:
    """COPY the message rows, each in its thread (``None``: stored already, skipped)."""
    with conn.cursor().copy(COPY_MESSAGES_SQL) as copy:
        copy.set_types(MESSAGE_TYPES)
        for row, thread in zip(rows, threads, strict=True):
            if thread is not None:
                row[THREAD_COLUMN] = thread
                copy.write_row(row)


def document_payload(letter: Letter, now: datetime) -> dict[str, Any]:
    """The document a stored message becomes: its index text (no quotes, no signature), titled by its subject."""
    p = letter.parsed
    at = written_at(p.date, now)
    metadata: dict[str, Any] = {"type": "email"}
    if p.from_:
        metadata["from"] = p.from_
    return {"text": p.index_text, "title": p.subject[:1000] if p.subject else None, "metadata": metadata,
            "created_at": at.isoformat()}
