"""What threading a message costs the database, counted by PostgreSQL itself (rows read and
rewritten in the transaction, ``pg_stat_get_xact_*``): index probes for the ids a batch names, not a
scan of the company's mail, and a merge that rewrites the smaller thread only. Asserted on a
company that already holds thousands of messages, with statements the connections prepared while
the tables were empty (the plans a fresh deployment caches)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from pgvector.psycopg import register_vector

from core.config import Settings
from core.embed import make_embedder
from core.ingest.mailaccept import accept_email
from core.ingest.worker import IngestProcessor
from core.mail.message import message_id_of
from tests.email_helpers import check_consistent, threads_of
from tests.mailfixtures import message

MAIL_RELATIONS = ("mail_ids", "mail_threads", "mail_messages")
SEEDED = 3000  # about so many messages already stored: what a scan would read
BIG, SMALL = 40, 3  # the two seeded threads a new message joins

COUNTERS_SQL = """
SELECT c.relname, c.relkind, pg_stat_get_xact_numscans(c.oid), pg_stat_get_xact_tuples_returned(c.oid),
       pg_stat_get_xact_tuples_updated(c.oid)
FROM pg_class c
WHERE c.oid IN (SELECT unnest(%(tables)s::regclass[])
                UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%(tables)s::regclass[]))
"""

SEED_SQL = (
    # threads base+1 .. base+last hold BIG messages each, the last one SMALL: ids s<n>@seed
    """INSERT INTO mail_threads (company_id, id, message_count, first_at, last_at)
       SELECT %(company)s, %(base)s + t, CASE WHEN t = %(last)s THEN %(small)s ELSE %(big)s END, %(at)s, %(at)s
       FROM generate_series(1, %(last)s) t""",
    """INSERT INTO mail_ids (company_id, message_id, thread_id)
       SELECT %(company)s, 's' || n || '@seed', %(base)s + n / %(big)s + 1 FROM generate_series(0, %(count)s - 1) n""",
    """INSERT INTO mail_messages (company_id, message_id, thread_id, synthetic_id, to_addrs, cc_addrs, refs,
                                  attachments, notes, created_at, raw_size, raw_deflate)
       SELECT %(company)s, 's' || n || '@seed', %(base)s + n / %(big)s + 1, false, '{}', '{}', '{}', '[]', '{}',
              %(at)s, 0, '' FROM generate_series(0, %(count)s - 1) n""",
    "SELECT setval(pg_get_serial_sequence('mail_threads', 'id'), %(base)s + %(last)s)",
)

def counters(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(relation, kind) → (scans, rows read, rows updated) in the current transaction: a table's
    scans are sequential scans, an index's are probes."""
    rows = conn.execute(COUNTERS_SQL, {"tables": list(MAIL_RELATIONS)}).fetchall()
    return {(r[0], "table" if r[1] == "r" else "index"): (r[2], r[3], r[4]) for r in rows}


def spent(before: dict[tuple[str, str], tuple[int, int, int]],
          after: dict[tuple[str, str], tuple[int, int, int]]) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {key: (a[0] - before[key][0], a[1] - before[key][1], a[2] - before[key][2]) for key, a in after.items()}


def seed(conn: psycopg.Connection[Any], company_id: int) -> tuple[list[str], list[str]]:
    """SEEDED stored messages in threads of BIG, the last thread of SMALL: the ids of the last two
    threads (a big one, the small one)."""
    base = conn.execute("SELECT coalesce(max(id), 0) FROM mail_threads").fetchone()[0]  # type: ignore[index]
    last = SEEDED // BIG
    args = {"company": company_id, "base": base, "last": last, "count": (last - 1) * BIG + SMALL, "big": BIG,
            "small": SMALL, "at": datetime(2024, 1, 1, tzinfo=UTC)}
    for statement in SEED_SQL:
        conn.execute(statement, args)
    return ([f"s{n}@seed" for n in range((last - 2) * BIG, (last - 1) * BIG)],
            [f"s{n}@seed" for n in range((last - 1) * BIG, (last - 1) * BIG + SMALL)])


@pytest.fixture
def worker_conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url) as connection:
        register_vector(connection)
        yield connection


def queue(conn: psycopg.Connection[Any], company_id: int, raws: list[bytes]) -> None:
    for raw in raws:
        accept_email(conn, company_id, message_id_of(raw)[0], raw, "api")


def test_threading_reads_the_ids_named_and_a_merge_rewrites_the_smaller_thread(
        settings: Settings, conn: psycopg.Connection[Any], worker_conn: psycopg.Connection[Any], tenant: Any) -> None:
    company = tenant.company_id
    processor = IngestProcessor(settings.model_copy(update={"worker_batch_size": 1}), make_embedder(settings))
    # the worker's statements run (and are prepared) while the mail tables are empty
    queue(conn, company, [message(message_id=f"w{i}@warm", subject=f"warm {i}") for i in range(12)])
    while processor.run_batch(worker_conn).claimed:
        pass
    big_ids, small_ids = seed(conn, company)
    batch = [
        # names the big thread's root and last message, and the small thread's last: the small one folds into the big
        message(message_id="join@new", subject="Re: both", in_reply_to=small_ids[-1],
                references=(big_ids[0], big_ids[-1], small_ids[-1])),
        message(message_id="reply@new", subject="Re: big", in_reply_to=big_ids[5], references=(big_ids[0], big_ids[5])),
        message(message_id="alone@new", subject="a new thread", references=("ghost@nowhere",)),
    ]
    queue(conn, company, batch)
    processor = IngestProcessor(settings.model_copy(update={"worker_batch_size": 16}), make_embedder(settings))

    worker_conn.execute("SELECT 1")  # the batch runs inside this transaction: its counters stay readable
    before = counters(worker_conn)
    result = processor.run_batch(worker_conn)
    cost = spent(before, counters(worker_conn))
    worker_conn.commit()

    assert (result.claimed, result.done, result.failed) == (3, 3, 0)
    assert {key: c[0] for key, c in cost.items() if key[1] == "table" and c[0]} == {}, "a sequential scan"
    named = 4 + 3 + 2  # the ids the three messages name (own, References, In-Reply-To)
    read = sum(c[1] for key, c in cost.items() if key[1] == "index")
    assert read <= 4 * named, cost  # a few rows per id named, not the company's 3,000 messages
    # the merge moved the small thread's ids and messages only; the big thread's rows were not touched
    assert cost[("mail_ids", "table")][2] == SMALL
    assert cost[("mail_messages", "table")][2] == SMALL
    threads = threads_of(conn, company)
    assert frozenset({*big_ids, *small_ids, "join@new", "reply@new"}) in threads
    assert frozenset({"alone@new"}) in threads
    check_consistent(conn, company)


def test_accepting_a_message_reads_its_own_id_only(db_url: str, conn: psycopg.Connection[Any], tenant: Any) -> None:
    """The API's duplicate check before queueing: one probe, on a company with thousands of messages,
    on a connection that prepared it while the company had none."""
    company = tenant.company_id
    with psycopg.connect(db_url) as api_conn:  # as the API's pool connections: long-lived
        queue(api_conn, company, [message(message_id=f"w{i}@warm") for i in range(12)])
        seed(conn, company)
        api_conn.execute("SELECT 1")  # the next accepts run inside this transaction: its counters stay readable
        before = counters(api_conn)
        queue(api_conn, company, [message(message_id="s5@seed"), message(message_id="fresh@new")])
        cost = spent(before, counters(api_conn))
        api_conn.commit()
    assert {key: c[0] for key, c in cost.items() if key[1] == "table" and c[0]} == {}, "a sequential scan"
    assert sum(c[1] for key, c in cost.items() if key[1] == "index") <= 2, cost
    assert conn.execute("SELECT count(*) FROM ingest_jobs WHERE company_id = %s AND external_id = 'email:s5@seed'",
                        (company,)).fetchone() == (0,), "a stored message was queued again"


def test_an_original_that_fits_a_page_is_stored_in_its_row_and_a_larger_one_in_toast(
        settings: Settings, conn: psycopg.Connection[Any], worker_conn: psycopg.Connection[Any], tenant: Any) -> None:
    """Migration 0020: a deflated original of a few kB stays in the ``mail_messages`` row (no TOAST
    rows, no TOAST index entries in the worker's transaction, none to delete later); one that does
    not fit a page still goes to TOAST, uncompressed. Either reads back as the bytes received."""
    import base64
    import os
    import zlib

    company = tenant.company_id
    raws = {name: message(message_id=f"{name}@size", body=base64.b64encode(os.urandom(size)).decode())
            for name, size in (("typical", 4500), ("large", 15000))}  # deflated: about 4.6 kB and 15 kB
    queue(conn, company, list(raws.values()))
    processor = IngestProcessor(settings, make_embedder(settings))
    while processor.run_batch(worker_conn).claimed:
        pass
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT message_id, pg_column_toast_chunk_id(raw_deflate) IS NOT NULL, octet_length(raw_deflate), raw_deflate "
        "FROM mail_messages WHERE company_id = %s", (company,))}
    assert {name: rows[f"{name}@size"][0] for name in raws} == {"typical": False, "large": True}
    assert 4000 < rows["typical@size"][1] < 8000 < rows["large@size"][1]
    assert {name: zlib.decompress(rows[f"{name}@size"][2]) for name in raws} == raws
