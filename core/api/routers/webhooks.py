"""``/v1/webhooks/{source}``: a raw event, signed with the company's webhook secret.

The company comes from a bearer key, or from ``X-Opsctl-Company`` (or ``?company=``: a numeric
company id). Until the signature is verified the request is a stranger's: a failure is charged to
the client address, never to the company it names, and an address that failed too often is
refused before any lookup unless this process holds the named company's secret already (kept
``auth_cache_ttl_seconds``). A company that does not exist fails exactly as one that does (the
signature is checked against a random secret of this process): the route reveals no company ids.

Replays: the answer to a verified event is remembered in Redis for as long as its signature could
be accepted (``core.tenants.replay_record``); the same signed request again gets the same 202,
neither charged to the company nor written again. Redis is a cache here, never the only copy: when
it is down, a delivery is taken as new (the same event is the same job anyway, so nothing is
duplicated) and counted in ``core_webhook_replay_lookups_total{result="error"}``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import Header, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from core import logs, metrics
from core.api.body import resource_router
from core.api.deps import (
    Caller,
    ServicesDep,
    authenticate,
    caller_of,
    charge_company,
    refuse_stranger,
    stranger_wait,
    too_many_strangers,
)
from core.api.errors import ApiError, responses
from core.api.intake import check_text_length, store, store_email
from core.api.models import WebhookAcceptedOut
from core.api.services import Services
from core.ingest.webhooks import SOURCE_RE, company_ref, event_document, is_raw_message
from core.tenants import check_signature, company_secret, company_tier, replay_record

router = resource_router(tags=["webhooks"])

NAME_THE_COMPANY = "name the company: Authorization: Bearer <key>, or X-Opsctl-Company: <company id>"
RAW_BODY = {"requestBody": {"required": True, "description": "the event as the sender sends it: a JSON object "
                            "naming `id` and `text` (or `body`, `content`, `message`, `html`), or any text; or one "
                            "raw e-mail, sent as `message/rfc822` or to the source `email`",
                            "content": {"application/json": {"schema": {}},
                                        "text/plain": {"schema": {"type": "string"}},
                                        "message/rfc822": {"schema": {"type": "string", "format": "binary"}}}}}


def known_secret(services: Services, company_id: int) -> str | None:
    """The company's webhook secret if this process holds it (no I/O)."""
    return services.secrets.get(str(company_id), services.settings.auth_cache_ttl_seconds, time.monotonic())


def secret_of(services: Services, company_id: int) -> str | None:
    """The company's webhook secret: this process's copy, else from the database (then kept)."""
    found = known_secret(services, company_id)
    if found is None:
        with services.pool.connection() as conn:
            row = company_secret(conn, company_id)
            conn.rollback()
        if row is not None:
            found = row[0]
            services.secrets.put(str(company_id), found, services.settings.auth_cache_ttl_seconds, time.monotonic())
    return found


def receive(services: Services, caller: Caller, named: int | None, source: str, signature: str | None,
            body: bytes, content_type: str | None) -> dict[str, Any]:
    """Authenticate, verify, answer a replay, charge, queue (blocking: one worker thread for all of it)."""
    now, tolerance = time.time(), services.settings.webhook_tolerance_seconds
    if caller.key is not None:  # a valid key charged its company already; a wrong signature is its own error
        principal = authenticate(services, caller)
        company_id, tier, stranger = principal.company_id, principal.tier, False
    else:
        assert named is not None  # the route refused a stranger naming no company
        company_id, tier, stranger = named, None, True
        wait = stranger_wait(services, caller)
        if wait > 0 and known_secret(services, company_id) is None:
            too_many_strangers(wait)  # before any lookup
    secret = secret_of(services, company_id)
    checked = check_signature(secret or services.decoy_secret, signature, body, now, tolerance)
    if isinstance(checked, str) or secret is None:
        problem = checked if isinstance(checked, str) else "signature does not match"
        if stranger:
            refuse_stranger(services, caller.address, "bad_signature", problem)
        raise ApiError(401, "bad_signature", problem)
    logs.note_company(company_id)  # the signature proved it
    record, ttl = replay_record(company_id, checked, now, tolerance)
    answered, _ = services.cache.get_raw(record, metrics.WEBHOOK_REPLAYS)
    if answered is not None:  # this very request was answered already: the same answer, no charge, no write
        replayed: dict[str, Any] = orjson.loads(answered)
        return replayed
    if stranger:
        if not services.tiers.single_tier:  # read once, for the charge and the quota both
            with services.pool.connection() as conn:
                tier = company_tier(conn, company_id)
                conn.rollback()
        charge_company(services, company_id, tier)
    answer: dict[str, Any]
    if is_raw_message(source, content_type):
        answer = store_email(services, company_id, tier, body, f"webhook:{source}")
    else:
        doc = event_document(source, body, content_type)
        check_text_length(doc.text, services.settings.max_text_chars, "event text")
        answer = {"accepted": 1, "job_ids": store(services, company_id, tier, [doc], f"webhook:{source}"),
                  "external_id": doc.external_id}
    services.cache.set_raw(record, orjson.dumps(answer), ttl)
    return answer


@router.post("/v1/webhooks/{source}", status_code=202, response_model=WebhookAcceptedOut,
             response_model_exclude_none=True, summary="Receive a signed event",
             openapi_extra={**RAW_BODY, "security": [{"ApiKey": []}, {}]},
             responses=responses(400, 401, 403, 404, 413, 422, 429, 503))
async def post_webhook(
    request: Request, services: ServicesDep,
    source: Annotated[str, Path(description="where the event comes from: `[a-z0-9][a-z0-9_.-]{0,63}`",
                                json_schema_extra={"pattern": SOURCE_RE.pattern})],
    signature: Annotated[str | None, Header(alias="X-Opsctl-Signature", description=(
        "`t=<unix seconds>,v1=<hex HMAC-SHA256(webhook secret, \"<t>.<body>\")>`; required, and at most "
        "`webhook_tolerance_seconds` (300) old"))] = None,
    company_header: Annotated[str | None, Header(alias="X-Opsctl-Company", description=(
        "the company's numeric id (`opsctl tenant list`), when no bearer key is sent"))] = None,
    company_query: Annotated[str | None, Query(alias="company", description="as `X-Opsctl-Company`")] = None,
) -> dict[str, Any]:
    """A JSON event names its id and text; any other body is stored as text under its SHA-256, so a
    redelivered event is a no-op, unless it is sent as `application/json` (or `…+json`) and is not
    JSON: 400. A raw e-mail (sent as `message/rfc822`, or any body to the source `email`) is
    queued as `POST /v1/emails` does it, duplicates included (`duplicate: true`, nothing written).
    Durable like `POST /v1/documents` once answered; the same signed request sent again while its
    signature is valid gets the same answer."""
    if not SOURCE_RE.match(source):
        raise ApiError(404, "not_found", "unknown webhook source: use [a-z0-9_.-], up to 64 characters")
    caller = caller_of(request)
    named = None
    if caller.key is None:  # a stranger naming no company is refused before its body is read
        try:
            named = (company_ref(company_header) if company_header is not None
                     else company_ref(company_query, "?company="))
        except ValueError as exc:
            refuse_stranger(services, caller.address, "unauthorized", str(exc))
        if named is None:
            refuse_stranger(services, caller.address, "unauthorized", NAME_THE_COMPANY)
    body = await request.body()
    return await run_in_threadpool(receive, services, caller, named, source, signature, body,
                                   request.headers.get("content-type"))
