"""``/admin/workers``: the embedded scale target (the local worker pool), behind the admin token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import ADMIN_AUTH, Admin, ServicesDep
from core.api.errors import ApiError, responses
from core.api.models import WorkersIn, WorkersOut
from core.api.services import WorkerPoolControl

router = resource_router(prefix="/admin", tags=["admin"], dependencies=[Admin],
                         responses=responses(400, 401, 403, 409, 429))


async def pool_control(services: ServicesDep) -> WorkerPoolControl:
    if services.workers is None:
        raise ApiError(409, "no_local_pool",
                       "this API process manages no worker pool; scale the worker Deployment instead")
    return services.workers


PoolControl = Annotated[WorkerPoolControl, Depends(pool_control)]


@router.get("/workers", response_model=WorkersOut, summary="The worker pool", openapi_extra=ADMIN_AUTH)
async def get_workers(control: PoolControl) -> dict[str, Any]:
    return control.status()


@router.put("/workers", response_model=WorkersOut, summary="Resize the worker pool",
            responses=responses(413, 415, 422), openapi_extra=ADMIN_AUTH)
async def put_workers(control: PoolControl, wanted: WorkersIn) -> dict[str, Any]:
    return await run_in_threadpool(control.resize, wanted.replicas)
