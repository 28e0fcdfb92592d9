"""Accepting documents: validation, content hashing, and the durable enqueue.

A 202 is returned only after the jobs are committed. Re-sending an ``external_id`` with the
same content returns the existing job (a no-op); new content queues an update. Workers apply the
newest job of a key and mark older ones superseded, so the end state is always the latest send.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.ingest.fair import INTERACTIVE, Lane
from core.inputs import NO_NUL_PATTERN, NON_BLANK_PATTERN, JsonObject, UtcDatetime, no_nul

NOTIFY_CHANNEL = "opsctl_ingest"
MAX_EXTERNAL_ID = 512
MAX_TITLE = 1000


def external_id_value(value: str) -> str:
    """An external id as every route takes it (a body's, a path's): not blank, no NUL."""
    if not value.strip():
        raise ValueError("external_id must not be blank")
    return no_nul(value)


class DocumentIn(BaseModel):
    """One document: re-sending an ``external_id`` with the same content is a no-op, new content an update."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=MAX_EXTERNAL_ID, json_schema_extra={"pattern": NON_BLANK_PATTERN},
                             description="the document's id in your system")
    text: str = Field(json_schema_extra={"pattern": NON_BLANK_PATTERN}, description="chunked, embedded and indexed")
    title: str | None = Field(None, max_length=MAX_TITLE, json_schema_extra={"pattern": NO_NUL_PATTERN})
    metadata: JsonObject = Field(default_factory=dict, description="returned as is; searchable with `filters.metadata`")
    created_at: UtcDatetime | None = Field(default=None, description="when the document was written (default: when "
                                           "first stored; an update keeps it); a time without offset is UTC")

    @field_validator("external_id")
    @classmethod
    def _external_id(cls, v: str) -> str:
        return external_id_value(v)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be empty")
        return no_nul(v)

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | None) -> str | None:
        return None if v is None else no_nul(v)

    def payload(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "title": self.title,
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }

    def content_hash(self) -> bytes:
        canonical = json.dumps(self.payload(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


class DocumentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1)


@dataclass(frozen=True)
class LatestJob:
    job_id: int
    op: str
    content_hash: bytes | None
    status: str


@dataclass(frozen=True)
class Enqueue:
    """What to do with one accepted item: reuse ``existing`` job, or queue a new one."""

    index: int
    existing: int | None


def plan_accept(latest: dict[str, LatestJob], items: list[tuple[str, str, bytes | None]]) -> list[Enqueue]:
    """Decide, per (external_id, op, content_hash), whether it repeats the key's newest job (pure).

    A repeat has the same op and content as the newest job of its key while that job is not dead;
    it is answered with that job. Anything else is queued. A key named twice in one request is
    queued twice (the worker applies the later one), unless both repeat the newest job.
    """
    plan = []
    changed: set[str] = set()
    for index, (external_id, op, digest) in enumerate(items):
        job = latest.get(external_id)
        repeat = (
            external_id not in changed
            and job is not None
            and job.status != "dead"
            and job.op == op
            and job.content_hash == digest
        )
        if repeat:
            assert job is not None
            plan.append(Enqueue(index, job.job_id))
        else:
            plan.append(Enqueue(index, None))
            changed.add(external_id)
    return plan


LATEST_JOBS_SQL = """
SELECT DISTINCT ON (external_id) external_id, id, op, content_hash, status
FROM ingest_jobs WHERE company_id = %s AND external_id = ANY(%s)
ORDER BY external_id, id DESC
"""

INSERT_JOBS_SQL = """
INSERT INTO ingest_jobs (company_id, external_id, op, content_hash, payload, source, priority, due_at)
SELECT %s, t.external_id, t.op, t.content_hash, t.payload, %s, %s, now() + make_interval(secs => %s)
FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::jsonb[]) WITH ORDINALITY
     AS t(external_id, op, content_hash, payload, ord)
ORDER BY t.ord
RETURNING id
"""


def enqueue(
    conn: psycopg.Connection[Any],
    company_id: int,
    items: Sequence[tuple[str, str, bytes | None, dict[str, Any] | None]],
    source: str = "api",
    lane: Lane = INTERACTIVE,
) -> list[int]:
    """Queue (external_id, op, content_hash, payload) items in one transaction, in ``lane``
    (``core.ingest.fair``); returns job ids in order."""
    with conn.transaction():
        keys = sorted({item[0] for item in items})
        rows = conn.execute(LATEST_JOBS_SQL, (company_id, keys)).fetchall()
        latest = {r[0]: LatestJob(r[1], r[2], bytes(r[3]) if r[3] is not None else None, r[4]) for r in rows}
        plan = plan_accept(latest, [(i[0], i[1], i[2]) for i in items])
        fresh = [p.index for p in plan if p.existing is None]
        new_ids: list[int] = []
        if fresh:
            cur = conn.execute(
                INSERT_JOBS_SQL,
                (
                    company_id,
                    source,
                    lane.code,
                    lane.delay_seconds,
                    [items[i][0] for i in fresh],
                    [items[i][1] for i in fresh],
                    [items[i][2] for i in fresh],
                    [Jsonb(items[i][3]) if items[i][3] is not None else None for i in fresh],
                ),
            )
            new_ids = [int(r[0]) for r in cur.fetchall()]
            conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    assigned = dict(zip(fresh, new_ids, strict=True))
    return [p.existing if p.existing is not None else assigned[p.index] for p in plan]


def accept_documents(conn: psycopg.Connection[Any], company_id: int, docs: list[DocumentIn],
                     source: str = "api", lane: Lane = INTERACTIVE) -> list[int]:
    items = [(d.external_id, "upsert", d.content_hash(), d.payload()) for d in docs]
    return enqueue(conn, company_id, items, source, lane)


def accept_delete(conn: psycopg.Connection[Any], company_id: int, external_id: str) -> int:
    return enqueue(conn, company_id, [(external_id, "delete", None, None)], "api")[0]


def job_status(conn: psycopg.Connection[Any], company_id: int, job_id: int) -> dict[str, Any] | None:
    """A job of this company, with ``running`` when a worker holds it right now."""
    row = conn.execute(
        """
        SELECT j.id, j.status, j.attempts, j.last_error, j.external_id, j.op, j.outcome,
               j.created_at, j.finished_at,
               EXISTS (SELECT 1 FROM pg_locks l
                       WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
                         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                         AND l.classid = (j.id >> 32)::oid AND l.objid = (j.id & 4294967295)::oid)
        FROM ingest_jobs j WHERE j.id = %s AND j.company_id = %s
        """,
        (job_id, company_id),
    ).fetchone()
    if row is None:
        return None
    status = row[1]
    if row[9] and status in ("queued", "failed"):
        status = "running"
    result: dict[str, Any] = {
        "id": row[0], "status": status, "attempts": row[2], "external_id": row[4], "op": row[5],
        "created_at": row[7].isoformat(), "finished_at": row[8].isoformat() if row[8] else None,
    }
    if row[3]:
        result["error"] = row[3]
    if row[6]:
        result["outcome"] = row[6]
    return result


def now_utc() -> datetime:
    return datetime.now(UTC)
