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


class WebhookAcceptedOut(AcceptedOut):
    external_id: str = Field(description="the document the event became: `<source>:<event id or body SHA-256>`")


class JobOut(Out):
    id: int
    status: Literal["queued", "running", "done", "failed", "dead"] = Field(
        description="`failed`: waiting to be retried; `dead`: out of attempts")
    attempts: int
    external_id: str
    op: Literal["upsert", "delete"]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    finished_at: str | None = Field(json_schema_extra={"format": "date-time"})
    error: str | None = Field(None, description="the last attempt's error")
    outcome: str | None = Field(None, description="what the worker did: `created`, `updated`, `unchanged`, "
                                "`deleted`, `nothing to delete`, `superseded by job <id>`")


class DocumentOut(Out):
    document_id: int
    external_id: str
    title: str | None
    metadata: dict[str, Any]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    chunks: int
    cached: bool


class SearchHit(Out):
    document_id: int
    external_id: str
    chunk_id: int
    text: str
    score: float


class SearchOut(Out):
    results: list[SearchHit]
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
