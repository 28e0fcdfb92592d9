"""``/v1/search``: the hot path, in one threadpool hop.

The route refuses a request without a key on the event loop (``screen``), reads the body there
and does everything else in one worker thread: the key lookup and rate limit (``authenticate`` in
its two halves: ``admit``, then ``verify``), parsing and validating the body (``read_json``), the
search; the key lookup and the search's SQL on one checkout of the pool. A slow Redis must not
block the event loop either. It declares no FastAPI dependency or body parameter, on purpose: a sync
dependency would cost a second hop, and FastAPI solving dependencies and reading a declared body
costs this route a fifth of its CPU on a cached answer. The body and security are declared to
OpenAPI by ``json_body`` and ``TENANT_AUTH``. A cached answer is sent as the stored bytes
(``orjson.Fragment``), never parsed and re-encoded.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from core.api.body import json_body, read_json, resource_router
from core.api.deps import TENANT_AUTH, Caller, admit, caller_of, charge_ahead, screen, services_of, verify
from core.api.errors import ApiError, invalid_cursor, responses, validation_error
from core.api.intake import refuse_quota
from core.api.models import SearchOut
from core.api.services import Services
from core.cursor import CursorRefused
from core.db import read_connection
from core.search.ahead import read_ahead, remember_version
from core.search.fusion import Ranking
from core.search.page import FIELDS_PATTERN, UnknownField, parse_fields
from core.search.retrieve import Mode, SearchRequest, search
from core.tiers import k_quota

router = resource_router(tags=["search"])


class OrjsonResponse(JSONResponse):
    """JSON by orjson: faster, and it embeds ``orjson.Fragment`` (cached results) as they are."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def hit_fields(query: str | None) -> tuple[tuple[str, ...] | None, ApiError | None]:
    """The ``fields`` query parameter: (the fields, None) or (None, the 400 to raise once authenticated)."""
    try:
        return parse_fields(query), None
    except UnknownField as exc:
        return None, ApiError(400, "unknown_field", str(exc))


def answer(services: Services, caller: Caller, content_type: str | None, body: bytes,
           fields_query: str | None) -> dict[str, Any]:
    """Authenticate, validate, search (blocking: the route's one worker thread). For a key this
    process verified recently, the cache is asked and the rate limit charged while the database
    authenticates, in one round trip (``core.search.ahead``)."""
    settings, cache = services.settings, services.cache
    ttl = cache.setting("ttl_search", settings.search_cache_ttl_seconds)
    auth_ttl = cache.setting("ttl_auth", settings.auth_cache_ttl_seconds)
    ranking = Ranking.of(settings)
    fields, refused = hit_fields(fields_query)
    ahead = None if refused is not None else read_ahead(
        cache, caller.key, auth_ttl, ttl, lambda: read_json(content_type, body, SearchRequest), ranking, fields,
        charge_ahead(services))
    try:
        admitted = admit(services, caller)  # its refusals before a connection is checked out
        # the key lookup's connection is the search's too (with read replicas the search may read
        # elsewhere: then each checks out its own, as the primary's pool is not held during a replica's read)
        with nullcontext(None) if services.replicas is not None else read_connection(services.pool) as conn:
            principal = verify(services, caller, admitted, None if ahead is None else ahead.charge, conn)
            remember_version(cache, principal, auth_ttl)
            if refused is not None:
                raise refused
            if ahead is not None and ahead.error is not None:
                raise ahead.error
            req = ahead.request if ahead is not None and ahead.request is not None else \
                read_json(content_type, body, SearchRequest)
            if req.k > settings.search_max_k:
                raise validation_error(f"k: at most {settings.search_max_k}")
            tier = services.tiers.tier_of(principal.tier)[1]
            too_many = k_quota(tier, req.k)
            if too_many is not None:
                raise refuse_quota(too_many)
            try:
                found = search(services.pool, cache, services.embedder, principal, req, ttl,
                               settings.vector_exact_max_rows, settings.search_group_max_candidates,
                               services.replicas, ranking, ahead=None if ahead is None else ahead.pending,
                               fields=fields, depth=min(settings.search_max_k, tier.max_k), conn=conn)
            except CursorRefused as exc:
                raise invalid_cursor(exc) from None
    finally:
        if ahead is not None:
            ahead.close()
    if req.cursor is None:  # first pages: what `opsctl cache warm` replays
        cache.log_query(principal.company_id, req.canonical(), time.time())
    cached = bool(found["cached"])
    services.usage.count(principal.company_id, searches=1, cache_hits=int(cached), cache_misses=int(not cached),
                         embeddings=int(not cached and req.mode is not Mode.keyword))
    return found


FIELDS_PARAMETER = {
    "name": "fields", "in": "query", "required": False,
    "description": "the keys of each hit to answer, comma-separated (e.g. `external_id,score`); without `text` "
                   "the chunks' texts are not read at all. Unknown: 400 `unknown_field`",
    "schema": {"type": "string", "pattern": FIELDS_PATTERN}}


@router.post("/v1/search", response_model=SearchOut, summary="Search the company's documents",
             responses=responses(400, 401, 403, 413, 415, 422, 429, 503),
             openapi_extra={**json_body(SearchRequest), **TENANT_AUTH, "parameters": [FIELDS_PARAMETER]})
async def post_search(request: Request) -> OrjsonResponse:
    """`hybrid` fuses vector and keyword rankings (reciprocal rank fusion); `vector` is cosine
    similarity; `keyword` matches any of the query's words and ranks by BM25 (the company's own
    word statistics). Only the caller's company is searched. Pages: send `next_cursor` back as
    `cursor` (same query) for the next hits, none already given, up to the tier's `k` in all."""
    services, caller = services_of(request), caller_of(request)
    screen(services, caller)
    body = await request.body()
    return OrjsonResponse(await run_in_threadpool(answer, services, caller, request.headers.get("content-type"), body,
                                                  request.query_params.get("fields")))
