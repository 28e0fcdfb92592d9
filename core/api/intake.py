"""Queueing documents, for every route that takes them in (``/v1/documents``, webhooks; e-mail next):
this process's limits on what a request may hold, and the durable store (blocking: call it in the
route's worker thread)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import metrics
from core.api.errors import validation_error
from core.ingest.accept import DocumentIn, accept_documents

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
