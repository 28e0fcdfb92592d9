"""A raw message (RFC 5322 / MIME bytes) read into what the mail store keeps and indexes.

``parse_message`` never raises: broken input (no Message-ID, an unparseable Date, malformed
headers, empty parts, lying charsets, NUL bytes) gives what can be read, and ``notes`` says what
could not. Every string it returns can be stored in PostgreSQL (no NUL, no lone surrogate).

``message_id_of`` answers the id from the header block alone (cheap: the API answers it before
the message is parsed); both read the id through ``core.mail.ids.identity_of``, so they agree.
"""

from __future__ import annotations

from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from functools import lru_cache

from core.mail import mime
from core.mail.headers import addresses, date_of, first_address, header_text
from core.mail.ids import MAX_REFERENCES, head_and_body, id_list, identity_of, references_of
from core.mail.model import Attachment, ParsedMessage
from core.mail.parts import read_parts
from core.mail.quotes import strip_quotes
from core.mail.subjects import is_forward, normalize_subject
from core.mail.text import decode, storable

__all__ = ["Attachment", "ParsedMessage", "message_id_of", "normalize_subject", "parse_message"]

_REGISTRY = HeaderRegistry()
_CACHED_VALUE = 512  # longer header values are parsed each time (the cache holds short ones only)


@lru_cache(maxsize=4096)
def _cached_header(name: str, value: str) -> BaseHeader:
    return _REGISTRY(name, value)


def _header(name: str, value: str) -> BaseHeader:
    """policy.default's header objects, each value parsed once: the parser and ``get_content_type``
    ask for a part's Content-Type a dozen times, and the modern parser is the costly part."""
    return _cached_header(name, value) if len(value) <= _CACHED_VALUE else _REGISTRY(name, value)


_PARSER = BytesParser(policy=policy.default.clone(header_factory=_header))


def message_id_of(raw: bytes) -> tuple[str, bool]:
    """(message_id, synthetic) from the headers alone (cheap; what the API answers in its 202).
    Equals parse_message(raw).message_id / .synthetic_id for every input."""
    return identity_of(*head_and_body(raw))


def parse_message(raw: bytes) -> ParsedMessage:
    """Never raises for any bytes: broken input gives what can be read, with notes."""
    headers, body = head_and_body(raw)
    message_id, synthetic = identity_of(headers, body)
    notes: list[str] = ["no Message-ID: the id is derived from the content"] if synthetic else []
    subject = header_text(headers.get("subject"))
    date, date_note = date_of(headers.get("date"))
    notes += [date_note] if date_note else []
    answered, ignored = id_list(headers.get("in-reply-to"))
    replied = [ref for ref in answered if ref != message_id]
    listed, ignored_listed = id_list(headers.get("references"))
    if message_id in listed or message_id in answered:
        notes.append("self-reference dropped")
    notes += [f'reference without "@" ignored: {ref}' for ref in dict.fromkeys([*ignored_listed, *ignored])]
    references = references_of(message_id, listed, replied[0] if replied else None)
    if (distinct := len(dict.fromkeys(listed))) > MAX_REFERENCES:
        notes.append(f"References cut to {MAX_REFERENCES} of {distinct} ids")
    content = _content(raw, body)
    own = "\n\n".join(text.rstrip() for text in content.body)
    kept = [*content.forwarded, *(f"--- attached file: {name} ---\n{text}" for name, text in content.attached)]
    body_text = "\n\n".join(part.rstrip() for part in (own, *kept) if part.strip())
    index_own = strip_quotes(own, forwarded=is_forward(subject)) if own.strip() else ""
    index_text = "\n\n".join(part for part in (index_own, *kept) if part.strip()) or body_text
    return ParsedMessage(
        message_id=message_id,
        synthetic_id=synthetic,
        subject=subject,
        from_=first_address(headers.get("from")),
        to=addresses(headers.get("to")),
        cc=addresses(headers.get("cc")),
        date=date,
        in_reply_to=replied[0] if replied else None,
        references=references,
        body_text=storable(body_text),
        index_text=storable(index_text),
        attachments=tuple(content.attachments),
        notes=tuple(storable(note) for note in dict.fromkeys([*notes, *content.notes])),
    )


def _content(raw: bytes, body: bytes) -> mime.Content:
    tree = read_parts(raw)  # well-formed mail, read at once; the email package reads the rest
    return mime.read(tree) if tree is not None else email_content(raw, body)


def email_content(raw: bytes, body: bytes) -> mime.Content:
    """The parts as the standard library's email package reads them (any input)."""
    try:
        message: Message = _PARSER.parsebytes(raw)
    except Exception as exc:  # the email package failed on these bytes: the body as text
        content = mime.Content()
        content.note(f"MIME structure unreadable ({type(exc).__name__}): body read as text")
        text, note = decode(body, None)
        content.note(note)
        content.body.append(text.replace("\r\n", "\n"))
        return content
    return mime.read(message)
