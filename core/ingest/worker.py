"""Ingest workers: claim → chunk → embed → write chunks → mark done, in one transaction.

The chunks are embedded by a thread of the worker while its connection writes the batch (the
documents, then the chunks group by group as their vectors come: ``core.ingest.overlap``), so
database writes overlap embedding inside the same transaction.

A worker claims a batch with ``FOR UPDATE SKIP LOCKED`` (fairly across companies, by their tier's
``ingestWeight``: ``core.ingest.claim``, ``core.ingest.fair``) and holds an advisory lock per job
(so ``/v1/jobs`` can say "running" and the queue gauges can tell waiting from in-flight work).
Everything up to the commit is one transaction: a crash anywhere returns the batch to the queue.

Per key (company, external_id) the worker takes a transaction-level advisory lock, in a fixed
order, and applies only the newest job of the key; older ones are marked superseded. E-mail jobs
ride in the same batches: their messages are parsed, become documents on the same path, and are
threaded last, in one more read and one more planner (``core.ingest.mail``), under locks on the
ids they name that are held from there to the commit only. A batch
that fails is retried job by job inside the same transaction (savepoints), so one poison job
cannot fail its neighbours; failed jobs are retried with exponential backoff until
``max_attempts``, then they are ``dead`` with their last error.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from core import metrics
from core.chunking import chunk_text
from core.errors import ConfigError, EmbedderError, OpsError
from core.ingest.claim import claim_jobs
from core.ingest.fair import claim_weights
from core.ingest.mail import (
    EMAIL_PREFIX,
    Letter,
    document_payload,
    message_id_from,
    read_letter,
    stored_messages,
    thread_letters,
)
from core.ingest.maildelete import delete_messages
from core.ingest.overlap import EmbedAhead
from core.spaces.follow import hold_space
from core.tierpolicy import tenants_policy
from core.usage.recorder import UsageRecorder

if TYPE_CHECKING:
    from core.config import Settings
    from core.embed import Embedder

log = logging.getLogger("core.worker")


@dataclass
class Job:
    id: int
    company_id: int
    external_id: str
    op: str
    content_hash: bytes | None
    payload: dict[str, Any] | None
    attempts: int
    raw: bytes | None = None  # an e-mail job's message


@dataclass(frozen=True)
class Existing:
    document_id: int
    created_at: datetime
    content_hash: bytes


@dataclass(frozen=True)
class Step:
    """What the worker does for one job (the pure part of a batch)."""

    job: Job
    action: str  # "write" | "delete" | "noop" | "email" (threaded next: "write" or a "noop" duplicate)
    outcome: str
    remove: tuple[Existing, ...] = ()


def plan_batch(jobs: Sequence[Job], newest: dict[tuple[int, str], int],
               existing: dict[tuple[int, str], list[Existing]]) -> list[Step]:
    """Decide each job's effect from the newest job id per key and the stored documents (pure)."""
    steps = []
    for job in jobs:
        key = (job.company_id, job.external_id)
        newest_id = newest.get(key, job.id)
        stored = tuple(existing.get(key, ()))
        if newest_id != job.id:
            steps.append(Step(job, "noop", f"superseded by job {newest_id}"))
        elif job.op == "email":
            steps.append(Step(job, "email", "", stored))
        elif job.op == "delete":
            steps.append(Step(job, "delete", "deleted" if stored else "nothing to delete", stored))
        elif len(stored) == 1 and stored[0].content_hash == job.content_hash:
            steps.append(Step(job, "noop", "unchanged"))
        else:
            steps.append(Step(job, "write", "updated" if stored else "created", stored))
    return steps


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before retry number ``attempts`` (1-based): base, 2·base, 4·base … capped (pure)."""
    return float(min(cap, base * (2 ** max(attempts - 1, 0))))


HOLD_JOBS_SQL = "SELECT count(pg_advisory_xact_lock(id)) FROM unnest(%s::bigint[]) AS t(id)"

LOCK_KEYS_SQL = """
SELECT count(pg_advisory_xact_lock(k1, k2)) FROM (
    SELECT DISTINCT company_id::int AS k1, hashtext(external_id) AS k2
    FROM unnest(%s::bigint[], %s::text[]) AS t(company_id, external_id)
    ORDER BY 1, 2
) s
"""

NEWEST_SQL = """
SELECT DISTINCT ON (j.company_id, j.external_id) j.company_id, j.external_id, j.id
FROM ingest_jobs j
JOIN unnest(%s::bigint[], %s::text[]) AS t(company_id, external_id)
  ON j.company_id = t.company_id AND j.external_id = t.external_id
ORDER BY j.company_id, j.external_id, j.id DESC
"""

EXISTING_SQL = """
SELECT d.company_id, d.external_id, d.id, d.created_at, d.content_hash
FROM documents d
JOIN unnest(%s::bigint[], %s::text[]) AS t(company_id, external_id)
  ON d.company_id = t.company_id AND d.external_id = t.external_id
"""

DELETE_CHUNKS_SQL = """
DELETE FROM chunks c USING unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS t(company_id, id, created_at)
WHERE c.company_id = t.company_id AND c.document_id = t.id AND c.created_at = t.created_at
"""

DELETE_DOCS_SQL = """
DELETE FROM documents d USING unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS t(company_id, id, created_at)
WHERE d.company_id = t.company_id AND d.id = t.id AND d.created_at = t.created_at
"""

INSERT_DOCS_SQL = """
INSERT INTO documents (company_id, external_id, title, metadata, body, content_hash, created_at)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::jsonb[], %s::text[], %s::bytea[],
                     %s::timestamptz[])
RETURNING company_id, external_id, id
"""

FINISH_SQL = """
UPDATE ingest_jobs j SET status = 'done', attempts = j.attempts + 1, outcome = t.outcome,
       last_error = NULL, payload = NULL, raw = NULL, finished_at = now(), updated_at = now()
FROM unnest(%s::bigint[], %s::text[]) AS t(id, outcome)
WHERE j.id = t.id
"""

FAIL_SQL = """
UPDATE ingest_jobs SET attempts = attempts + 1, last_error = %s, updated_at = now(),
       status = CASE WHEN attempts + 1 >= %s THEN 'dead' ELSE 'failed' END,
       finished_at = CASE WHEN attempts + 1 >= %s THEN now() END,
       run_after = now() + make_interval(secs => %s)
WHERE id = %s
RETURNING status
"""

# rows locked in id order (as `opsctl cache flush` locks them), so two bumps never deadlock
BUMP_SQL = ("UPDATE companies SET data_version = data_version + 1"
            " WHERE id IN (SELECT id FROM companies WHERE id = ANY(%s) ORDER BY id FOR UPDATE)")

COPY_CHUNKS_SQL = (
    "COPY chunks (company_id, document_id, external_id, ord, body, metadata, embedding, created_at)"
    " FROM STDIN WITH (FORMAT BINARY)"
)


@dataclass
class BatchResult:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    dead: int = 0
    chunks: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    jobs_by_company: dict[int, int] = field(default_factory=dict)  # jobs done
    chunks_by_company: dict[int, int] = field(default_factory=dict)  # texts embedded and stored


class IngestProcessor:
    """Processes batches of the queue on one connection."""

    def __init__(self, settings: Settings, embedder: Embedder, usage: UsageRecorder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.ahead = EmbedAhead(embedder, settings.embed_batch_size)
        self.weights = claim_weights(tenants_policy(settings))  # the fair claim's (core.ingest.fair)
        self.usage = usage  # per-company usage: jobs done and texts embedded, counted once a batch commits

    def run_batch(self, conn: psycopg.Connection[Any], limit: int | None = None) -> BatchResult:
        """Claim up to ``limit`` jobs and process them in one transaction."""
        result = BatchResult()
        started = time.perf_counter()
        with conn.transaction():
            rows = claim_jobs(conn, self.settings.ingest_claim, self.weights, limit or self.settings.worker_batch_size)
            if not rows:
                return result
            jobs = [Job(r[0], r[1], r[2], r[3], bytes(r[4]) if r[4] is not None else None, r[5], r[6],
                        bytes(r[7]) if r[7] is not None else None) for r in rows]
            result.claimed = len(jobs)
            conn.execute(HOLD_JOBS_SQL, ([j.id for j in jobs],))
            hold_space(conn, self.embedder)  # before any chunk is read: the switch's lock order
            metrics.JOBS_IN_FLIGHT.set(len(jobs))
            try:
                self._apply_isolated(conn, jobs, result)
            finally:
                metrics.JOBS_IN_FLIGHT.set(0)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        for status, count in (("done", result.done), ("failed", result.failed), ("dead", result.dead)):
            if count:
                metrics.INGEST_JOBS.labels(status).inc(count)
        metrics.INGEST_CHUNKS.inc(result.chunks)
        if self.usage is not None:
            for company in result.jobs_by_company.keys() | result.chunks_by_company.keys():
                self.usage.count(company, ingest_jobs=result.jobs_by_company.get(company, 0),
                                 embeddings=result.chunks_by_company.get(company, 0))
        return result

    def _apply_isolated(self, conn: psycopg.Connection[Any], jobs: list[Job], result: BatchResult) -> None:
        try:
            with conn.transaction():
                self._apply(conn, jobs, result)
            return
        except EmbedderError as exc:
            # the backend is down: every job of the batch waits, none is to blame
            for job in jobs:
                self._fail(conn, job, exc, result)
            return
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            if len(jobs) == 1:
                self._fail(conn, jobs[0], exc, result)
                return
            log.warning("batch of %d failed (%s); retrying job by job", len(jobs), exc)
        for job in jobs:
            try:
                with conn.transaction():
                    self._apply(conn, [job], result)
            except psycopg.OperationalError:
                raise
            except Exception as exc:
                self._fail(conn, job, exc, result)

    def _fail(self, conn: psycopg.Connection[Any], job: Job, exc: BaseException, result: BatchResult) -> None:
        message = f"{type(exc).__name__}: {exc}"[:2000]
        delay = backoff_seconds(job.attempts + 1, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        row = conn.execute(FAIL_SQL, (message, self.settings.max_attempts, self.settings.max_attempts, delay,
                                      job.id)).fetchone()
        if row and row[0] == "dead":
            result.dead += 1
            log.error("job %d is dead after %d attempts: %s", job.id, job.attempts + 1, message)
        else:
            result.failed += 1
            log.warning("job %d failed (attempt %d), retry in %.1f s: %s", job.id, job.attempts + 1, delay, message)

    def _apply(self, conn: psycopg.Connection[Any], jobs: list[Job], result: BatchResult) -> None:
        companies = [j.company_id for j in jobs]
        external_ids = [j.external_id for j in jobs]
        conn.execute(LOCK_KEYS_SQL, (companies, external_ids))
        newest = {(r[0], r[1]): r[2] for r in conn.execute(NEWEST_SQL, (companies, external_ids))}
        existing: dict[tuple[int, str], list[Existing]] = {}
        for r in conn.execute(EXISTING_SQL, (companies, external_ids)):
            existing.setdefault((r[0], r[1]), []).append(Existing(r[2], r[3], bytes(r[4])))
        steps = plan_batch(jobs, newest, existing)
        letters = {s.job.id: read_letter(s.job) for s in steps if s.action == "email"}
        now: datetime | None = None
        if letters:
            now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            stored = stored_messages(conn, list(letters.values()))
            steps = [self._email_step(s, letters[s.job.id], now, stored) if s.job.id in letters else s for s in steps]

        removed = [(s.job.company_id, e.document_id, e.created_at) for s in steps for e in s.remove]
        if removed:
            args = tuple(list(column) for column in zip(*removed, strict=True))
            conn.execute(DELETE_CHUNKS_SQL, args)
            conn.execute(DELETE_DOCS_SQL, args)

        writes = [s for s in steps if s.action == "write"]
        written: dict[int, int] = {}
        if writes:
            written = self._write(conn, writes)
        fresh = [letters[s.job.id] for s in writes if s.job.id in letters]
        gone = {(s.job.company_id, message_id_from(s.job.external_id)): s.job.id for s in steps
                if s.action == "delete" and s.job.external_id.startswith(EMAIL_PREFIX)}
        if fresh or gone:  # last, so the mail locks are held from here to the commit only
            steps = self._mail_stage(conn, steps, fresh, gone, now)
        changed = sorted({s.job.company_id for s in steps if s.action != "noop"})
        if changed:
            conn.execute(BUMP_SQL, (changed,))
        conn.execute(FINISH_SQL, ([s.job.id for s in steps], [s.outcome for s in steps]))
        result.done += len(steps)
        result.chunks += sum(written.values())
        for s in steps:
            result.outcomes[s.outcome.split(" ")[0]] = result.outcomes.get(s.outcome.split(" ")[0], 0) + 1
            result.jobs_by_company[s.job.company_id] = result.jobs_by_company.get(s.job.company_id, 0) + 1
        for company, n in written.items():
            result.chunks_by_company[company] = result.chunks_by_company.get(company, 0) + n

    def _mail_stage(self, conn: psycopg.Connection[Any], steps: list[Step], fresh: list[Letter],
                    gone: dict[tuple[int, str], int], now: datetime | None) -> list[Step]:
        """Thread and store the new messages (``now``: the batch's time, read with its letters),
        delete the messages of the mail documents deleted (every mail lock in one pass); the steps
        with their outcomes."""
        group_by_subject = self.settings.mail_group_by_subject
        outcome: dict[int, str] = {}
        if fresh:
            assert now is not None, "new messages come with the batch's time"
            threads = thread_letters(conn, fresh, now, group_by_subject, list(gone))
            outcome = {letter.job.id: f"stored in thread {t}" for letter, t in zip(fresh, threads, strict=True)}
        deleted = delete_messages(conn, list(gone), group_by_subject, locked=bool(fresh))
        outcome.update({gone[key]: "deleted" for key in deleted})
        return [replace(s, outcome=outcome[s.job.id]) if s.job.id in outcome else s for s in steps]

    @staticmethod
    def _email_step(step: Step, letter: Letter, now: datetime, stored: set[tuple[int, str]]) -> Step:
        """An e-mail job: a no-op when its message is stored already, else its document's write
        (threaded after the documents are written)."""
        if (step.job.company_id, letter.parsed.message_id) in stored:
            return Step(step.job, "noop", "duplicate: the message is stored already")
        job = replace(step.job, payload=document_payload(letter, now),
                      content_hash=hashlib.sha256(step.job.raw or b"").digest())
        return Step(job, "write", "stored", step.remove)

    def _write(self, conn: psycopg.Connection[Any], writes: list[Step]) -> dict[int, int]:
        """Insert the documents and COPY their chunks, the chunks embedded meanwhile (``EmbedAhead``);
        the chunks written per company."""
        parts = [chunk_text((s.job.payload or {})["text"], self.settings.chunk_size, self.settings.chunk_overlap)
                 for s in writes]
        texts = [text for doc_parts in parts for text in doc_parts]
        with self.ahead.embedding(texts) as groups:
            pieces: list[tuple[int, int, str, int, str, Any, datetime]] = []
            for (s, payload, created, doc_id), doc_parts in zip(self._insert_documents(conn, writes), parts,
                                                                strict=True):
                meta = Jsonb(payload.get("metadata") or {})
                pieces.extend((s.job.company_id, doc_id, s.job.external_id, i, text, meta, created)
                              for i, text in enumerate(doc_parts))
            if not pieces:
                return {}
            with conn.cursor().copy(COPY_CHUNKS_SQL) as copy:
                copy.set_types(["int8", "int8", "text", "int4", "text", "jsonb", "vector", "timestamptz"])
                for start, end, vectors in groups:
                    for piece, vector in zip(pieces[start:end], vectors, strict=True):
                        copy.write_row((*piece[:6], vector, piece[6]))
        written: dict[int, int] = {}
        for piece in pieces:
            written[piece[0]] = written.get(piece[0], 0) + 1
        return written

    @staticmethod
    def _insert_documents(conn: psycopg.Connection[Any],
                          writes: list[Step]) -> list[tuple[Step, dict[str, Any], datetime, int]]:
        """Insert the written documents; (step, payload, created_at, document id) of each, in order."""
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        docs = []
        for s in writes:
            payload = s.job.payload or {}
            created = payload.get("created_at")
            if created is None and s.remove:
                created = s.remove[0].created_at
            docs.append((s, payload, datetime.fromisoformat(created) if isinstance(created, str) else created or now))
        rows = conn.execute(
            INSERT_DOCS_SQL,
            (
                [s.job.company_id for s, _, _ in docs],
                [s.job.external_id for s, _, _ in docs],
                [p.get("title") for _, p, _ in docs],
                [Jsonb(p.get("metadata") or {}) for _, p, _ in docs],
                [p["text"] for _, p, _ in docs],
                [s.job.content_hash for s, _, _ in docs],
                [c for _, _, c in docs],
            ),
        ).fetchall()
        ids = {(r[0], r[1]): r[2] for r in rows}
        return [(s, p, c, ids[(s.job.company_id, s.job.external_id)]) for s, p, c in docs]


class Worker:
    """The worker process's loop: batches while there is work, LISTEN/NOTIFY naps between.

    Batches go to ``database_url`` (a transaction pooler allowed: no session state, no server-side
    prepares); LISTEN needs a session of its own, so the listener connects to ``direct_url``."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        if not settings.database_url or not settings.direct_url:
            raise ConfigError("the ingest worker needs database_url")
        from core.pooler import connect_kwargs

        self.settings = settings
        self.url = settings.database_url
        self.listen_url = settings.direct_url
        url, data_kwargs = self.url, connect_kwargs(settings.database_pool_mode)
        # flushed on a connection of its own (``start``, ``close``: main)
        self.usage = UsageRecorder(lambda: psycopg.connect(url, **data_kwargs), settings.usage_flush_seconds)
        self.processor = IngestProcessor(settings, embedder, self.usage)
        self.stopping = False

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> None:
        from pgvector.psycopg import register_vector

        from core.ingest.accept import NOTIFY_CHANNEL
        from core.pooler import connect_kwargs

        data_kwargs = connect_kwargs(self.settings.database_pool_mode)
        while not self.stopping:
            try:
                with psycopg.connect(self.url, **data_kwargs) as conn, \
                        psycopg.connect(self.listen_url, autocommit=True) as listener:
                    register_vector(conn)
                    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._loop(conn, listener)
            except (psycopg.OperationalError, OpsError) as exc:
                if self.stopping:
                    break
                log.warning("worker lost the database (%s); reconnecting in 1 s", exc)
                time.sleep(1)

    def _loop(self, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]) -> None:
        while not self.stopping:
            result = self.processor.run_batch(conn)
            if result.claimed:
                log.info("batch: %d claimed, %d done, %d failed, %d dead, %d chunks", result.claimed,
                         result.done, result.failed, result.dead, result.chunks)
                continue
            for _ in listener.notifies(timeout=self.settings.worker_poll_seconds, stop_after=1):
                pass


def warm_up(embedder: Embedder) -> None:
    """Load a local model before the first claim, so no batch holds its jobs while a model loads;
    a model that cannot load is the first batch's error (its jobs wait and retry), not the worker's."""
    load = getattr(embedder, "load", None)
    if not callable(load):
        return
    try:
        load()
    except EmbedderError as exc:
        log.warning("the embedder could not load its model: %s", exc)


def main(argv: list[str] | None = None) -> int:
    from prometheus_client import start_http_server

    from core.config import load_settings
    from core.logs import configure as configure_logs
    from core.spaces.follow import follow_database

    parser = argparse.ArgumentParser(prog="core-worker", description="Run one ingest worker.")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port (0: none)")
    parser.add_argument("--metrics-host", default="127.0.0.1")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logs("worker", settings.log_format, "%(asctime)s worker[%(process)d] %(levelname)s %(message)s")
    if not settings.database_url:
        print("core-worker: OPSCTL_DATABASE_URL is not set", file=sys.stderr)
        return 2
    with psycopg.connect(settings.database_url) as conn:
        embedder = follow_database(settings, conn)  # the database's active vector space
    worker = Worker(settings, embedder)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    warm_up(embedder)
    log.info("worker started (embedder %s, batch %d)", embedder.name, settings.worker_batch_size)
    worker.usage.start()
    try:
        worker.run()
    finally:
        worker.usage.close()  # what was counted since the last flush
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
