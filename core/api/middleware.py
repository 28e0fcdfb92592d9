"""ASGI middleware around the app: request duration metrics, the request id and the access log
(outermost: they see every answer, the guard's included), then the guard: UTF-8 URLs, the body
size limit, HEAD served as GET."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match

from core import logs, metrics
from core.api.errors import ApiError, error_response

log = logging.getLogger("core.api")
CLIENT_CLOSED = 499  # nginx's status for a client that hung up before it was answered

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"request body exceeds {limit} bytes")


def utf8_url(raw: bytes, plus_is_space: bool = False) -> bool:
    """Whether a raw path or query string is UTF-8 once percent-decoded."""
    if raw.isascii() and b"%" not in raw:
        return True
    try:
        unquote_to_bytes(raw.replace(b"+", b" ") if plus_is_space else raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class RequestGuardMiddleware:
    """Refuse what no route should see, before any route does.

    - a path or query that is not UTF-8 once percent-decoded: 400 ``invalid_encoding`` (else a
      ``%FF`` turns into U+FFFD on the way in and a request names a thing nobody sent:
      ``DELETE /v1/documents/%FF%FE`` would queue a delete of ``"\\ufffd\\ufffd"``);
    - a body over ``limit`` bytes: 413, by Content-Length or while streaming;

    and serves ``HEAD`` as ``GET`` wherever ``GET`` is served (the server sends no body for HEAD).
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":  # a copy: the server's own scope must still say HEAD
            scope = {**scope, "method": "GET"}
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        query = scope.get("query_string", b"")
        if not (raw_path.isascii() and b"%" not in raw_path and b"%" not in query and query.isascii()):
            where = "path" if not utf8_url(raw_path) else "query string" if not utf8_url(query, True) else None
            if where:
                response = error_response(400, "invalid_encoding", f"the {where} is not valid UTF-8 once "
                                          "percent-decoded")
                await response(scope, receive, send)
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
                    raise BodyTooLarge(self.limit)
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
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(self.limit)
        await error_response(error.status_code, error.code, error.message)(scope, receive, send)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower case)."""
    return next((value for key, value in scope.get("headers", []) if key == name), None)


class MetricsMiddleware:
    """``core_http_request_duration_seconds`` by route template (bounded cardinality), the request
    id (``X-Request-ID`` in, the same or a new one out: :mod:`core.logs`) and the access log line.

    A client that hangs up before it is answered (``ClientDisconnect`` while its body is read) is
    counted as 499 and logged at debug: it is not a server error, and nothing is left to answer.

    The request's :data:`core.logs.CURRENT` is set and never reset: each request runs in a task of
    its own (its own context), and a 500 is logged and answered by Starlette's outermost error
    middleware, after this one has returned, which must still see it."""

    def __init__(self, app: Any, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = False
        info = logs.RequestInfo(logs.request_id(header(scope, b"x-request-id")))
        logs.CURRENT.set(info)
        echo = (b"x-request-id", info.request_id.encode("ascii"))

        async def send_status(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status, sent = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), echo]}
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:
            log.debug("client hung up: %s %s", scope.get("method"), scope.get("path"))
            if not sent:
                status = CLIENT_CLOSED
        finally:
            elapsed, route, method = time.perf_counter() - started, self.template(scope), scope.get("method", "")
            metrics.HTTP_DURATION.labels(route, method, str(status)).observe(elapsed)
            logs.access(info, route, method, status, elapsed)

    def template(self, scope: Scope) -> str:
        """The route template; for a request answered before routing (the guard's), found here."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] is not Match.NONE), None)
        return getattr(route, "path", None) or "unmatched"


# the rate-limit fields of the answer to this request: set by ``deps.charge_company`` (in the
# route's worker thread: the dict is shared with it, the variable itself is not set there)
RATE_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("rate_headers", default=None)


class RateLimitHeadersMiddleware:
    """Adds the ``RateLimit-*`` fields the company's charge left in :data:`RATE_HEADERS` to the
    answer (a 429 carries them itself, ``Retry-After`` included)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields: dict[str, str] = {}
        RATE_HEADERS.set(fields)

        async def with_fields(message: Any) -> None:
            if message["type"] == "http.response.start" and fields:
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fields.items()
                         if name.lower().encode("latin-1") not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_fields)
