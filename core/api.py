"""The core's HTTP API (v1): ingest, jobs, search, health, metrics and the admin worker pool.

Every error is JSON ``{"error": {"code", "message"}}``; every bad input gets a 4xx, and since
each write is one transaction, a refused request writes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import metrics
from core.cache import Cache
from core.db import read_connection
from core.documents import get_document
from core.ingest.accept import DocumentsIn, accept_delete, accept_documents, job_status
from core.ingest.webhooks import SOURCE_RE, event_document
from core.ratelimit import RateLimiter, retry_after_header
from core.search.retrieve import SearchRequest, search
from core.tenants import Principal, company_secret, resolve_principal, verify_signature

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from core.config import Settings
    from core.embed import Embedder

log = logging.getLogger("core.api")
MAX_WORKERS = 64


class WorkerPoolControl(Protocol):
    def status(self) -> dict[str, Any]: ...
    def resize(self, replicas: int) -> dict[str, Any]: ...


@dataclass
class Services:
    settings: Settings
    pool: ConnectionPool
    cache: Cache
    embedder: Embedder
    workers: WorkerPoolControl | None = None

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.rate_limit_per_second, self.settings.rate_limit_burst)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class OrjsonResponse(JSONResponse):
    """JSON by orjson: faster, and it embeds ``orjson.Fragment`` (cached results) as they are."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_body(body: bytes, model: type[BaseModel]) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", f"request body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", _validation_message(exc)) from exc


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.limit
                except ValueError:
                    too_large = False
                if too_large:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send, drain=False)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, drain: bool = True) -> None:
        response = error_response(413, "body_too_large", f"request body exceeds {self.limit} bytes")
        await response(scope, receive, send)


class MetricsMiddleware:
    """``core_http_request_duration_seconds`` by route template (bounded cardinality)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.HTTP_DURATION.labels(template, scope.get("method", ""), str(status)).observe(
                time.perf_counter() - started
            )


class WorkersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=0, le=MAX_WORKERS)


def create_app(services: Services) -> FastAPI:
    settings = services.settings
    app = FastAPI(title="opsctl core", version="1", docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json")
    app.state.services = services

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, "body_too_large", f"request body exceeds {settings.max_body_bytes} bytes")

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return error_response(503, "database_unavailable", "the database is unavailable; retry later",
                              {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        from psycopg_pool import PoolTimeout

        if isinstance(exc, PoolTimeout):
            return error_response(503, "overloaded", "no database connection available; retry later",
                                  {"Retry-After": "1"})
        log.exception("unexpected error")
        return error_response(500, "internal", "internal error")

    def _principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "unauthorized", "missing API key: send Authorization: Bearer <key>")
        ttl = services.cache.setting("ttl_auth", settings.auth_cache_ttl_seconds)
        with read_connection(services.pool) as conn:
            principal = resolve_principal(conn, services.cache, key.strip(), ttl)
        if principal is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key")
        _rate_limit(principal.company_id)
        return principal

    def _rate_limit(company_id: int) -> None:
        wait = services.limiter.take(company_id, time.monotonic())
        if wait > 0:
            metrics.RATE_LIMITED.inc()
            raise ApiError(429, "rate_limited", "too many requests for this company; slow down",
                           {"Retry-After": retry_after_header(wait)})

    def _accept(principal_id: int, docs: list[Any], source: str) -> list[int]:
        with services.pool.connection() as conn:
            return accept_documents(conn, principal_id, docs, source)

    @app.post("/v1/documents", status_code=202)
    async def post_documents(request: Request) -> JSONResponse:
        principal = await run_in_threadpool(_principal, request)
        body = await request.body()
        payload: DocumentsIn = parse_body(body, DocumentsIn)
        docs = payload.documents
        if len(docs) > settings.max_documents_per_request:
            raise ApiError(422, "validation_error",
                           f"at most {settings.max_documents_per_request} documents per request, got {len(docs)}")
        for i, doc in enumerate(docs):
            if len(doc.text) > settings.max_text_chars:
                raise ApiError(422, "validation_error",
                               f"documents.{i}.text: longer than {settings.max_text_chars} characters")
        job_ids = await run_in_threadpool(_accept, principal.company_id, docs, "api")
        metrics.INGEST_ACCEPTED.labels("api").inc(len(docs))
        return JSONResponse({"accepted": len(docs), "job_ids": job_ids}, status_code=202)

    @app.get("/v1/documents/{external_id:path}")
    async def get_document_metadata(external_id: str, request: Request) -> JSONResponse:
        principal = await run_in_threadpool(_principal, request)
        if not external_id or len(external_id) > 512 or "\x00" in external_id:
            raise ApiError(422, "validation_error", "external_id must be 1 to 512 characters")

        def _read() -> tuple[dict[str, Any] | None, bool]:
            ttl = services.cache.setting("ttl_document", settings.document_cache_ttl_seconds)
            return get_document(services.pool, services.cache, principal, external_id, ttl)

        found, cached = await run_in_threadpool(_read)
        if found is None:
            raise ApiError(404, "not_found", f"no document {external_id!r}")
        return JSONResponse({**found, "cached": cached})

    @app.delete("/v1/documents/{external_id:path}", status_code=202)
    async def delete_document(external_id: str, request: Request) -> JSONResponse:
        principal = await run_in_threadpool(_principal, request)
        if not external_id or len(external_id) > 512 or "\x00" in external_id:
            raise ApiError(422, "validation_error", "external_id must be 1 to 512 characters")

        def _delete() -> int:
            with services.pool.connection() as conn:
                return accept_delete(conn, principal.company_id, external_id)

        job_id = await run_in_threadpool(_delete)
        return JSONResponse({"accepted": 1, "job_ids": [job_id]}, status_code=202)

    @app.post("/v1/webhooks/{source}", status_code=202)
    async def post_webhook(source: str, request: Request) -> JSONResponse:
        if not SOURCE_RE.match(source):
            raise ApiError(404, "not_found", "unknown webhook source: use [a-z0-9_.-], up to 64 characters")
        company_id = await run_in_threadpool(_webhook_company, request)
        body = await request.body()

        def _secret() -> str | None:
            with services.pool.connection() as conn:
                found = company_secret(conn, company_id)
                conn.rollback()
            return found[0] if found else None

        secret = await run_in_threadpool(_secret)
        if secret is None:
            raise ApiError(401, "unauthorized", "unknown company")
        problem = verify_signature(secret, request.headers.get("x-opsctl-signature"), body, time.time(),
                                   settings.webhook_tolerance_seconds)
        if problem:
            raise ApiError(401, "bad_signature", problem)
        try:
            doc = event_document(source, body)
        except UnicodeDecodeError as exc:
            raise ApiError(400, "invalid_encoding", f"event body is not valid UTF-8 (byte {exc.start})") from exc
        except ValidationError as exc:
            raise ApiError(422, "validation_error", _validation_message(exc)) from exc
        if len(doc.text) > settings.max_text_chars:
            raise ApiError(422, "validation_error", f"event text longer than {settings.max_text_chars} characters")
        job_ids = await run_in_threadpool(_accept, company_id, [doc], f"webhook:{source}")
        metrics.INGEST_ACCEPTED.labels("webhook").inc()
        return JSONResponse({"accepted": 1, "job_ids": job_ids, "external_id": doc.external_id}, status_code=202)

    def _webhook_company(request: Request) -> int:
        if request.headers.get("authorization"):
            return _principal(request).company_id
        ref = request.headers.get("x-opsctl-company") or request.query_params.get("company")
        if not ref or not ref.isdigit():
            raise ApiError(401, "unauthorized",
                           "name the company: Authorization: Bearer <key>, or X-Opsctl-Company: <company id>")
        _rate_limit(int(ref))
        return int(ref)

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: int, request: Request) -> JSONResponse:
        principal = await run_in_threadpool(_principal, request)
        if job_id < 1 or job_id > 2**63 - 1:
            raise ApiError(404, "not_found", f"no job {job_id}")

        def _status() -> dict[str, Any] | None:
            with services.pool.connection() as conn:
                found = job_status(conn, principal.company_id, job_id)
                conn.rollback()
            return found

        found = await run_in_threadpool(_status)
        if found is None:
            raise ApiError(404, "not_found", f"no job {job_id}")
        return JSONResponse(found)

    @app.post("/v1/search")
    async def post_search(request: Request) -> JSONResponse:
        body = await request.body()

        def _search() -> dict[str, Any]:
            # one thread hop for the key lookup and the search; a slow Redis (policy re-read, query
            # log) must not block the event loop either
            principal = _principal(request)
            req: SearchRequest = parse_body(body, SearchRequest)
            if req.k > settings.search_max_k:
                raise ApiError(422, "validation_error", f"k: at most {settings.search_max_k}")
            ttl = services.cache.setting("ttl_search", settings.search_cache_ttl_seconds)
            found = search(services.pool, services.cache, services.embedder, principal, req, ttl,
                           settings.vector_exact_max_rows)
            services.cache.log_query(principal.company_id, req.canonical(), time.time())
            return found

        return OrjsonResponse(await run_in_threadpool(_search))

    @app.get("/metrics")
    async def get_metrics() -> Response:
        data = await run_in_threadpool(generate_latest, REGISTRY)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        def _check() -> tuple[bool, bool]:
            try:
                with services.pool.connection(timeout=2) as conn:
                    conn.execute("SELECT 1")
                    conn.rollback()
                db_ok = True
            except Exception:
                db_ok = False
            return db_ok, services.cache.ping()

        db_ok, redis_ok = await run_in_threadpool(_check)
        body = {"status": "ready" if db_ok else "not ready", "database": "ok" if db_ok else "unavailable",
                "redis": "ok" if redis_ok else "unavailable (serving uncached)"}
        return JSONResponse(body, status_code=200 if db_ok else 503)

    def _admin(request: Request) -> None:
        token = settings.admin_token
        if not token:
            raise ApiError(403, "admin_disabled", "the admin API is disabled: set OPSCTL_ADMIN_TOKEN")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "unauthorized", "admin token required: Authorization: Bearer <admin token>")

    def _pool_control() -> WorkerPoolControl:
        if services.workers is None:
            raise ApiError(409, "no_local_pool",
                           "this API process manages no worker pool; scale the worker Deployment instead")
        return services.workers

    @app.get("/admin/workers")
    async def get_workers(request: Request) -> JSONResponse:
        _admin(request)
        return JSONResponse(_pool_control().status())

    @app.put("/admin/workers")
    async def put_workers(request: Request) -> JSONResponse:
        _admin(request)
        control = _pool_control()
        wanted: WorkersIn = parse_body(await request.body(), WorkersIn)
        return JSONResponse(await run_in_threadpool(control.resize, wanted.replicas))

    return BodyLimitMiddleware(MetricsMiddleware(app), settings.max_body_bytes)  # type: ignore[return-value]
