"""Queueing documents and messages, for every route that takes them in (``/v1/documents``,
``/v1/emails``, webhooks): this process's limits on what a request may hold, and the durable store
(blocking: call it in the route's worker thread)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core import metrics
from core.api.errors import validation_error
from core.ingest.accept import DocumentIn, accept_documents
from core.ingest.mail import accept_email, email_external_id
from core.mail.message import message_id_of

if TYPE_CHECKING:
    from core.api.services import Services
    from core.config import Settings


def check_text_length(text: str, limit: int, where: str) -> None:
    if len(text) > limit:
        raise validation_error(f"{where}: longer than {limit} characters")


def check_documents(settings: Settings, docs: list[DocumentIn]) -> None:
    """``docs`` within ``max_documents_per_request`` and ``max_text_chars``, else a 422 naming the field."""
    if len(docs) > settings.max_documents_per_request:
        raise validation_error(f"documents: at most {settings.max_documents_per_request} per request, "
                               f"got {len(docs)}")
    for i, doc in enumerate(docs):
        check_text_length(doc.text, settings.max_text_chars, f"documents.{i}.text")


def store(services: Services, company_id: int, docs: list[DocumentIn], source: str) -> list[int]:
    """Queue ``docs`` durably in one transaction; their job ids."""
    with services.pool.connection() as conn:
        job_ids = accept_documents(conn, company_id, docs, source)
    metrics.INGEST_ACCEPTED.labels("api" if source == "api" else "webhook").inc(len(docs))
    return job_ids


def store_email(services: Services, company_id: int, raw: bytes, source: str) -> dict[str, Any]:
    """Queue one raw message durably unless the company has it stored or queued already; the answer
    of ``POST /v1/emails`` (and of a webhook, with ``external_id``). Only the headers are read here."""
    if not raw:
        raise validation_error("the body is empty: send one raw message (RFC 5322)")
    message_id, _ = message_id_of(raw)
    with services.pool.connection() as conn:
        accepted = accept_email(conn, company_id, message_id, raw, source)
    if not accepted.duplicate:
        metrics.INGEST_ACCEPTED.labels("email" if source == "api" else "webhook").inc()
    return {"accepted": 0 if accepted.duplicate else 1,
            "job_ids": [] if accepted.job_id is None else [accepted.job_id],
            "message_id": message_id, "duplicate": accepted.duplicate,
            "external_id": email_external_id(message_id)}
