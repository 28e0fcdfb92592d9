"""``/v1/emails``: queue one raw message (202 once durable), read one stored message or its original bytes.

``POST`` reads the body on the event loop and does the rest in one worker thread, like
``/v1/documents``: authenticate, check the media type, read the message's id from its headers
(``core.mail.message_id_of``: the body is not parsed here, the worker does that), store the job.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request, Response
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import TENANT_AUTH, Caller, PrincipalDep, ServicesDep, authenticate, caller_of, screen, services_of
from core.api.errors import ApiError, responses
from core.api.intake import store_email
from core.api.models import EmailAcceptedOut, EmailOut
from core.api.services import Services
from core.emails import get_email, get_raw
from core.ingest.accept import external_id_value
from core.inputs import NON_BLANK_PATTERN

router = resource_router(prefix="/v1/emails", tags=["emails"])

RFC822 = "message/rfc822"
MAX_MESSAGE_ID = 512  # core.mail bounds every id to this many characters (a longer one ends in a hash of it)
RAW_MESSAGE = {"requestBody": {"required": True, "description": "one message as it travels: RFC 5322 headers, a "
                               "blank line, the (MIME) body; any bytes, any charset, up to `max_body_bytes`",
                               "content": {RFC822: {"schema": {"type": "string", "format": "binary"}}}}}

MessageId = Annotated[str, Path(min_length=1, max_length=MAX_MESSAGE_ID, description="the Message-ID without angle "
                                "brackets, URL-encoded (as `POST /v1/emails` answered it)",
                                json_schema_extra={"pattern": NON_BLANK_PATTERN}),
                      AfterValidator(external_id_value)]


def rfc822_media(content_type: str | None) -> bool:
    """Whether a body is sent as one message: ``message/rfc822`` (any parameters), or with no type at all."""
    return content_type is None or content_type.partition(";")[0].strip().lower() == RFC822


def queue_email(services: Services, caller: Caller, content_type: str | None, body: bytes) -> dict[str, Any]:
    """Authenticate, check, store (blocking: the route's one worker thread)."""
    principal = authenticate(services, caller)
    if not rfc822_media(content_type):
        raise ApiError(415, "unsupported_media_type",
                       f"send the raw message as Content-Type: {RFC822}, not {(content_type or '')[:100]}")
    answer = store_email(services, principal.company_id, body, "api")
    del answer["external_id"]
    return answer


@router.post("", status_code=202, response_model=EmailAcceptedOut, summary="Queue one raw e-mail for ingest",
             responses=responses(400, 401, 413, 415, 422, 429, 503), openapi_extra={**RAW_MESSAGE, **TENANT_AUTH})
async def post_email(request: Request) -> dict[str, Any]:
    """Answered once the message is durable. The worker parses it (MIME, charsets, attachments),
    threads it (Message-ID, In-Reply-To, References) and indexes its text without quoted earlier
    messages or signature; the original stays readable (`?raw=1`). A message this company has stored
    or queued already (same Message-ID) is a duplicate: `accepted: 0`, its job, nothing written."""
    services, caller = services_of(request), caller_of(request)
    screen(services, caller)
    body = await request.body()
    return await run_in_threadpool(queue_email, services, caller, request.headers.get("content-type"), body)


@router.get("/{message_id:external_id}", response_model=EmailOut, summary="One stored e-mail",
            responses={200: {"content": {RFC822: {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the message's headers as read; with `raw=1`, its original bytes"},
                       **responses(400, 401, 404, 422, 429, 503)},
            openapi_extra=TENANT_AUTH)
async def get_email_route(principal: PrincipalDep, message_id: MessageId, services: ServicesDep,
                          raw: Annotated[bool, Query(description="the original bytes, as `message/rfc822`")] = False,
                          ) -> Any:
    """A message of the caller's company (another company's is a 404, as is an id only referenced)."""
    if raw:
        original = await run_in_threadpool(get_raw, services.pool, principal.company_id, message_id)
        if original is None:
            raise ApiError(404, "not_found", f"no e-mail {message_id!r}")
        return Response(original, media_type=RFC822)
    found = await run_in_threadpool(get_email, services.pool, principal.company_id, message_id)
    if found is None:
        raise ApiError(404, "not_found", f"no e-mail {message_id!r}")
    return found
