"""``/v1/jobs/{id}``: where an ingest job stands."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import TENANT_AUTH, PrincipalDep, ServicesDep
from core.api.errors import ApiError, responses
from core.api.models import JobOut
from core.api.params import JobId
from core.ingest.accept import job_status

router = resource_router(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut, summary="An ingest job's status",
            responses=responses(400, 401, 404, 422, 429, 503), openapi_extra=TENANT_AUTH)
async def get_job(principal: PrincipalDep, job_id: JobId,
                  services: ServicesDep) -> dict[str, Any]:
    """A job of the caller's company (another company's job is a 404)."""

    def status() -> dict[str, Any] | None:
        with services.pool.connection() as conn:
            found = job_status(conn, principal.company_id, job_id)
            conn.rollback()
        return found

    found = await run_in_threadpool(status)
    if found is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return found
