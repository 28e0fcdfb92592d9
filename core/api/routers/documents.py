"""``/v1/documents``: queue documents (202 once durable), read one's metadata, queue a delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from core.api.body import json_body, read_json, resource_router
from core.api.deps import TENANT_AUTH, Caller, PrincipalDep, ServicesDep, authenticate, caller_of, screen, services_of
from core.api.errors import ApiError, responses
from core.api.intake import check_documents, lane_of, store
from core.api.models import AcceptedOut, DocumentOut
from core.api.services import Services
from core.documents import get_document
from core.ingest.accept import MAX_EXTERNAL_ID, DocumentsIn, accept_delete, external_id_value
from core.ingest.fair import PRIORITY_HEADER
from core.inputs import NON_BLANK_PATTERN

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

# the rules of DocumentIn.external_id: not blank, no NUL (a path may name no document a POST could store)
ExternalId = Annotated[str, Path(min_length=1, max_length=MAX_EXTERNAL_ID, description="the document's `external_id`, "
                                 "URL-encoded", json_schema_extra={"pattern": NON_BLANK_PATTERN}),
                       AfterValidator(external_id_value)]


def queue_documents(services: Services, caller: Caller, content_type: str | None, body: bytes,
                    priority: str | None = None) -> dict[str, Any]:
    """Authenticate, parse, check, store (blocking: the route's one worker thread); ``priority``: the
    ``Ingest-Priority`` header."""
    principal = authenticate(services, caller)
    docs = read_json(content_type, body, DocumentsIn).documents
    check_documents(services.settings, docs)
    lane = lane_of(services.settings, len(docs), priority)
    return {"accepted": len(docs), "job_ids": store(services, principal.company_id, principal.tier, docs, "api", lane)}


@router.post("", status_code=202, response_model=AcceptedOut, summary="Queue documents for ingest",
             responses=responses(400, 401, 403, 413, 415, 422, 429, 503),
             openapi_extra={**json_body(DocumentsIn), **TENANT_AUTH})
async def post_documents(request: Request) -> dict[str, Any]:
    """Answered only once every document is durable: a 202 survives `kill -9` of any process.
    Re-sending an `external_id` with the same content is a no-op (its job again); new content, an update.

    One document is queued as interactive, more as bulk (`ingest_interactive_max_documents`): the
    company's interactive jobs go before its bulk jobs queued up to `ingest_bulk_delay_seconds`
    earlier. The header `Ingest-Priority: interactive|bulk` says which (`opsctl ingest` sends bulk)."""
    services, caller = services_of(request), caller_of(request)
    screen(services, caller)
    body = await request.body()
    return await run_in_threadpool(queue_documents, services, caller, request.headers.get("content-type"), body,
                                   request.headers.get(PRIORITY_HEADER))


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
