"""``/v1/webhooks/{source}``: a raw event, signed with the company's webhook secret.

The company comes from a bearer key, or from ``X-Opsctl-Company`` (or ``?company=``). Until the
signature is verified the request is a stranger's: a failure is charged to the client address,
never to the company it names.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Header, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import Caller, CallerDep, ServicesDep, authenticate, charge_company, refuse_stranger
from core.api.errors import ApiError, responses
from core.api.models import WebhookAcceptedOut
from core.api.routers.documents import check_text_length, store
from core.api.services import Services
from core.ingest.webhooks import SOURCE_RE, company_ref, event_document
from core.tenants import company_secret, verify_signature

router = resource_router(tags=["webhooks"])

NAME_THE_COMPANY = "name the company: Authorization: Bearer <key>, or X-Opsctl-Company: <company id>"
RAW_BODY = {"requestBody": {"required": True, "description": "the event as the sender sends it: a JSON object "
                            "naming `id` and `text` (or `body`, `content`, `message`, `html`), or any text",
                            "content": {"application/json": {"schema": {}},
                                        "text/plain": {"schema": {"type": "string"}}}}}


def secret_of(services: Services, company_id: int) -> str | None:
    with services.pool.connection() as conn:
        found = company_secret(conn, company_id)
        conn.rollback()
    return found[0] if found else None


def receive(services: Services, caller: Caller, named: int | None, source: str, signature: str | None,
            body: bytes, content_type: str | None) -> dict[str, Any]:
    """Authenticate, verify, charge, queue (blocking: one worker thread for all of it)."""
    if caller.key is not None:  # a valid key charged its company already; a wrong signature is its own error
        company_id: int | None = authenticate(services, caller).company_id
        stranger = False
    else:
        company_id, stranger = named, True
        if company_id is None:
            refuse_stranger(services, caller.address, "unauthorized", NAME_THE_COMPANY)
    assert company_id is not None
    secret = secret_of(services, company_id)
    problem = "unknown company" if secret is None else verify_signature(
        secret, signature, body, time.time(), services.settings.webhook_tolerance_seconds)
    if problem:
        code = "unauthorized" if secret is None else "bad_signature"
        if stranger:
            refuse_stranger(services, caller.address, code, problem)
        raise ApiError(401, code, problem)
    if stranger:
        charge_company(services, company_id)
    doc = event_document(source, body, content_type)
    check_text_length(doc.text, services.settings.max_text_chars, "event text")
    return {"accepted": 1, "job_ids": store(services, company_id, [doc], f"webhook:{source}"),
            "external_id": doc.external_id}


@router.post("/v1/webhooks/{source}", status_code=202, response_model=WebhookAcceptedOut,
             summary="Receive a signed event", openapi_extra={**RAW_BODY, "security": [{"ApiKey": []}, {}]},
             responses=responses(400, 401, 404, 413, 422, 429, 503))
async def post_webhook(
    request: Request, caller: CallerDep, services: ServicesDep,
    source: Annotated[str, Path(description="where the event comes from: `[a-z0-9][a-z0-9_.-]{0,63}`",
                                json_schema_extra={"pattern": SOURCE_RE.pattern})],
    signature: Annotated[str | None, Header(alias="X-Opsctl-Signature", description=(
        "`t=<unix seconds>,v1=<hex HMAC-SHA256(webhook secret, \"<t>.<body>\")>`; required, and at most "
        "`webhook_tolerance_seconds` (300) old"))] = None,
    company_header: Annotated[str | None, Header(alias="X-Opsctl-Company",
                                                 description="the company id, when no bearer key is sent")] = None,
    company_query: Annotated[str | None, Query(alias="company", description="as `X-Opsctl-Company`")] = None,
) -> dict[str, Any]:
    """A JSON event names its id and text; any other body is stored as text under its SHA-256, so a
    redelivered event is a no-op, unless it is sent as `application/json` (or `…+json`) and is not
    JSON: 400. Durable like `POST /v1/documents` once answered."""
    if not SOURCE_RE.match(source):
        raise ApiError(404, "not_found", "unknown webhook source: use [a-z0-9_.-], up to 64 characters")
    named = company_ref(company_header if company_header is not None else company_query)
    body = await request.body()
    return await run_in_threadpool(receive, services, caller, named, source, signature, body,
                                   request.headers.get("content-type"))
