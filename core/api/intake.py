"""Queueing documents and messages, for every route that takes them in (``/v1/documents``,
``/v1/emails`` one message or an mbox, webhooks): this process's limits on what a request may hold,
and the durable store (blocking: call it in the route's worker thread)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from core import metrics
from core.api.errors import ApiError, validation_error
from core.ingest.accept import DocumentIn, accept_documents
from core.ingest.fair import INTERACTIVE, Lane, intake_lane, parse_priority
from core.ingest.mail import email_external_id
from core.ingest.mailaccept import accept_email, accept_emails, queued_by
from core.ingest.quota import check_documents_quota
from core.mail.mbox import NotAnMbox, split_mbox_bytes
from core.mail.message import message_id_of
from core.tiers import QuotaRefusal

if TYPE_CHECKING:
    import psycopg

    from core.api.services import Services
    from core.config import Settings


T = TypeVar("T")


def check_text_length(text: str, limit: int, where: str) -> None:
    if len(text) > limit:
        raise validation_error(f"{where}: longer than {limit} characters")


def check_documents(settings: Settings, docs: list[DocumentIn]) -> None:
    """``docs`` within ``max_documents_per_request`` and ``max_text_chars``, else a 422 naming the field."""
    if len(docs) > settings.max_documents_per_request:
        raise validation_error(f"documents: at most {settings.max_documents_per_request} per request, "
                               f"got {len(docs)}")
    for i, doc in enumerate(docs):
        check_text_length(doc.text, settings.max_text_chars, f"documents.{i}.text")


def refuse_quota(refusal: QuotaRefusal) -> ApiError:
    """A quota exceeded: 403 with the quota's code (``quota_documents``, ``quota_bytes``,
    ``k_too_large``): the request is refused as it is, whenever it is sent again."""
    metrics.QUOTA_REFUSED.labels(refusal.code).inc()
    return ApiError(403, refusal.code, refusal.message)


def lane_of(settings: Settings, items: int, header: str | None, interactive_max: int | None = None) -> Lane:
    """The lane of a request of ``items`` documents or messages (``core.ingest.fair.intake_lane``):
    its ``Ingest-Priority`` header, else by its size; a 422 for a header that is neither."""
    try:
        asked = parse_priority(header)
    except ValueError as exc:
        raise validation_error(str(exc)) from None
    limit = settings.ingest_interactive_max_documents if interactive_max is None else interactive_max
    return intake_lane(items, asked, limit, settings.ingest_bulk_delay_seconds)


def within_quotas(services: Services, company_id: int, tier_name: str | None,
                  sizes: Callable[[psycopg.Connection[Any]], list[tuple[str, int]]],
                  queue: Callable[[psycopg.Connection[Any]], T]) -> T:
    """``queue`` on one pooled connection, within the document quotas of the company's tier (its name
    as the request read it: ``Principal.tier``): the check of the ``sizes`` (external_id, bytes) the
    queueing would add (read on the connection, under the quota's lock) and the queueing in one
    transaction, else a 403 and nothing written (``core.ingest.quota``).
    A tier without document quotas: no count, no lock, no transaction around the queueing's own."""
    _, tier = services.tiers.tier_of(tier_name)
    with services.pool.connection() as conn:
        if not tier.has_document_quotas:
            return queue(conn)
        with conn.transaction():
            refusal = check_documents_quota(conn, company_id, tier, sizes(conn))
            if refusal is not None:
                raise refuse_quota(refusal)
            return queue(conn)


def store(services: Services, company_id: int, tier_name: str | None, docs: list[DocumentIn],
          source: str, lane: Lane = INTERACTIVE) -> list[int]:
    """Queue ``docs`` durably in one transaction, in ``lane`` (``lane_of``), within the tier's quotas
    (``within_quotas``); their job ids."""
    job_ids = within_quotas(services, company_id, tier_name,
                            lambda _: [(d.external_id, len(d.text.encode("utf-8"))) for d in docs],
                            lambda conn: accept_documents(conn, company_id, docs, source, lane))
    metrics.INGEST_ACCEPTED.labels("api" if source == "api" else "webhook").inc(len(docs))
    return job_ids


def message_sizes(company_id: int, messages: list[tuple[str, bytes]]) -> Callable[[psycopg.Connection[Any]],
                                                                                list[tuple[str, int]]]:
    """What messages count for the quotas: those that would be queued (a duplicate, of mail the company
    has or of the body's, is a no-op), each by its raw size until the worker has stored its text (a
    queued message's text is not known before it is parsed; the raw message is the larger)."""
    return lambda conn: [(email_external_id(message_id), len(raw))
                         for message_id, raw in queued_by(conn, company_id, messages)]


def store_email(services: Services, company_id: int, tier_name: str | None, raw: bytes, source: str,
                lane: Lane = INTERACTIVE) -> dict[str, Any]:
    """Queue one raw message durably unless the company has it stored or queued already, within the
    tier's quotas (``within_quotas``); the answer of ``POST /v1/emails`` (and of a webhook, with
    ``external_id``). Only the headers are read here."""
    if not raw:
        raise validation_error("the body is empty: send one raw message (RFC 5322)")
    message_id, _ = message_id_of(raw)
    accepted = within_quotas(services, company_id, tier_name, message_sizes(company_id, [(message_id, raw)]),
                             lambda conn: accept_email(conn, company_id, message_id, raw, source, lane))
    if not accepted.duplicate:
        metrics.INGEST_ACCEPTED.labels("email" if source == "api" else "webhook").inc()
    return {"accepted": 0 if accepted.duplicate else 1,
            "job_ids": [] if accepted.job_id is None else [accepted.job_id],
            "message_id": message_id, "duplicate": accepted.duplicate,
            "external_id": email_external_id(message_id)}


def mbox_messages(body: bytes, limit: int) -> list[bytes]:
    """The messages of an ``application/mbox`` body (``core.mail.mbox``: as ``opsctl ingest`` writes
    them), else a 422 saying why: not an mbox, no message, over ``limit``, an empty message."""
    try:
        parts = split_mbox_bytes(body, max_bytes=len(body))
    except NotAnMbox as exc:
        raise validation_error(f"{exc}: send the messages as an mbox (RFC 4155), each after a "
                               "'From <address> <date>' line") from None
    if not parts:
        raise validation_error("the body holds no message: send an mbox (RFC 4155), each message after a "
                               "'From <address> <date>' line")
    if len(parts) > limit:
        raise validation_error(f"messages: at most {limit} per request (max_documents_per_request), got {len(parts)}")
    for part in parts:
        if not (part.raw or b"").strip():
            raise validation_error(f"message {part.number} (line {part.line}) is empty")
    return [part.raw or b"" for part in parts]


def store_mbox(services: Services, company_id: int, tier_name: str | None, body: bytes, source: str,
               priority_header: str | None = None) -> dict[str, Any]:
    """Queue every message of an mbox durably in one transaction (all or nothing), each unless the
    company has its Message-ID stored or queued or the body has it earlier; the answer of
    ``POST /v1/emails`` with ``Content-Type: application/mbox``. An mbox is bulk unless its
    ``Ingest-Priority`` header says interactive. Within the tier's quotas (``within_quotas``)."""
    raws = mbox_messages(body, services.settings.max_documents_per_request)
    lane = lane_of(services.settings, len(raws), priority_header, interactive_max=0)
    ids = [message_id_of(raw)[0] for raw in raws]
    messages = list(zip(ids, raws, strict=True))
    answers = within_quotas(services, company_id, tier_name, message_sizes(company_id, messages),
                            lambda conn: accept_emails(conn, company_id, messages, source, lane))
    new = [a.job_id for a in answers if not a.duplicate and a.job_id is not None]
    metrics.INGEST_ACCEPTED.labels("email" if source == "api" else "webhook").inc(len(new))
    return {"accepted": len(new), "job_ids": new,
            "messages": [{"message_id": mid, "job_id": a.job_id, "duplicate": a.duplicate}
                         for mid, a in zip(ids, answers, strict=True)]}
