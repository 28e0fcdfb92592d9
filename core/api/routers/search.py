"""``/v1/search``: the hot path, in one threadpool hop.

The route is a plain ``def``: FastAPI runs it in one worker thread, where the key lookup, the rate
limit and the search happen together (a slow Redis must not block the event loop either). Its
dependencies are ``async`` and do no I/O, so they add no hop. A cached answer is sent as the
stored bytes (``orjson.Fragment``), never parsed and re-encoded.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from core.api.body import JsonRoute
from core.api.deps import KeyedCaller, ServicesDep, authenticate
from core.api.errors import responses, validation_error
from core.api.models import SearchOut
from core.search.retrieve import SearchRequest, search

router = APIRouter(tags=["search"], route_class=JsonRoute)


class OrjsonResponse(JSONResponse):
    """JSON by orjson: faster, and it embeds ``orjson.Fragment`` (cached results) as they are."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def checked_search(body: SearchRequest, services: ServicesDep) -> SearchRequest:
    """The body, within this process's ``search_max_k``."""
    if body.k > services.settings.search_max_k:
        raise validation_error(f"k: at most {services.settings.search_max_k}")
    return body


@router.post("/v1/search", response_model=SearchOut, summary="Search the company's documents",
             responses=responses(400, 401, 413, 415, 422, 429, 503))
def post_search(caller: KeyedCaller, req: Annotated[SearchRequest, Depends(checked_search)],
                services: ServicesDep) -> OrjsonResponse:
    """`hybrid` fuses vector and keyword rankings (reciprocal rank fusion); `vector` is cosine
    similarity; `keyword` matches any of the query's words. Only the caller's company is searched."""
    principal = authenticate(services, caller)
    settings = services.settings
    ttl = services.cache.setting("ttl_search", settings.search_cache_ttl_seconds)
    found = search(services.pool, services.cache, services.embedder, principal, req, ttl,
                   settings.vector_exact_max_rows)
    services.cache.log_query(principal.company_id, req.canonical(), time.time())
    return OrjsonResponse(found)
