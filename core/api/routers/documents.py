"""``/v1/documents``: queue documents (202 once durable), read one's metadata, queue a delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from core import metrics
from core.api.body import resource_router
from core.api.deps import TENANT_AUTH, PrincipalDep, ServicesDep
from core.api.errors import ApiError, responses, validation_error
from core.api.models import AcceptedOut, DocumentOut
from core.api.services import Services
from core.documents import get_document
from core.ingest.accept import MAX_EXTERNAL_ID, DocumentIn, DocumentsIn, accept_delete, accept_documents
from core.inputs import NO_NUL_PATTERN, no_nul

router = resource_router(prefix="/v1/documents", tags=["documents"])


class ExternalIdConvertor(Convertor[str]):
    """Any non-empty rest of the path, newlines included (Starlette's ``path`` stops at one, and its
    ``$`` would match before a trailing newline: ``/v1/documents/a%0A`` would name ``a``)."""

    regex = "[\\s\\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("external_id", ExternalIdConvertor())

ExternalId = Annotated[str, Path(min_length=1, max_length=MAX_EXTERNAL_ID, description="the document's `external_id`, "
                                 "URL-encoded", json_schema_extra={"pattern": NO_NUL_PATTERN}), AfterValidator(no_nul)]


def check_text_length(text: str, limit: int, where: str) -> None:
    if len(text) > limit:
        raise validation_error(f"{where}: longer than {limit} characters")


async def checked_documents(body: DocumentsIn, services: ServicesDep) -> DocumentsIn:
    """The body, within this process's limits (``max_documents_per_request``, ``max_text_chars``)."""
    settings = services.settings
    if len(body.documents) > settings.max_documents_per_request:
        raise validation_error(f"documents: at most {settings.max_documents_per_request} per request, "
                               f"got {len(body.documents)}")
    for i, doc in enumerate(body.documents):
        check_text_length(doc.text, settings.max_text_chars, f"documents.{i}.text")
    return body


def store(services: Services, company_id: int, docs: list[DocumentIn], source: str) -> list[int]:
    """Queue ``docs`` durably in one transaction; their job ids (blocking)."""
    with services.pool.connection() as conn:
        job_ids = accept_documents(conn, company_id, docs, source)
    metrics.INGEST_ACCEPTED.labels("api" if source == "api" else "webhook").inc(len(docs))
    return job_ids


@router.post("", status_code=202, response_model=AcceptedOut, summary="Queue documents for ingest",
             responses=responses(400, 401, 413, 415, 422, 429, 503), openapi_extra=TENANT_AUTH)
async def post_documents(principal: PrincipalDep, body: Annotated[DocumentsIn, Depends(checked_documents)],
                         services: ServicesDep) -> dict[str, Any]:
    """Answered only once every document is durable: a 202 survives `kill -9` of any process.
    Re-sending an `external_id` with the same content is a no-op (its job again); new content, an update."""
    job_ids = await run_in_threadpool(store, services, principal.company_id, body.documents, "api")
    return {"accepted": len(body.documents), "job_ids": job_ids}


@router.get("/{external_id:external_id}", response_model=DocumentOut, summary="One document's metadata",
            responses=responses(400, 401, 404, 422, 429, 503), openapi_extra=TENANT_AUTH)
async def get_document_metadata(principal: PrincipalDep, external_id: ExternalId,
                                services: ServicesDep) -> dict[str, Any]:
    """From the cache while the company's data has not changed since (never staler than its last ingest)."""
    settings = services.settings

    def read() -> tuple[dict[str, Any] | None, bool]:
        ttl = services.cache.setting("ttl_document", settings.document_cache_ttl_seconds)
        return get_document(services.pool, services.cache, principal, external_id, ttl)

    found, cached = await run_in_threadpool(read)
    if found is None:
        raise ApiError(404, "not_found", f"no document {external_id!r}")
    return {**found, "cached": cached}


@router.delete("/{external_id:external_id}", status_code=202, response_model=AcceptedOut, summary="Queue a delete",
               responses=responses(400, 401, 422, 429, 503), openapi_extra=TENANT_AUTH)
async def delete_document(principal: PrincipalDep, external_id: ExternalId,
                          services: ServicesDep) -> dict[str, Any]:
    """Durable like an ingest; deleting a document that does not exist is a no-op job."""

    def delete() -> int:
        with services.pool.connection() as conn:
            return accept_delete(conn, principal.company_id, external_id)

    return {"accepted": 1, "job_ids": [await run_in_threadpool(delete)]}
