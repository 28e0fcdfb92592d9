"""The app factory: one FastAPI app per ``Services``, a router per resource, one error module."""

from __future__ import annotations

from fastapi import FastAPI

from core.api import errors, openapi
from core.api.compression import CompressionMiddleware
from core.api.middleware import MetricsMiddleware, RateLimitHeadersMiddleware, RequestGuardMiddleware
from core.api.routers import admin, documents, emails, health, jobs, search, threads, webhooks
from core.api.services import Services

ROUTERS = (documents.router, emails.router, threads.router, webhooks.router, jobs.router, search.router, admin.router,
           health.router)


def create_app(services: Services) -> FastAPI:
    """The core's HTTP API over ``services``; serve it with uvicorn (``lifespan="off"``: no startup work)."""
    # no slash redirects: a 307 built from the Host header is an open redirect, and not the error shape
    app = FastAPI(title="opsctl core", version="1", docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  redirect_slashes=False)
    app.state.services = services
    errors.install(app)
    for router in ROUTERS:
        # the routes themselves, not include_router: FastAPI (0.165) keeps an included router as a
        # branch resolved on every request, which cost /v1/search ~70 Python calls per request
        app.router.routes.extend(router.routes)
    openapi.install(app, services.settings)
    # added last is outermost: the metrics see every answer, the guard's refusals included; the
    # guard sees every request before any route and every byte of its body; compression is innermost
    settings = services.settings
    app.add_middleware(CompressionMiddleware, min_bytes=settings.compress_min_bytes,
                       encodings=settings.compress_encodings)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(RequestGuardMiddleware, limit=services.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, routes=app.router.routes)
    return app
