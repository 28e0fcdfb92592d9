"""Dependencies: the services, who is calling (key + rate limit), the admin token.

Every dependency here is ``async`` and does no blocking I/O, so none costs a threadpool hop:
the key lookup runs in the hop the route makes anyway. ``Principal`` does it for routes that hop
twice (auth, then their work); ``/v1/search`` takes ``Caller`` and calls ``authenticate`` inside
its single hop.

Rate limits: a company's bucket is charged only once a request proved it acts for that company
(a valid key here, a verified signature in the webhook route); a request that fails to
authenticate is charged to its client address instead (``refuse_stranger``), so nobody can drain
a tenant's limit by naming it, and fake ids make no buckets.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from core import metrics
from core.api.errors import ApiError, rate_limited
from core.api.services import Services
from core.db import read_connection
from core.ratelimit import retry_after_header
from core.tenants import Principal, resolve_principal

tenant_key = HTTPBearer(scheme_name="ApiKey", auto_error=False,
                        description="a tenant API key (`opsctl tenant create` prints one): `Bearer ok_…`")
admin_key = HTTPBearer(scheme_name="AdminToken", auto_error=False, description="`OPSCTL_ADMIN_TOKEN`")


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


@dataclass(frozen=True)
class Caller:
    """Who sent a request, before anything is looked up: the bearer key (if any) and the address."""

    key: str | None
    address: str


async def get_caller(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(tenant_key)]) -> Caller:
    key = credentials.credentials.strip() if credentials is not None else ""
    return Caller(key or None, request.client.host if request.client else "")


async def get_keyed_caller(caller: Annotated[Caller, Depends(get_caller)], services: ServicesDep) -> Caller:
    """The caller of a route that needs a key: no key is a 401 before the body is even validated."""
    if caller.key is None:
        refuse_stranger(services, caller.address, "unauthorized", "missing API key: send Authorization: Bearer <key>")
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


async def get_principal(services: ServicesDep, caller: KeyedCaller) -> Principal:
    return await run_in_threadpool(authenticate, services, caller)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(request: Request, services: ServicesDep,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_key)]) -> None:
    token = services.settings.admin_token
    if not token:
        raise ApiError(403, "admin_disabled", "the admin API is disabled: set OPSCTL_ADMIN_TOKEN")
    given = credentials.credentials.strip() if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        refuse_stranger(services, request.client.host if request.client else "", "unauthorized",
                        "admin token required: Authorization: Bearer <admin token>")


Admin = Depends(require_admin)
