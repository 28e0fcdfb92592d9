"""``/v1/documents``: queue documents (202 once durable), list them, read one's metadata or text, queue a delete.

A path ending in a literal ``/content`` names the stored text of the document before it
(``GET /v1/documents/a/b/content``: the text of ``a/b``); a document whose external id itself ends
in ``/content`` is named with that slash encoded (``/v1/documents/notes%2Fcontent``): the rule is
read from the path as sent (``DocumentRoute``), before percent-decoding.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Match

from core.api.body import JsonRoute, json_body, read_json
from core.api.deps import TENANT_AUTH, Caller, PrincipalDep, ServicesDep, authenticate, caller_of, screen, services_of
from core.api.errors import ApiError, invalid_cursor, responses
from core.api.intake import check_documents, lane_of, store
from core.api.models import AcceptedOut, ContentOut, DocumentOut, DocumentsPage
from core.api.services import Services
from core.cursor import MAX_LISTING_CURSOR_CHARS, CursorRefused
from core.documents import MAX_LIST_LIMIT, TEXT_SLICE, get_content, get_document, list_documents, text_pieces
from core.ingest.accept import MAX_EXTERNAL_ID, DocumentsIn, accept_delete, external_id_value
from core.ingest.fair import PRIORITY_HEADER
from core.inputs import NON_BLANK_PATTERN
from core.negotiate import prefers

PREFIX = "/v1/documents"
CONTENT = "/content"


def names_content(scope: MutableMapping[str, Any]) -> bool:
    """Whether the path, as sent (not percent-decoded), names a document's text: ``<prefix>/X/content``."""
    raw = (scope.get("raw_path") or b"").split(b"?", 1)[0]
    prefix = PREFIX.encode() + b"/"
    if not raw.startswith(prefix):  # an encoded prefix: only the decoded path is there to read
        raw = scope["path"].encode("utf-8", "surrogateescape")
    rest = raw[len(prefix):]
    return len(rest) > len(CONTENT) and rest.endswith(CONTENT.encode())


class DocumentRoute(JsonRoute):
    """A route of one document: the ``/content`` one matches only a path naming text (``names_content``),
    the others only one that does not."""

    def matches(self, scope: MutableMapping[str, Any]) -> tuple[Match, MutableMapping[str, Any]]:
        match, child = super().matches(scope)
        if match is not Match.NONE and "{external_id" in self.path and \
                names_content(scope) != self.path.endswith(CONTENT):
            return Match.NONE, {}
        return match, child


router = APIRouter(prefix=PREFIX, tags=["documents"], route_class=DocumentRoute)


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


@router.get("", response_model=DocumentsPage, summary="List the company's documents",
            responses=responses(400, 401, 422, 429, 503), openapi_extra=TENANT_AUTH)
async def get_documents(principal: PrincipalDep, services: ServicesDep,
                        cursor: Annotated[str | None, Query(max_length=MAX_LISTING_CURSOR_CHARS, description=
                                          "`next_cursor` of the page before (none: the first page)")] = None,
                        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="documents per page")] = 100,
                        ) -> dict[str, Any]:
    """In `external_id` order, keyset-paginated: pass each answer's `next_cursor` back as `cursor` until
    it is null. A document that exists for the whole walk is listed exactly once, whatever is ingested,
    updated or deleted meanwhile (an update keeps its place: the external id is the document's identity);
    one created or deleted during the walk may or may not be. A cursor is the caller's company's:
    another's, or an edited one, is a 400 `invalid_cursor`."""

    def read() -> dict[str, Any]:
        try:
            return list_documents(services.pool, principal.company_id, cursor, limit)
        except CursorRefused as exc:
            raise invalid_cursor(exc) from None

    return await run_in_threadpool(read)


TEXT_PLAIN = "text/plain; charset=utf-8"


def json_pieces(document_id: int, external_id: str, title: str | None, text: str) -> Iterator[bytes]:
    """``ContentOut`` as JSON, the text escaped a slice at a time (slices of a str never split a character)."""
    head = orjson.dumps({"document_id": document_id, "external_id": external_id, "title": title})
    yield head[:-1] + b',"text":"'
    yield from text_pieces(text, lambda piece: orjson.dumps(piece)[1:-1])
    yield b'"}'


@router.get("/{external_id:external_id}/content", response_model=ContentOut,
            summary="One document's stored text", openapi_extra=TENANT_AUTH, responses={
                200: {"description": "the text as stored (`text/plain; charset=utf-8`), or with `Accept: "
                      "application/json` preferred, `ContentOut`",
                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                **responses(400, 401, 404, 422, 429, 503)})
async def get_document_content(principal: PrincipalDep, external_id: ExternalId, services: ServicesDep,
                               request: Request) -> Response:
    """The text as it was sent (what search chunks come from). `text/plain` unless `Accept` weighs
    `application/json` higher; a large text is streamed (chunked), encoded a slice at a time.
    Compressed like any answer when `Accept-Encoding` asks."""
    found = await run_in_threadpool(get_content, services.pool, principal.company_id, external_id)
    if found is None:
        raise ApiError(404, "not_found", f"no document {external_id!r}")
    document_id, title, text = found
    as_json = prefers(request.headers.get("accept"), ("text/plain", "application/json")) == "application/json"
    pieces = json_pieces(document_id, external_id, title, text) if as_json else text_pieces(text)
    media = "application/json" if as_json else TEXT_PLAIN
    if len(text) <= TEXT_SLICE:
        return Response(b"".join(pieces), media_type=media)
    return StreamingResponse(pieces, media_type=media)


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
