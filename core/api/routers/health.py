"""``/healthz`` (alive), ``/readyz`` (database reachable), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import ServicesDep
from core.api.errors import responses
from core.api.models import HealthOut, ReadyOut
from core.api.services import Services

router = resource_router(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness", responses=responses(400))
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


def readiness(services: Services) -> tuple[bool, bool]:
    try:
        with services.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
            conn.rollback()
        db_ok = True
    except Exception:
        db_ok = False
    return db_ok, services.cache.ping()


@router.get("/readyz", response_model=ReadyOut, summary="Readiness: the database answers",
            responses={503: {"model": ReadyOut, "description": "the database does not answer"},
                       **responses(400)})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Redis down is still ready: search and ingest go on uncached."""
    db_ok, redis_ok = await run_in_threadpool(readiness, services)
    body = {"status": "ready" if db_ok else "not ready", "database": "ok" if db_ok else "unavailable",
            "redis": "ok" if redis_ok else "unavailable (serving uncached)"}
    return JSONResponse(body, status_code=200 if db_ok else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus exposition", responses={
    200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
          "description": "the process's metrics, Prometheus text format"}, **responses(400)})
async def get_metrics() -> Response:
    data = await run_in_threadpool(generate_latest, REGISTRY)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
