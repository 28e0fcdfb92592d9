"""``python -m bench.mail_bench [--quick]``: e-mail ingest next to document ingest of the same text, same run.

Starts the core in a temp dir (``bench.stack``: embedded PostgreSQL and Redis, the production
worker pool, the API in a thread), builds the synthetic mailing list (``bench.mailcorpus``:
100,000 messages, 5,000 with --quick) and measures, one phase after the other on the same stack
(the tables emptied between phases, so each starts from an empty index):

    (a) mail        every delivery (duplicates included) POSTed to /v1/emails in delivery order from
                    several keep-alive clients, twice: 200 messages per request (application/mbox,
                    one company's deliveries in order; the headline) and one per request
                    (message/rfc822); first POST to every message searchable (no job queued or
                    failed). Each time checked: every distinct message stored once, duplicates
                    answered as duplicates, and the stored threads equal the corpus's threads (JWZ:
                    connected ids) exactly
    (b) documents   the same messages' indexed text (the mail's own documents: body, title),
                    POSTed to /v1/documents in batches of 200 as bench/ingest.py does; documents/s
                    and chunks/s. Like for like, two ratios: mail 200 per POST against documents 200
                    per POST (target: >= 0.8x), and the same documents again, one per POST, against
                    mail one per POST
    (c) stripping   every distinct message through core.mail.parse_message: body_text (what a
                    reader sees) against index_text (no quoted earlier messages, no signature),
                    in text bytes and chunks; the real tables after (a) and (b), and after
                    (d) the same messages' body_text indexed as documents (the index without
                    stripping; --no-unstripped skips it)
    (e) threading   registry cost from PostgreSQL's own counters during (a), both ways: index scans of the
                    mail_ids primary key per message, sequential scans of the mail tables, and
                    the registry rows a merge rewrote against the size of the threads that survived;
                    EXPLAIN of the worker's registry read

The machine is shared: other processes' CPU share is printed per phase. Read the ratios.
JSON: bench/results/mail.json.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from bench import ingest, pgwrites
from bench.__main__ import Progress
from bench.corpus import COMPANIES, Corpus, Doc
from bench.load import LeanHttpClient, LoadProcess, RunResult, _HttpSession, run_concurrently
from bench.machine import describe
from bench.mailcorpus import MailCorpus, build_mailcorpus
from bench.profile import (
    API_BACKENDS,
    BENCH_PROCESS,
    LOAD_PROCESS,
    OTHER_PROCESSES,
    WORKER_BACKENDS,
    WORKER_PROCESSES,
    scrape_workers,
)
from bench.scratch import scratch_dir
from bench.stack import Stack, running_stack
from bench.stats import percentile, ratio
from core.chunking import chunk_text
from core.mail.mbox import mbox_entry

RESULTS = Path(__file__).resolve().parent / "results" / "mail.json"
TARGET_RATIO = 0.8
MAIL_TABLES = ("mail_ids", "mail_threads", "mail_messages")
RELATIONS = ("chunks", "documents", "ingest_jobs", *MAIL_TABLES)
WIPE_SQL = "TRUNCATE documents, chunks, ingest_jobs, mail_messages, mail_ids, mail_threads"
PARSE_BATCH = 500
MBOX = "application/mbox"
RFC822 = "message/rfc822"
MAX_BODY = 4 << 20  # bytes of one mbox body (the API takes up to max_body_bytes, 10 MiB by default)

INDEX_STATS_SQL = """
SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes WHERE relname = ANY(%s)
"""
TABLE_STATS_SQL = """
SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_tup_ins, n_tup_upd
FROM pg_stat_user_tables WHERE relname = ANY(%s)
"""
RELATION_SIZE_SQL = """
SELECT CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(c.oid))
            ELSE pg_total_relation_size(c.oid) END
FROM pg_class c WHERE c.oid = %s::regclass
"""
CHUNK_TEXT_SQL = "SELECT count(*), coalesce(sum(octet_length(body)), 0) FROM chunks"
THREADS_SQL = "SELECT company_id, thread_id, array_agg(message_id) FROM mail_messages GROUP BY company_id, thread_id"
MERGES_SQL = """
SELECT count(*) FILTER (WHERE merged_into IS NOT NULL),
       count(DISTINCT merged_into),
       (SELECT coalesce(avg(message_count), 0) FROM mail_threads s
        WHERE s.merged_into IS NULL AND EXISTS (SELECT 1 FROM mail_threads m
                                                WHERE m.company_id = s.company_id AND m.merged_into = s.id))
FROM mail_threads
"""
MAIL_DOCUMENTS_SQL = """
SELECT c.name, d.external_id, coalesce(d.title, ''), d.body
FROM documents d JOIN companies c ON c.id = d.company_id
WHERE d.external_id LIKE 'email:%%'
ORDER BY d.id
"""


@dataclass(frozen=True)
class Options:
    messages: int
    clients: int
    per_post: int
    workers: int
    seed: int
    unstripped: bool
    keep: bool
    output: Path


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.mail_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5,000 messages (a smoke run)")
    p.add_argument("--messages", type=int, help="distinct messages (default 100000; 5000 with --quick)")
    p.add_argument("--clients", type=int, default=4, help="concurrent POST clients (default 4)")
    p.add_argument("--per-post", type=int, default=ingest.POST_BATCH_DOCS,
                   help=f"messages per mbox request and documents per batch (default {ingest.POST_BATCH_DOCS})")
    p.add_argument("--workers", type=int, default=2, help="ingest worker processes (default 2)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--no-unstripped", action="store_true",
                   help="skip (d): indexing the messages' full body_text to measure the tables without stripping")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (database, logs)")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    a = p.parse_args(argv)
    opts = Options(messages=a.messages or (5000 if a.quick else 100_000), clients=a.clients, per_post=a.per_post,
                   workers=a.workers,
                   seed=a.seed, unstripped=not a.no_unstripped, keep=a.keep, output=a.output)
    if min(opts.messages, opts.clients, opts.per_post, opts.workers) < 1:
        p.error("sizes and counts must be positive")
    return opts


# --- the load: raw messages, one per POST (runs in the load process) ------------------------------

_RECORD = struct.Struct("<BI")  # company index, length


def write_deliveries(path: Path, corpus: MailCorpus) -> None:
    """The deliveries as (company, bytes) records: the load process reads them itself, so 600 MB
    of mail is not pickled across processes."""
    with path.open("wb") as out:
        for mail in corpus.mails:
            out.write(_RECORD.pack(COMPANIES.index(mail.company), len(mail.raw)))
            out.write(mail.raw)


def read_deliveries(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    out, at = [], 0
    while at < len(data):
        company, size = _RECORD.unpack_from(data, at)
        at += _RECORD.size
        out.append((COMPANIES[company], data[at : at + size]))
        at += size
    return out


def delivery_batches(deliveries: Sequence[tuple[str, bytes]], per_post: int,
                     max_bytes: int = MAX_BODY) -> list[tuple[str, list[int]]]:
    """The deliveries grouped into request bodies (company, delivery numbers): one company's
    deliveries in delivery order, ``per_post`` at a time and at most ``max_bytes`` of mbox; a body
    is sent when full, so the requests follow the delivery order (pure)."""
    out: list[tuple[str, list[int]]] = []
    open_: dict[str, tuple[list[int], int]] = {}
    for i, (company, raw) in enumerate(deliveries):
        members, size = open_.pop(company, ([], 0))
        if members and size + len(raw) > max_bytes:
            out.append((company, members))
            members, size = [], 0
        members, size = [*members, i], size + len(raw)
        if len(members) >= per_post:
            out.append((company, members))
        else:
            open_[company] = (members, size)
    out.extend((company, members) for company, (members, _) in open_.items())
    return out


def post_emails(api_url: str, path: Path, keys: dict[str, str], clients: int, per_post: int) -> RunResult:
    """POST /v1/emails for every delivery: one per request (message/rfc822) or ``per_post`` per
    request (application/mbox); extras, per request: (message_id, duplicate) of each message."""
    deliveries = read_deliveries(path)
    batches = delivery_batches(deliveries, per_post)
    auth = {name: f"Bearer {key}" for name, key in keys.items()}

    def call(client: LeanHttpClient, i: int) -> list[tuple[str, bool]]:
        company, members = batches[i]
        if per_post == 1:
            body, media = deliveries[members[0]][1], RFC822
        else:
            entries = [mbox_entry(deliveries[m][1]) for m in members]
            if any(e is None for e in entries):
                raise RuntimeError(f"a message of request {i} cannot travel in an mbox")
            body, media = b"".join(e for e in entries if e is not None), MBOX
        response = client.post("/v1/emails", body, {"Authorization": auth[company], "Content-Type": media})
        if response.status_code != 202:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        answer = response.json()
        answers = answer["messages"] if media == MBOX else [answer]
        if len(answers) != len(members):
            raise RuntimeError(f"{len(answers)} answers for {len(members)} messages")
        return [(str(a["message_id"]), bool(a["duplicate"])) for a in answers]

    return run_concurrently(len(batches), clients, lambda: _HttpSession(api_url, call))


# --- PostgreSQL's counters and sizes --------------------------------------------------------------


def counters(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """The mail tables' scan and write counters (cumulative), flattened to ``relation.counter``, and
    what the server wrote (``bench.pgwrites``)."""
    out = pgwrites.snapshot(conn, RELATIONS)
    for name, scans, read in conn.execute(INDEX_STATS_SQL, (list(MAIL_TABLES),)):
        out[f"{name}.idx_scan"], out[f"{name}.idx_tup_read"] = scans, read
    for name, seq, seq_read, idx, ins, upd in conn.execute(TABLE_STATS_SQL, (list(MAIL_TABLES),)):
        out.update({f"{name}.seq_scan": seq, f"{name}.seq_tup_read": seq_read, f"{name}.idx_scan": idx,
                    f"{name}.n_tup_ins": ins, f"{name}.n_tup_upd": upd})
    return out


def settled_counters(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """The counters once the workers' backends have flushed them: two reads a second apart that agree."""
    return pgwrites.settled(lambda: counters(conn))


def document_ingest(stack: Stack, corpus: Corpus, load: LoadProcess, clients: int, timeout: float,
                    batch_docs: int) -> tuple[ingest.ServiceIngest, dict[str, float]]:
    """``ingest.service_ingest`` and what PostgreSQL wrote for it per document (its window takes in
    the phase's opening CHECKPOINT, left out of the count, and its closing counts, which mail's
    window takes in too)."""
    with stack.connect(autocommit=True) as conn:
        before = settled_counters(conn)
    result = ingest.service_ingest(stack, corpus, load, clients, timeout, batch_docs=batch_docs)
    with stack.connect(autocommit=True) as conn:
        after = settled_counters(conn)
    return result, pgwrites.per_item(pgwrites.delta(before, after), result.docs, opening_checkpoints=1)


def table_sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    conn.execute("VACUUM (ANALYZE) chunks, documents")  # the visibility and free-space maps, as a steady state has
    out = {name: int(conn.execute(RELATION_SIZE_SQL, (name,)).fetchone()[0]) for name in RELATIONS}  # type: ignore[index]
    rows, text_bytes = conn.execute(CHUNK_TEXT_SQL).fetchone()  # type: ignore[misc]
    out["chunk_rows"], out["chunk_text_bytes"] = int(rows), int(text_bytes)
    return out


def wipe(conn: psycopg.Connection[Any]) -> None:
    conn.execute(WIPE_SQL)
    conn.execute("CHECKPOINT")


# --- (a) mail ---------------------------------------------------------------------------------------


@dataclass
class MailIngest(ingest.ServiceIngest):
    """The service ingest figures (``docs``: the messages stored) and what only mail has."""

    per_post: int = 1
    requests: int = 0
    deliveries: int = 0
    duplicates_answered: int = 0
    threads: int = 0
    threads_expected: int = 0
    threads_exact: bool = False
    registry: dict[str, float] = field(default_factory=dict)  # counter deltas during the phase
    merges: dict[str, float] = field(default_factory=dict)
    explain: list[str] = field(default_factory=list)
    writes: dict[str, float] = field(default_factory=dict)  # bench.pgwrites.per_item of the phase

    @property
    def message_rate(self) -> float:
        return self.docs / self.seconds


def server_ids(corpus: MailCorpus) -> dict[tuple[str, str], str]:
    """(company, corpus key) → the id the service files the message under (its Message-ID, or the
    content-derived id of one without)."""
    from core.mail.message import message_id_of

    return {(m.company, m.key): m.message_id if m.message_id else message_id_of(m.raw)[0] for m in corpus.distinct()}


def stored_threads(conn: psycopg.Connection[Any], companies: dict[int, str]) -> dict[str, set[frozenset[str]]]:
    out: dict[str, set[frozenset[str]]] = {name: set() for name in companies.values()}
    for company_id, _, ids in conn.execute(THREADS_SQL):
        out[companies[company_id]].add(frozenset(ids))
    return out


def expected_threads(corpus: MailCorpus, ids: dict[tuple[str, str], str]) -> dict[str, set[frozenset[str]]]:
    return {company: {frozenset(ids[(company, key)] for key in group) for group in corpus.expected_threads(company)}
            for company in COMPANIES}


def explain_registry(conn: psycopg.Connection[Any], company_id: int) -> list[str]:
    """The plan of the worker's registry read for 32 messages' ids (as one batch names them)."""
    from core.ingest.mail import REGISTRY_SQL

    names = [r[0] for r in conn.execute("SELECT message_id FROM mail_ids WHERE company_id = %s ORDER BY random() "
                                        "LIMIT 160", (company_id,))]
    rows = conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + REGISTRY_SQL,
                        ([company_id] * len(names), names)).fetchall()
    return [r[0] for r in rows]


def mail_ingest(stack: Stack, corpus: MailCorpus, load: LoadProcess, clients: int, per_post: int,
                timeout: float) -> MailIngest:
    keys = {name: t.api_key for name, t in stack.tenants.items()}
    companies = {t.company_id: name for name, t in stack.tenants.items()}
    path = stack.root / "deliveries.bin"
    write_deliveries(path, corpus)
    ids = server_ids(corpus)
    workers = [w for w in stack.workers.workers if w.alive()]
    with stack.connect(autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        before = settled_counters(conn)
        run = ingest.post_until_done(stack, conn, load, timeout, post_emails, stack.api_url, path, keys, clients,
                                     per_post)
        posted, finished_at, stages, cpu = run.run, run.finished_at, run.stages, run.cpu
        chunks = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])  # type: ignore[index]
        _, dead = conn.execute(ingest.COUNTS_SQL).fetchone()  # type: ignore[misc]
        after = settled_counters(conn)  # after the counts the documents' phases make too
        stored = int(conn.execute("SELECT count(*) FROM mail_messages").fetchone()[0])  # type: ignore[index]
        found = stored_threads(conn, companies)
        merged, survivors, survivor_size = conn.execute(MERGES_SQL).fetchone()  # type: ignore[misc]
        explain = explain_registry(conn, stack.tenants["A"].company_id)
    expected = expected_threads(corpus, ids)
    distinct = len(ids)
    duplicates = sum(1 for answers in posted.extras for _, duplicate in answers if duplicate)
    if stored != distinct or dead:
        raise RuntimeError(f"{stored} messages stored for {distinct} distinct ones, {dead} dead jobs")
    if duplicates != len(corpus.mails) - distinct:
        raise RuntimeError(f"{duplicates} answered duplicate, {len(corpus.mails) - distinct} duplicates delivered")
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    merges = {"merged_threads": float(merged), "surviving_threads": float(survivors),
              "survivor_mean_messages": float(survivor_size),
              "registry_rows_rewritten": delta.get("mail_ids.n_tup_upd", 0.0),
              "message_rows_rewritten": delta.get("mail_messages.n_tup_upd", 0.0)}
    return MailIngest(
        per_post=per_post, requests=len(posted.seconds), deliveries=len(corpus.mails), docs=stored,
        duplicates_answered=duplicates, chunks=chunks,
        seconds=finished_at - posted.started_at, posting_seconds=posted.wall_seconds,
        post_p50_ms=percentile(posted.seconds, 50) * 1000, post_p99_ms=percentile(posted.seconds, 99) * 1000,
        dead_jobs=int(dead), threads=sum(len(v) for v in found.values()),
        threads_expected=sum(len(v) for v in expected.values()), threads_exact=found == expected, registry=delta,
        merges=merges, explain=explain, stages=stages, cpu=cpu, writes=pgwrites.per_item(delta, stored),
        worker_metrics=scrape_workers([w.metrics_port for w in workers]))


# --- (b) and (d): documents -------------------------------------------------------------------------


def mail_documents(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, str]]:
    """(company name, external id, title, body) of every document the mail became."""
    return [(r[0].removeprefix("bench-").upper(), r[1], r[2], r[3]) for r in conn.execute(MAIL_DOCUMENTS_SQL)]


def documents_corpus(rows: Sequence[tuple[str, str, str]], chunk_size: int, chunk_overlap: int) -> Corpus:
    """(company, title, text) as bench.corpus documents (blank texts left out: a document needs text)."""
    docs = [Doc(company, f"doc-{i:07d}", title, text, tuple(chunk_text(text, chunk_size, chunk_overlap)))
            for i, (company, title, text) in enumerate(rows) if text.strip()]
    return Corpus(docs, [])


# --- (c) quote stripping through the parser ---------------------------------------------------------


def _strip_sizes(raws: list[bytes], chunk_size: int, overlap: int, keep_bodies: bool) -> dict[str, Any]:
    """body_text against index_text of ``raws`` (runs in a pool process)."""
    from core.mail.message import parse_message

    out: dict[str, Any] = {"messages": 0, "body_bytes": 0, "index_bytes": 0, "body_chunks": 0, "index_chunks": 0,
                           "body_chunk_bytes": 0, "index_chunk_bytes": 0, "parse_ns": 0, "bodies": []}
    for raw in raws:
        started = time.process_time_ns()
        parsed = parse_message(raw)
        out["parse_ns"] += time.process_time_ns() - started
        out["messages"] += 1
        for name, text in (("body", parsed.body_text), ("index", parsed.index_text)):
            chunks = chunk_text(text, chunk_size, overlap)
            out[f"{name}_bytes"] += len(text.encode())
            out[f"{name}_chunks"] += len(chunks)
            out[f"{name}_chunk_bytes"] += sum(len(c.encode()) for c in chunks)
        if keep_bodies:
            out["bodies"].append((parsed.subject or "", parsed.body_text))
    return out


def strip_sizes(corpus: MailCorpus, chunk_size: int, overlap: int, keep_bodies: bool,
                processes: int = 2) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """Every distinct message through parse_message, on ``processes`` processes: the summed sizes,
    and (with ``keep_bodies``) (company, subject, body_text) of each."""
    distinct = corpus.distinct()
    totals: dict[str, int] = {}
    bodies: list[tuple[str, str, str]] = []
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        parts = [distinct[i : i + PARSE_BATCH] for i in range(0, len(distinct), PARSE_BATCH)]
        futures = [pool.submit(_strip_sizes, [m.raw for m in part], chunk_size, overlap, keep_bodies)
                   for part in parts]
        for part, future in zip(parts, futures, strict=True):
            result = future.result()
            for key, value in result.items():
                if key != "bodies":
                    totals[key] = totals.get(key, 0) + value
            bodies.extend((m.company, subject, body) for m, (subject, body) in zip(part, result["bodies"],
                                                                                  strict=False))
    return totals, bodies


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Results:
    options: dict[str, Any]
    machine: dict[str, Any]
    corpus: dict[str, Any]
    mail: MailIngest  # --per-post messages per request (application/mbox)
    mail_single: MailIngest  # one message per request (message/rfc822)
    documents: ingest.ServiceIngest  # --per-post documents per request
    single: ingest.ServiceIngest  # the same documents, one per POST
    stripping: dict[str, int]
    tables: dict[str, dict[str, int]]  # after (a) mail, (b) documents, (d) unstripped documents
    unstripped: ingest.ServiceIngest | None
    writes: dict[str, dict[str, float]] = field(default_factory=dict)  # of (b) and (d): "documents", "single"
    pg_settings: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """The headline: mail against documents, both in batches."""
        return ratio(self.mail.message_rate, self.documents.docs / self.documents.seconds)

    @property
    def single_ratio(self) -> float:
        """Mail against documents, both one per request."""
        return ratio(self.mail_single.message_rate, self.single.docs / self.single.seconds)


def _corpus_facts(corpus: MailCorpus) -> dict[str, Any]:
    sizes = sorted((t.size for t in corpus.threads), reverse=True)
    return {"deliveries": len(corpus.mails), "distinct": len(corpus.distinct()), "threads": len(sizes),
            "threads_1_to_3": round(sum(1 for s in sizes if s <= 3) / len(sizes), 3), "largest_threads": sizes[:5],
            "raw_megabytes": round(sum(len(m.raw) for m in corpus.mails) / 1e6, 1),
            "build_seconds": round(corpus.seconds, 1)}


def measure(stack: Stack, load: LoadProcess, opts: Options, say: Progress) -> Results:
    s = stack.settings
    say(f"building the mailing list: {opts.messages} messages")
    corpus = build_mailcorpus(opts.messages, opts.seed)
    facts = _corpus_facts(corpus)
    say(f"  {facts['deliveries']} deliveries, {facts['threads']} threads, largest {facts['largest_threads']}, "
        f"{facts['raw_megabytes']} MB, built in {facts['build_seconds']} s")
    with stack.connect() as conn:
        machine = describe(conn)
        pg_settings = pgwrites.server_settings(conn)
    timeout = max(900.0, opts.messages / 20)
    tables: dict[str, dict[str, int]] = {}
    writes: dict[str, dict[str, float]] = {}
    say(f"(a) mail: POST /v1/emails, {opts.per_post} per request (application/mbox), {opts.clients} clients, "
        f"{opts.workers} workers")
    mail = mail_ingest(stack, corpus, load, opts.clients, opts.per_post, timeout)
    say(f"  {mail.docs} messages, {mail.chunks} chunks in {mail.seconds:.1f} s: {mail.message_rate:.0f} messages/s; "
        f"threads exact: {mail.threads_exact}")
    with stack.connect(autocommit=True) as conn:
        tables["mail"] = table_sizes(conn)
        rows = [(company, title, body) for company, _, title, body in mail_documents(conn)]
        wipe(conn)
    say("(a) mail: POST /v1/emails, one message per request (message/rfc822)")
    mail_single = mail_ingest(stack, corpus, load, opts.clients, 1, timeout)
    say(f"  {mail_single.message_rate:.0f} messages/s; threads exact: {mail_single.threads_exact}")
    with stack.connect(autocommit=True) as conn:
        wipe(conn)
    say(f"(b) documents: the same {len(rows)} texts through POST /v1/documents, {opts.per_post} per request")
    docs = documents_corpus(rows, s.chunk_size, s.chunk_overlap)
    documents, writes["documents"] = document_ingest(stack, docs, load, opts.clients, timeout, opts.per_post)
    say(f"  {documents.docs} documents, {documents.chunks} chunks in {documents.seconds:.1f} s: "
        f"{documents.docs / documents.seconds:.0f} documents/s")
    with stack.connect(autocommit=True) as conn:
        tables["documents"] = table_sizes(conn)
        wipe(conn)
    say(f"(b) the same {len(docs.docs)} documents, one per POST")
    single, writes["single"] = document_ingest(stack, docs, load, opts.clients, timeout, 1)
    say(f"  {single.docs / single.seconds:.0f} documents/s")
    with stack.connect(autocommit=True) as conn:
        wipe(conn)
    say("(c) quote stripping: every message through core.mail.parse_message")
    stripping, bodies = strip_sizes(corpus, s.chunk_size, s.chunk_overlap, opts.unstripped)
    unstripped = None
    if opts.unstripped:
        say(f"(d) the same messages' body_text (no stripping) as {len(bodies)} documents")
        unstripped = ingest.service_ingest(stack, documents_corpus(bodies, s.chunk_size, s.chunk_overlap), load,
                                           opts.clients, timeout * 4)
        with stack.connect(autocommit=True) as conn:
            tables["unstripped"] = table_sizes(conn)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
    return Results(options, machine, facts, mail, mail_single, documents, single, stripping, tables, unstripped,
                   writes, pg_settings)


def run(opts: Options) -> Results:
    say = Progress()
    with scratch_dir("opsctl-mail-bench-", opts.keep, say) as root:
        say(f"starting PostgreSQL, Redis, {opts.workers} workers and the API in {root}")
        with running_stack(root, opts.workers, COMPANIES) as stack, closing(LoadProcess()) as load:
            results = measure(stack, load, opts, say)
            say("stopping")
        return results


# --- the report -------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _saved(stripped: float, full: float) -> str:
    return f"{1 - stripped / full:.0%}" if full else "—"


def _other_share(cpu: dict[str, Any]) -> str:
    return f"{cpu.get('other_processes_share', 0.0):.0%}"


def thread_costs(p: MailIngest) -> list[tuple[str, str]]:
    """(measure, value) of the registry counters and merges of one mail phase."""
    g, mg = p.registry, p.merges
    merged = mg.get("merged_threads", 0.0)
    through = sum(v for k, v in g.items() if k.startswith("mail_messages_") and k.endswith(".idx_tup_read"))
    return [
        ("mail_ids primary-key index scans per message", f"{g.get('mail_ids_pkey.idx_scan', 0) / p.docs:.1f}"),
        *((f"sequential scans of {t} (rows they read)",
           f"{g.get(f'{t}.seq_scan', 0):,.0f} ({g.get(f'{t}.seq_tup_read', 0):,.0f})") for t in MAIL_TABLES),
        ("rows read through mail_messages' indexes per message", f"{through / p.docs:.1f}"),
        ("merges (threads folded into another)", f"{merged:,.0f} into {mg.get('surviving_threads', 0):,.0f}"),
        ("registry rows rewritten per merge", _per(mg.get("registry_rows_rewritten", 0.0), merged)),
        ("message rows rewritten per merge", _per(mg.get("message_rows_rewritten", 0.0), merged)),
        ("messages in a surviving thread (mean, at the end)", f"{mg.get('survivor_mean_messages', 0):.1f}"),
    ]


def _per(value: float, count: float) -> str:
    return f"{value / count:.1f}" if count else "—"


def _exact(m: MailIngest) -> str:
    return f"{'yes' if m.threads_exact else 'NO'} ({m.threads:,} / {m.threads_expected:,})"


def advisory_share(stages: dict[str, float]) -> float:
    """The share of the workers' backend samples spent waiting inside an advisory-lock statement."""
    return sum(v for k, v in stages.items() if k.startswith("advisory locks: server waits"))


def _cpu_ms(cpu: dict[str, Any], n: int) -> float:
    own = sum(v for k, v in cpu.get("cpu_seconds", {}).items() if k != OTHER_PROCESSES)
    return own * 1000 / n if n else float("nan")


CPU_PARTS = (("API process (HTTP, auth, accept)", BENCH_PROCESS), ("API's PostgreSQL backends", API_BACKENDS),
             ("workers (Python: parse, thread, chunk, embed)", WORKER_PROCESSES),
             ("workers' PostgreSQL backends", WORKER_BACKENDS), ("load generator", LOAD_PROCESS))


def render(r: Results, console: Console) -> None:
    m, n = r.mail, r.mail.per_post
    phases = (r.mail, r.documents, r.mail_single, r.single)  # like for like: two pairs
    t = Table(title=f"mail ingest vs document ingest of the same text (same run; {r.corpus['distinct']:,} messages, "
                    f"{r.corpus['threads']:,} threads)", show_edge=False)
    for col in ("figure", f"mail, {n} per POST (mbox)", f"documents, {n} per POST", "ratio", "mail, 1 per POST",
                "documents, 1 per POST", "ratio"):
        t.add_column(col, justify="left" if col == "figure" else "right")

    def row(name: str, values: list[float], fmt: str = "{:,.0f}", ratios: bool = True) -> None:
        cells = [fmt.format(v) for v in values]
        rs = [f"{ratio(values[i], values[i + 1]):.2f}x" if ratios else "" for i in (0, 2)]
        t.add_row(name, cells[0], cells[1], rs[0], cells[2], cells[3], rs[1])

    row("items/s, first POST → all searchable (target: mail ≥ 0.8x)", [p.docs / p.seconds for p in phases])
    row("chunks/s", [p.rate for p in phases])
    row("items", [float(p.docs) for p in phases], ratios=False)
    row("chunks", [float(p.chunks) for p in phases], ratios=False)
    row("wall seconds", [p.seconds for p in phases], "{:.1f}")
    row("POST p50 ms", [p.post_p50_ms for p in phases], "{:.1f}", ratios=False)
    row("POST p99 ms", [p.post_p99_ms for p in phases], "{:.1f}", ratios=False)
    row("CPU ms per item, all benchmark processes", [_cpu_ms(p.cpu, p.docs) for p in phases], "{:.2f}")
    for label, group in CPU_PARTS:
        row(f"  {label}", [p.cpu.get("cpu_seconds", {}).get(group, 0.0) * 1000 / p.docs for p in phases], "{:.2f}",
            ratios=False)
    row("worker samples waiting on advisory locks (%)", [100 * advisory_share(p.stages) for p in phases], "{:.1f}",
        ratios=False)
    t.add_row("other processes' CPU share (noise)", _other_share(m.cpu), _other_share(r.documents.cpu), "",
              _other_share(r.mail_single.cpu), _other_share(r.single.cpu), "")
    t.add_row("duplicates answered / dead jobs", f"{m.duplicates_answered:,} / {m.dead_jobs}",
              f"— / {r.documents.dead_jobs}", "", f"{r.mail_single.duplicates_answered:,} / {r.mail_single.dead_jobs}",
              f"— / {r.single.dead_jobs}", "")
    t.add_row("threads stored = the corpus's threads", _exact(m), "", "", _exact(r.mail_single), "", "")
    console.print(t)
    for label, value in ((f"{n} per POST", r.ratio), ("1 per POST", r.single_ratio)):
        verdict = "met" if value >= TARGET_RATIO else "missed"
        console.print(f"mail ≥ {TARGET_RATIO}x documents/s, {label}: {value:.2f}x, {verdict}")

    st = r.stripping
    s = Table(title="index size: quote and signature stripping (index_text) vs the whole text (body_text)",
              show_edge=False)
    for col in ("measure", "as indexed (stripped)", "without stripping", "saved"):
        s.add_column(col, justify="left" if col == "measure" else "right")
    s.add_row(f"text bytes, parse_message of {st['messages']:,} messages ({st['parse_ns'] / st['messages'] / 1e6:.2f} "
              "ms CPU each)", _mb(st["index_bytes"]),
              _mb(st["body_bytes"]), _saved(st["index_bytes"], st["body_bytes"]))
    s.add_row("chunks (core.chunking, the service's settings)", f"{st['index_chunks']:,}", f"{st['body_chunks']:,}",
              _saved(st["index_chunks"], st["body_chunks"]))
    s.add_row("chunk text bytes", _mb(st["index_chunk_bytes"]), _mb(st["body_chunk_bytes"]),
              _saved(st["index_chunk_bytes"], st["body_chunk_bytes"]))
    mail_t, full_t = r.tables.get("mail", {}), r.tables.get("unstripped")
    for key, label in (("chunk_rows", "real table: chunk rows"), ("chunk_text_bytes", "real table: chunk text bytes"),
                       ("chunks", "real table: chunks relation (heap, TOAST, HNSW, GIN, btree)"),
                       ("documents", "real table: documents relation")):
        value = mail_t.get(key, 0)
        other = full_t.get(key, 0) if full_t else None
        fmt = (lambda v: f"{v:,}") if key == "chunk_rows" else _mb
        s.add_row(label, fmt(value), fmt(other) if other is not None else "(not run)",
                  _saved(value, other) if other else "")
    s.add_row("real tables: " + " / ".join(MAIL_TABLES),
              " / ".join(_mb(mail_t.get(k, 0)) for k in MAIL_TABLES), "", "")
    console.print(s)

    h = Table(title="thread assignment cost during (a), from pg_stat_user_tables / pg_stat_user_indexes",
              show_edge=False)
    h.add_column("measure")
    for p in (m, r.mail_single):
        h.add_column(f"{p.per_post} per POST", justify="right")

    for (name, batched), (_, single) in zip(thread_costs(m), thread_costs(r.mail_single), strict=True):
        h.add_row(name, batched, single)
    console.print(h)
    render_writes(r, console)
    console.print("registry read of 160 ids (EXPLAIN ANALYZE):\n  " + "\n  ".join(m.explain))
    console.print("A shared, noisy machine: read the ratios, and the other processes' CPU share of each phase.")


WRITES_FIRST = ("wal_records", "wal_fpi", "wal_bytes", "checkpoints", "checkpointer_blocks_written")


def writes_rows(columns: Sequence[dict[str, float]]) -> list[tuple[str, list[float]]]:
    """(figure, value per column) of the phases' ``pgwrites.per_item``: WAL and checkpoints first,
    then the rest by name; a figure zero in every column is left out (pure)."""
    names = [*WRITES_FIRST, *sorted({k for c in columns for k in c} - set(WRITES_FIRST))]
    rows = [(name, [c.get(name, 0.0) for c in columns]) for name in names]
    return [(name, values) for name, values in rows if any(values)]


def render_writes(r: Results, console: Console) -> None:
    n = r.mail.per_post
    columns = [r.mail.writes, r.writes.get("documents", {}), r.mail_single.writes, r.writes.get("single", {})]
    t = Table(title="what PostgreSQL wrote and touched, per item (pg_stat_wal, pg_stat_checkpointer, pg_stat_io, "
                    "pg_statio_user_tables); settings: " + ", ".join(f"{k}={v}" for k, v in r.pg_settings.items()),
              show_edge=False)
    for col in ("per item", f"mail, {n} per POST", f"documents, {n} per POST", "mail, 1 per POST",
                "documents, 1 per POST"):
        t.add_column(col, justify="left" if col == "per item" else "right")
    for name, values in writes_rows(columns):
        fmt = "{:,.0f}" if name in ("wal_bytes", "checkpoints") else "{:,.2f}"
        t.add_row(name, *(fmt.format(v) for v in values))
    console.print(t)


def write_json(r: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(r)
    data["ratio"] = r.ratio
    data["single_ratio"] = r.single_ratio
    path.write_text(json.dumps(data, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        results = run(opts)
    except KeyboardInterrupt:
        print("mail_bench: interrupted", file=sys.stderr)
        return 130
    write_json(results, opts.output)
    render(results, Console(width=180))
    print(f"JSON report: {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
