"""What the API answers, declared for the OpenAPI document (request bodies live with their domain:
``core.ingest.accept.DocumentsIn``, ``core.search.retrieve.SearchRequest``, ``WorkersIn`` here)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.inputs import JsonInt

MAX_WORKERS = 64


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AcceptedOut(Out):
    accepted: int = Field(description="documents (or deletes) queued; durable once this answer is sent")
    job_ids: list[int] = Field(description="one ingest job per document, in request order (`GET /v1/jobs/{id}`)")


class EmailAcceptedOut(Out):
    accepted: int = Field(description="1: queued, durable once this answer is sent; 0: a duplicate, nothing written")
    job_ids: list[int] = Field(description="the message's ingest job (`GET /v1/jobs/{id}`): the new one, or for a "
                               "duplicate the one that stored or queued it (empty if that job is gone)")
    message_id: str = Field(description="the Message-ID without angle brackets, or the id derived from the content "
                            "when the message has none (stable: sending it again is a duplicate)")
    duplicate: bool = Field(description="this company has the message stored or queued already")


class EmailQueuedOut(Out):
    message_id: str = Field(description="as `POST /v1/emails` answers for one message")
    job_id: int | None = Field(description="its ingest job: the new one, or for a duplicate the one that stored or "
                               "queued it (null if that job is gone)")
    duplicate: bool = Field(description="this company has the message stored or queued already, or the body has "
                            "it earlier: nothing written for it")


class MboxAcceptedOut(Out):
    accepted: int = Field(description="messages queued, durable once this answer is sent (all of them or none)")
    job_ids: list[int] = Field(description="the new jobs, in body order (`GET /v1/jobs/{id}`)")
    messages: list[EmailQueuedOut] = Field(description="one per message of the body, in body order")


class WebhookAcceptedOut(AcceptedOut):
    external_id: str = Field(description="the document the event became: `<source>:<event id or body SHA-256>`, "
                             "or `email:<message id>` for a raw message")
    message_id: str | None = Field(None, description="a raw message (`message/rfc822`, or the source `email`): "
                                   "its id, as `POST /v1/emails` answers")
    duplicate: bool | None = Field(None, description="a raw message: stored or queued already (nothing written)")


class JobOut(Out):
    id: int
    status: Literal["queued", "running", "done", "failed", "dead"] = Field(
        description="`failed`: waiting to be retried; `dead`: out of attempts")
    attempts: int
    external_id: str
    op: Literal["upsert", "delete", "email"]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    finished_at: str | None = Field(json_schema_extra={"format": "date-time"})
    error: str | None = Field(None, description="the last attempt's error")
    outcome: str | None = Field(None, description="what the worker did: `created`, `updated`, `unchanged`, "
                                "`deleted`, `nothing to delete`, `superseded by job <id>`; e-mail: `stored in "
                                "thread <id>`, `duplicate: …`")


class DocumentOut(Out):
    document_id: int
    external_id: str
    title: str | None
    metadata: dict[str, Any]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    chunks: int
    cached: bool


class ListedDocument(Out):
    document_id: int = Field(description="the stored row's id: an update writes a new one")
    external_id: str
    title: str | None
    metadata: dict[str, Any]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    bytes: int = Field(description="its text's size in UTF-8 bytes (`GET /v1/documents/{external_id}/content`)")


class DocumentsPage(Out):
    documents: list[ListedDocument] = Field(description="in `external_id` order")
    next_cursor: str | None = Field(description="pass it as `cursor` for the next page; null: the walk is complete")


class ContentOut(Out):
    document_id: int
    external_id: str
    title: str | None
    text: str = Field(description="the text as it was sent")


class SearchHit(Out):
    """Every key but `thread_id` and `matched_messages` is there unless `fields` leaves it out."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda schema: schema.pop("required", None))

    document_id: int
    external_id: str
    chunk_id: int
    text: str
    score: float
    thread_id: int | None = Field(None, description="a hit on e-mail (`email:<message id>`): its thread now; "
                                  "absent on other documents")
    matched_messages: int | None = Field(None, description="`group_by: thread`: how many of the thread's messages "
                                         "are among the candidates read (absent on other documents)")


class AttachmentOut(Out):
    filename: str | None
    content_type: str
    size: int = Field(description="decoded bytes")
    indexed: bool = Field(description="text attachments are indexed, binary ones are not")


class EmailOut(Out):
    message_id: str
    thread_id: int = Field(description="its thread now (`GET /v1/threads/{id}`); merges change it")
    subject: str | None
    from_: str | None = Field(alias="from", serialization_alias="from")
    to: list[str]
    cc: list[str]
    date: str | None = Field(json_schema_extra={"format": "date-time"},
                             description="the Date header in UTC; null when missing or unreadable (see `notes`)")
    in_reply_to: str | None
    references: list[str] = Field(description="References in order, then In-Reply-To if not among them")
    attachments: list[AttachmentOut]
    notes: list[str] = Field(description="what could not be read, e.g. `no Message-ID`, an unparseable Date")
    synthetic_id: bool = Field(description="the message had no usable Message-ID: its id is derived from its content")


class ThreadMessageOut(Out):
    message_id: str
    parent: str | None = Field(description="the message it replies to (a ghost's id when that one is not stored)")
    depth: int
    ghost: bool = Field(description="referenced by the thread's messages but not stored")
    subject: str | None
    from_: str | None = Field(alias="from", serialization_alias="from")
    date: str | None = Field(json_schema_extra={"format": "date-time"})


class ThreadOut(Out):
    thread_id: int = Field(description="the thread answered: the one asked for, or the one it was merged into")
    subject: str | None = Field(description="the subject of its oldest message")
    message_count: int = Field(description="messages stored in it (ghosts not counted)")
    participants: list[str] = Field(description="everyone who wrote in it, by their first message")
    first_at: str | None = Field(json_schema_extra={"format": "date-time"},
                                 description="the earliest Date of its messages; null when none has a date")
    last_at: str | None = Field(json_schema_extra={"format": "date-time"},
                                description="the latest Date of its messages; null when none has a date")
    messages: list[ThreadMessageOut] = Field(description="depth-first, oldest sibling first")


class SearchOut(Out):
    results: list[SearchHit]
    next_cursor: str | None = Field(description="send it as `cursor` with the same search for the next hits; null: "
                                    "no more, or the walk reached the tier's `k`")
    cached: bool = Field(description="answered from the cache (never staler than the company's last ingest)")
    took_ms: float


class HealthOut(Out):
    status: Literal["ok"]


class ReadyOut(Out):
    status: Literal["ready", "not ready"]
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable (serving uncached)"]


class WorkerOut(Out):
    pid: int
    metrics_port: int | None
    uptime_seconds: float


class WorkersOut(Out):
    replicas: int
    running: int
    stopping: int
    restarts: int = Field(description="workers restarted after dying unexpectedly, since the pool started")
    last_exit: str | None = Field(None, description="the last unexpected death, one sentence")
    last_exit_at: float | None = Field(None, description="when it happened, unix seconds")
    workers: list[WorkerOut]


class WorkersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: JsonInt = Field(ge=0, le=MAX_WORKERS, description="worker processes wanted")
