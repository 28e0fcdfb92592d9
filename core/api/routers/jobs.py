"""``/v1/jobs/{id}``: where an ingest job stands."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import TENANT_AUTH, PrincipalDep, ServicesDep
from core.api.errors import ApiError, responses
from core.api.models import JobOut
from core.ingest.accept import job_status

router = resource_router(prefix="/v1/jobs", tags=["jobs"])

MAX_BIGINT = 2**63 - 1
JOB_ID = re.compile(r"\A[1-9][0-9]{0,18}\Z")


def job_id_digits(value: Any) -> Any:
    """A job id as it is written: decimal digits only (Python's int() also reads " 1", "1_000", "01")."""
    if isinstance(value, str) and not JOB_ID.match(value):
        raise ValueError("a job id is a positive integer in decimal digits, e.g. 42")
    return value


JobId = Annotated[int, Path(ge=1, le=MAX_BIGINT), BeforeValidator(job_id_digits)]


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
