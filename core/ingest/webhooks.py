"""Turning a webhook or e-mail event into a document (pure), or telling it is a raw message.

A body sent as ``message/rfc822``, or any body for the source ``email`` that is not declared JSON,
is one raw e-mail (``is_raw_message``): it goes the way of ``POST /v1/emails``.

A JSON object event names its own id (``id``, ``event_id`` or ``message_id``) and text (``text``,
``body``, ``content``, ``message`` or ``html``); a title comes from ``title`` or ``subject``.
Anything else is stored as text under the SHA-256 of the body, so a redelivered event is a no-op
and nothing sent is lost: a JSON value that is not an object, and a body that is not JSON as
``core.inputs.parse_json`` takes it (``NaN``, ``1e400``, a lone surrogate, nesting past 64
levels) unless its sender declared it JSON (``Content-Type: application/json`` or ``…+json``):
then the sender's JSON is broken and it is refused (``NotJson``), not stored as a document of
brackets. A body that is not UTF-8, or JSON holding a NUL, is refused (``InputRefused``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from core.ingest.accept import DocumentIn
from core.inputs import NotJson, decode_utf8, json_media, parse_utf8_json

SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
COMPANY_RE = re.compile(r"\A[1-9][0-9]{0,17}\Z")  # ASCII digits that fit a bigint ("²".isdigit() is True)
ID_FIELDS = ("id", "event_id", "message_id", "external_id")
TEXT_FIELDS = ("text", "body", "content", "message", "html")
TITLE_FIELDS = ("title", "subject")
META_FIELDS = ("type", "event", "from", "to", "sender", "url")
TAGS = re.compile(r"<[^>]+>")


def is_raw_message(source: str, content_type: str | None) -> bool:
    """Whether a webhook body is one raw e-mail rather than an event."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "message/rfc822" or (source == "email" and not json_media(content_type))


def company_ref(value: str | None, where: str = "X-Opsctl-Company") -> int | None:
    """The company id an unauthenticated webhook names (header or query), None if it names none,
    or ``ValueError`` saying what a company id looks like when ``value`` is not one (a name, say)."""
    if value is None:
        return None
    if not COMPANY_RE.match(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(f"{where} must be the company's numeric id, e.g. 42 (`opsctl tenant list` shows it), "
                         f"not {shown!r}")
    return int(value)


def _first(event: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = event.get(name)
        if value not in (None, ""):
            return value
    return None


def event_document(source: str, body: bytes, content_type: str | None = None) -> DocumentIn:
    """The document an event body stands for.

    Raises ``InputRefused`` (not UTF-8, JSON holding NUL, declared JSON that is not) or pydantic's
    ``ValidationError`` (no usable text): both are the client's to fix."""
    text = decode_utf8(body)
    digest = hashlib.sha256(body).hexdigest()
    try:
        event = parse_utf8_json(text)
    except NotJson as exc:
        if json_media(content_type):
            raise NotJson(f"the event is sent as {content_type} but is not JSON: {exc}") from exc
        event = None
    if not isinstance(event, dict):
        return DocumentIn(external_id=f"{source}:{digest}", text=text, title=None, metadata={"source": source})
    event_id = _first(event, ID_FIELDS)
    content = _first(event, TEXT_FIELDS)
    html = event.get("html")
    if isinstance(content, str) and isinstance(html, str) and content is html:
        content = TAGS.sub(" ", html)
    if not isinstance(content, str):
        content = json.dumps(event, ensure_ascii=False, sort_keys=True, indent=1)
    title = _first(event, TITLE_FIELDS)
    metadata: dict[str, Any] = {"source": source}
    for name in META_FIELDS:
        if isinstance(event.get(name), str | int | float | bool):
            metadata[name] = event[name]
    return DocumentIn(
        external_id=f"{source}:{event_id if event_id is not None else digest}"[:512],
        text=content,
        title=str(title)[:1000] if title is not None else None,
        metadata=metadata,
    )
