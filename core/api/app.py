"""The app factory: one FastAPI app per ``Services``, a router per resource, one error module."""

from __future__ import annotations

from fastapi import FastAPI

from core.api import errors, openapi
from core.api.middleware import BodyLimitMiddleware, MetricsMiddleware, Utf8UrlMiddleware
from core.api.routers import admin, documents, health, jobs, search, webhooks
from core.api.services import Services

ROUTERS = (documents.router, webhooks.router, jobs.router, search.router, admin.router, health.router)


def create_app(services: Services) -> FastAPI:
    """The core's HTTP API over ``services``; serve it with uvicorn (``lifespan="off"``: no startup work)."""
    app = FastAPI(title="opsctl core", version="1", docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  strict_content_type=False)  # a body without Content-Type is JSON; JsonRoute refuses other types
    app.state.services = services
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    openapi.install(app, services.settings)
    # outermost last: the size limit sees every byte, the metrics every answer (the 400 for a bad URL too)
    app.add_middleware(Utf8UrlMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=services.settings.max_body_bytes)
    return app
