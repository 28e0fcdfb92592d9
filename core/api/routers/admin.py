"""``/admin/workers``: the embedded scale target (the local worker pool), behind the admin token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from core.api.body import json_body, read_json, resource_router
from core.api.deps import ADMIN_AUTH, Admin, ServicesDep
from core.api.errors import ApiError, responses
from core.api.models import WorkersIn, WorkersOut
from core.api.services import Services, WorkerPoolControl

# the token first (``Admin``, on the event loop): a request without it is refused before its body is read
router = resource_router(prefix="/admin", tags=["admin"], dependencies=[Admin],
                         responses=responses(400, 401, 403, 409, 429))


def control_of(services: Services) -> WorkerPoolControl:
    if services.workers is None:
        raise ApiError(409, "no_local_pool",
                       "this API process manages no worker pool; scale the worker Deployment instead")
    return services.workers


async def pool_control(services: ServicesDep) -> WorkerPoolControl:
    return control_of(services)


PoolControl = Annotated[WorkerPoolControl, Depends(pool_control)]


@router.get("/workers", response_model=WorkersOut, summary="The worker pool", openapi_extra=ADMIN_AUTH)
async def get_workers(control: PoolControl) -> dict[str, Any]:
    return control.status()


def resize(services: Services, content_type: str | None, body: bytes) -> dict[str, Any]:
    """Parse, then resize (blocking: the route's one worker thread): a bad body is a 4xx even
    where there is no pool to resize."""
    wanted = read_json(content_type, body, WorkersIn)
    return control_of(services).resize(wanted.replicas)


@router.put("/workers", response_model=WorkersOut, summary="Resize the worker pool",
            responses=responses(413, 415, 422), openapi_extra={**json_body(WorkersIn), **ADMIN_AUTH})
async def put_workers(request: Request, services: ServicesDep) -> dict[str, Any]:
    body = await request.body()
    return await run_in_threadpool(resize, services, request.headers.get("content-type"), body)
