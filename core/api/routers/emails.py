"""``/v1/emails``: queue one raw message or a whole mbox (202 once durable), read one stored message or its
original bytes, queue a message's delete.

``POST`` reads the body on the event loop and does the rest in one worker thread, like
``/v1/documents``: authenticate, check the media type, split an mbox (``core.mail.mbox``), read each
message's id from its headers (``core.mail.message_id_of``: the body is not parsed here, the worker
does that), store the jobs (an mbox in one transaction: all or none).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request, Response
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from core.api.body import resource_router
from core.api.deps import TENANT_AUTH, Caller, PrincipalDep, ServicesDep, authenticate, caller_of, screen, services_of
from core.api.errors import ApiError, responses
from core.api.intake import lane_of, store_email, store_mbox
from core.api.models import AcceptedOut, EmailAcceptedOut, EmailOut, MboxAcceptedOut
from core.api.services import Services
from core.emails import get_email, get_raw
from core.ingest.accept import accept_delete, external_id_value
from core.ingest.fair import PRIORITY_HEADER
from core.ingest.mail import email_external_id
from core.inputs import NON_BLANK_PATTERN
from core.mail.lookup import MAX_ASKED, asked_id

router = resource_router(prefix="/v1/emails", tags=["emails"])

RFC822 = "message/rfc822"
MBOX = "application/mbox"
RAW_MESSAGE = {"requestBody": {"required": True, "description": "`message/rfc822`: one message as it travels: RFC "
                               "5322 headers, a blank line, the (MIME) body; any bytes, any charset. "
                               "`application/mbox` (RFC 4155): several messages, each after a `From <address> "
                               "<date>` line and followed by a blank line, `>From` lines quoted (mboxrd), at most "
                               "`max_documents_per_request` messages. Either up to `max_body_bytes`.",
                               "content": {RFC822: {"schema": {"type": "string", "format": "binary", "minLength": 1}},
                                           MBOX: {"schema": {"type": "string", "format": "binary",
                                                             "minLength": 1}}}}}

MessageId = Annotated[str, Path(min_length=1, max_length=MAX_ASKED, description="the Message-ID, URL-encoded: as "
                                "`POST /v1/emails` answered it, or in its angle brackets, or as its header has it "
                                "(a comment after it, a space inside, longer than the 512 characters the core "
                                "keeps): it is normalised as the stored id was (one that normalises to nothing, "
                                "such as `<>`, names no message: 404)",
                                json_schema_extra={"pattern": NON_BLANK_PATTERN}),
                      AfterValidator(external_id_value)]


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` (without parameters, lower case); none at all is one message."""
    return RFC822 if content_type is None else content_type.partition(";")[0].strip().lower()


def queue_email(services: Services, caller: Caller, content_type: str | None, body: bytes,
                priority: str | None = None) -> dict[str, Any]:
    """Authenticate, check, store (blocking: the route's one worker thread); ``priority``: the
    ``Ingest-Priority`` header."""
    principal = authenticate(services, caller)
    media = media_type(content_type)
    if media == MBOX:
        return store_mbox(services, principal.company_id, principal.tier, body, "api", priority)
    if media != RFC822:
        raise ApiError(415, "unsupported_media_type", f"send one raw message as Content-Type: {RFC822}, or several as "
                       f"{MBOX}, not {(content_type or '')[:100]}")
    answer = store_email(services, principal.company_id, principal.tier, body, "api",
                         lane_of(services.settings, 1, priority))
    del answer["external_id"]
    return answer


@router.post("", status_code=202, response_model=EmailAcceptedOut | MboxAcceptedOut,
             summary="Queue one raw e-mail, or an mbox of them, for ingest",
             responses=responses(400, 401, 413, 415, 422, 429, 503), openapi_extra={**RAW_MESSAGE, **TENANT_AUTH})
async def post_email(request: Request) -> dict[str, Any]:
    """Answered once the message is durable. The worker parses it (MIME, charsets, attachments),
    threads it (Message-ID, In-Reply-To, References) and indexes its text without quoted earlier
    messages or signature; the original stays readable (`?raw=1`). A message this company has stored
    or queued already (same Message-ID) is a duplicate: `accepted: 0`, its job, nothing written.

    An mbox (`Content-Type: application/mbox`) is answered once all its messages are durable (one
    transaction: all or none; a body that is not an mbox, holds no message, an empty one or too many
    is a 422): `accepted` new messages, their `job_ids`, and per message in body order its
    `message_id`, `job_id` and `duplicate` (as above, and for a Message-ID met earlier in the body).

    One message is queued as interactive, an mbox as bulk (`Ingest-Priority: interactive|bulk` says
    otherwise)."""
    services, caller = services_of(request), caller_of(request)
    screen(services, caller)
    body = await request.body()
    return await run_in_threadpool(queue_email, services, caller, request.headers.get("content-type"), body,
                                   request.headers.get(PRIORITY_HEADER))


def stored_id(message_id: str) -> str:
    """The id a message asked for is stored under (``asked_id``); a 404 when it holds none (``<>``)."""
    stored = asked_id(message_id)
    if stored is None:
        raise ApiError(404, "not_found", f"no e-mail {message_id!r}: it holds no Message-ID")
    return stored


@router.get("/{message_id:external_id}", response_model=EmailOut, summary="One stored e-mail",
            responses={200: {"content": {RFC822: {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the message's headers as read; with `raw=1`, its original bytes"},
                       **responses(400, 401, 404, 422, 429, 503)},
            openapi_extra=TENANT_AUTH)
async def get_email_route(principal: PrincipalDep, message_id: MessageId, services: ServicesDep,
                          raw: Annotated[bool, Query(description="the original bytes, as `message/rfc822`")] = False,
                          ) -> Any:
    """A message of the caller's company (another company's is a 404, as is an id only referenced).
    The id is normalised as the stored one was (`core.mail.lookup.asked_id`, as `opsctl emails show`)."""
    stored = stored_id(message_id)
    if raw:
        original = await run_in_threadpool(get_raw, services.pool, principal.company_id, stored)
        if original is None:
            raise ApiError(404, "not_found", f"no e-mail {stored!r}")
        return Response(original, media_type=RFC822)
    found = await run_in_threadpool(get_email, services.pool, principal.company_id, stored)
    if found is None:
        raise ApiError(404, "not_found", f"no e-mail {stored!r}")
    return found


@router.delete("/{message_id:external_id}", status_code=202, response_model=AcceptedOut,
               summary="Queue the delete of a stored e-mail", responses=responses(400, 401, 404, 422, 429, 503),
               openapi_extra=TENANT_AUTH)
async def delete_email(principal: PrincipalDep, message_id: MessageId, services: ServicesDep) -> dict[str, Any]:
    """The delete of its document (`DELETE /v1/documents/email:<id>`), durable like an ingest: the worker
    deletes the message whole (its document, its headers, its original). Its id stays in the thread's
    registry: the thread keeps its shape (the message a ghost where others name it) and its merges, and
    the message sent again is stored again, into the same thread. The id is normalised as `GET` does;
    an id the company has no message under (another company's) is a no-op job, as for documents."""
    stored = stored_id(message_id)

    def delete() -> int:
        with services.pool.connection() as conn:
            return accept_delete(conn, principal.company_id, email_external_id(stored))

    return {"accepted": 1, "job_ids": [await run_in_threadpool(delete)]}
