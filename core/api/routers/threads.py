"""``/v1/threads/{id}``: a thread of the caller's company as a tree."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import TENANT_AUTH, PrincipalDep, ServicesDep
from core.api.errors import ApiError, responses
from core.api.models import ThreadOut
from core.api.params import ThreadId
from core.emails import get_thread

router = resource_router(prefix="/v1/threads", tags=["emails"])


@router.get("/{thread_id}", response_model=ThreadOut, summary="An e-mail thread as a tree",
            responses=responses(400, 401, 404, 422, 429, 503), openapi_extra=TENANT_AUTH)
async def get_thread_route(principal: PrincipalDep, thread_id: ThreadId, services: ServicesDep) -> dict[str, Any]:
    """Its messages depth-first, oldest sibling first, each with its parent and depth; a message
    referenced but not stored is a ghost where it joins branches. A thread merged into another
    (a message linking them arrived) answers with the survivor: `thread_id` says which. Another
    company's thread is a 404."""
    found = await run_in_threadpool(get_thread, services.pool, principal.company_id, thread_id)
    if found is None:
        raise ApiError(404, "not_found", f"no thread {thread_id}")
    return found
