"""Dependencies: the services, who is calling (key + rate limit), the admin token.

Every dependency here is ``async`` and does no blocking I/O, so none costs a threadpool hop:
the key lookup runs in a worker thread. ``PrincipalDep`` does it for routes that hop twice
(auth, then their work); ``/v1/search`` declares no dependency and calls ``caller_of`` and
``authenticate`` inside its single hop. They read the request directly rather than through
sub-dependencies (FastAPI solves each dependency anew on every request), and the security schemes
they check are declared to OpenAPI by ``TENANT_AUTH`` / ``ADMIN_AUTH``.

Rate limits: a company's bucket is charged only once a request proved it acts for that company
(a valid key here, a verified signature in the webhook route); a request that fails to
authenticate is charged to its client address instead (``refuse_stranger``), so nobody can drain
a tenant's limit by naming it, and fake ids make no buckets.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from core import metrics
from core.api.errors import ApiError, rate_limited
from core.api.services import Services
from core.db import read_connection
from core.ratelimit import retry_after_header
from core.tenants import Principal, resolve_principal

# what the OpenAPI document declares (``openapi.build``); the headers are read by the functions below
SECURITY_SCHEMES = {
    "ApiKey": {"type": "http", "scheme": "bearer",
               "description": "a tenant API key (`opsctl tenant create` prints one): `Bearer ok_…`"},
    "AdminToken": {"type": "http", "scheme": "bearer", "description": "`OPSCTL_ADMIN_TOKEN`"},
}
TENANT_AUTH: dict[str, Any] = {"security": [{"ApiKey": []}]}
ADMIN_AUTH: dict[str, Any] = {"security": [{"AdminToken": []}]}


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if the request sends one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if token and scheme.lower() == "bearer" else None


@dataclass(slots=True)
class Caller:
    """Who sent a request, before anything is looked up: the bearer key (if any) and the address."""

    key: str | None
    address: str


def caller_of(request: Request) -> Caller:
    return Caller(bearer(request), request.client.host if request.client else "")


async def get_caller(request: Request) -> Caller:
    return caller_of(request)


async def get_keyed_caller(request: Request) -> Caller:
    """The caller of a route that needs a key: no key is a 401 before the body is even validated."""
    caller = caller_of(request)
    if caller.key is None:
        refuse_stranger(services_of(request), caller.address, "unauthorized",
                        "missing API key: send Authorization: Bearer <key>")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
KeyedCaller = Annotated[Caller, Depends(get_keyed_caller)]


def refuse_stranger(services: Services, address: str, code: str, message: str) -> NoReturn:
    """Refuse a request that failed to authenticate: 401, or 429 once its address has failed too often."""
    wait = services.strangers.take(address, time.monotonic())
    if wait > 0:
        metrics.RATE_LIMITED.inc()
        raise rate_limited("too many unauthenticated requests from this address; slow down",
                           retry_after_header(wait))
    raise ApiError(401, code, message)


def charge_company(services: Services, company_id: int) -> None:
    wait = services.limiter.take(company_id, time.monotonic())
    if wait > 0:
        metrics.RATE_LIMITED.inc()
        raise rate_limited("too many requests for this company; slow down", retry_after_header(wait))


def authenticate(services: Services, caller: Caller) -> Principal:
    """The company a key acts for, charged one token (blocking: call it in a worker thread)."""
    if caller.key is None:
        refuse_stranger(services, caller.address, "unauthorized", "missing API key: send Authorization: Bearer <key>")
    ttl = services.cache.setting("ttl_auth", services.settings.auth_cache_ttl_seconds)
    with read_connection(services.pool) as conn:
        principal = resolve_principal(conn, services.cache, caller.key, ttl)
    if principal is None:
        refuse_stranger(services, caller.address, "unauthorized", "unknown or revoked API key")
    charge_company(services, principal.company_id)
    return principal


async def get_principal(request: Request, caller: KeyedCaller) -> Principal:
    return await run_in_threadpool(authenticate, services_of(request), caller)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(request: Request) -> None:
    services = services_of(request)
    token = services.settings.admin_token
    if not token:
        raise ApiError(403, "admin_disabled", "the admin API is disabled: set OPSCTL_ADMIN_TOKEN")
    if not hmac.compare_digest((bearer(request) or "").encode(), token.encode()):
        refuse_stranger(services, caller_of(request).address, "unauthorized",
                        "admin token required: Authorization: Bearer <admin token>")


Admin = Depends(require_admin)
