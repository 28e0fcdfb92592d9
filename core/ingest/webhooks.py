"""Turning a webhook or e-mail event into a document (pure).

A JSON object event names its own id (``id``, ``event_id`` or ``message_id``) and text (``text``,
``body``, ``content``, ``message`` or ``html``); a title comes from ``title`` or ``subject``.
Anything else, or a non-JSON body, is stored as text under the SHA-256 of the body, so a
redelivered event is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from core.ingest.accept import DocumentIn

SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ID_FIELDS = ("id", "event_id", "message_id", "external_id")
TEXT_FIELDS = ("text", "body", "content", "message", "html")
TITLE_FIELDS = ("title", "subject")
META_FIELDS = ("type", "event", "from", "to", "sender", "url")
TAGS = re.compile(r"<[^>]+>")


def _first(event: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = event.get(name)
        if value not in (None, ""):
            return value
    return None


def event_document(source: str, body: bytes) -> DocumentIn:
    """The document an event body stands for. Raises ValueError (→ 4xx) for unusable bodies."""
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    digest = hashlib.sha256(body).hexdigest()
    try:
        event = json.loads(text)
    except ValueError:
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
