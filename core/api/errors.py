"""The one place where every failure becomes ``{"error": {"code", "message"}}``.

Routes and dependencies raise ``ApiError`` (status, code, message), or let the core's own input
errors through (``core.inputs.InputRefused``, pydantic's ``ValidationError``); ``install``
registers the handlers that turn each of those, FastAPI's request validation, Starlette's
404/405, a database outage and anything unexpected into that shape. ``responses`` describes the
same errors in the OpenAPI document, so the description and the behaviour share one table.

    status  code                     when
    400     invalid_json             the body is not JSON (RFC 8259, finite numbers, Unicode,
                                     nested at most 64 levels)
    400     invalid_encoding         the body, path or query is not UTF-8
    400     invalid_cursor           a cursor not issued for this request: edited, another company's,
                                     another operation's or another search's
    400     unknown_field            ``fields=`` names a field a search hit does not have
    401     unauthorized             no key, an unknown or revoked key, no company id (webhooks)
    401     bad_signature            a webhook signature missing, malformed, stale or wrong (the
                                     same for a company that does not exist)
    403     admin_disabled           /admin/* without OPSCTL_ADMIN_TOKEN set
    403     quota_documents          over the tier's documents, bytes or k (docs/tenants.md);
            quota_bytes, k_too_large nothing written
    404     not_found                no such route (a trailing slash too), document, job or webhook source
    405     method_not_allowed       (with ``Allow``)
    409     no_local_pool            /admin/workers on a process without a worker pool
    413     body_too_large           over ``max_body_bytes``
    415     unsupported_media_type   a body that is not sent as JSON
    422     validation_error         the JSON does not fit the declared model (the message names the field)
    429     rate_limited             (with ``Retry-After``) the company's, or the address's, bucket is empty
    503     database_unavailable     (with ``Retry-After``) the database cannot be reached
    503     overloaded               (with ``Retry-After``) no database connection free in time
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from core import logs
from core.inputs import BadEncoding, InputRefused, NotJson

log = logging.getLogger("core.api")


class ApiError(HTTPException):
    """A refusal with its status, code and message.

    An ``HTTPException``, so FastAPI's body reading lets it through unchanged."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.code = code
        self.message = message


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str


class ErrorOut(BaseModel):
    """Every error the API sends."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"error": {"code": "validation_error", "message": "documents.0.text: text must not be empty"}}]})

    error: ErrorDetail


MAX_MESSAGE = 2000


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error shape. A message may quote what the client sent: lone surrogates are escaped, length capped."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": {"code": code, "message": safe}}, status_code=status, headers=headers)


def input_error(exc: InputRefused, what: str = "request body") -> ApiError:
    if isinstance(exc, BadEncoding):
        return ApiError(400, "invalid_encoding", f"{what} is {exc}")
    if isinstance(exc, NotJson):
        return ApiError(400, "invalid_json", f"{what} is not valid JSON: {exc}")
    return ApiError(422, "validation_error", str(exc))


def validation_message(exc: ValidationError | RequestValidationError) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    more = len(errors) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validation_error(message: str) -> ApiError:
    return ApiError(422, "validation_error", message)


def invalid_cursor(exc: Exception) -> ApiError:
    return ApiError(400, "invalid_cursor", str(exc))


def rate_limited(message: str, retry_after: str) -> ApiError:
    return ApiError(429, "rate_limited", message, {"Retry-After": retry_after})


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
              413: "body_too_large", 415: "unsupported_media_type", 422: "validation_error"}


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's); HEAD
    wherever GET is (``RequestGuardMiddleware`` serves it)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = exc.code if isinstance(exc, ApiError) else HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return error_response(exc.status_code, code, str(exc.detail), headers)


async def _request_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return error_response(422, "validation_error", validation_message(exc))


async def _input_refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputRefused)
    error = input_error(exc)
    return error_response(error.status_code, error.code, error.message)


async def _db_down(_: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", exc)
    return error_response(503, "database_unavailable", "the database is unavailable; retry later", {"Retry-After": "5"})


async def _overloaded(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, "overloaded", "no database connection available; retry later", {"Retry-After": "1"})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    info = logs.CURRENT.get()  # answered outside the middleware that adds it to every other answer
    return error_response(500, "internal", "internal error", {"X-Request-ID": info.request_id} if info else None)


def install(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationError, _request_invalid)
    app.add_exception_handler(InputRefused, _input_refused)
    app.add_exception_handler(psycopg.OperationalError, _db_down)
    app.add_exception_handler(PoolTimeout, _overloaded)
    app.add_exception_handler(Exception, _unexpected)


# -- the same errors, described for OpenAPI ------------------------------------------------------------------

DESCRIPTIONS = {
    400: "`invalid_json`: the body is not JSON (RFC 8259: no NaN or Infinity, numbers a double holds, "
         "no lone surrogates, nested at most 64 levels); `invalid_encoding`: the body, path or query is not UTF-8; "
         "`invalid_cursor`: a cursor this API did not issue for this request (edited, another company's, "
         "another search's); `unknown_field`: `fields` names no field of a hit (the message lists them)",
    401: "`unauthorized`: no key, or an unknown or revoked one (webhooks: no numeric company id); "
         "`bad_signature` (webhooks): the signature is missing, malformed, older than the tolerance or wrong, "
         "whether the named company exists or not",
    403: "`admin_disabled`: the admin API is off (no `OPSCTL_ADMIN_TOKEN`); `quota_documents`, `quota_bytes`, "
         "`k_too_large`: over the company's tier (documents, bytes of text, a search's k); nothing is written",
    404: "`not_found`: no such resource (or it belongs to another company)",
    409: "`no_local_pool`: this process manages no worker pool",
    413: "`body_too_large`: the body exceeds `max_body_bytes`",
    415: "`unsupported_media_type`: send the body as `application/json`",
    422: "`validation_error`: the body or a parameter does not fit the schema; the message names the field",
    429: "`rate_limited`: the company's bucket (authenticated requests, its tier's rate, shared by every API "
         "process; `RateLimit-*` fields) or the client address's (requests failing authentication) is empty; "
         "retry after `Retry-After` seconds",
    503: "`database_unavailable` or `overloaded`: retry after `Retry-After` seconds",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all in the ``ErrorOut`` shape."""
    described: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorOut, "description": DESCRIPTIONS[status]}
        if status in (429, 503):
            entry["headers"] = RETRY_AFTER
        described[status] = entry
    return described
