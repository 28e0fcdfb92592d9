"""The MIME tree of a message read into text, attachments and notes.

- multipart/alternative: text/plain when it has text, else HTML converted, else the richest part
- multipart/mixed, related, report...: every part in order; inline text parts are the body
- attachments: name, type and decoded size; text ones (text/*) are indexed, binary ones are not
- multipart/signed: the signed content is read, the signature is listed and noted, not indexed
- multipart/encrypted, application/pkcs7-mime: listed and noted, not indexed
- message/rfc822 (a forwarded message): its headers and text are read, its attachments listed

Every part is read on its own: a part the email package or a codec chokes on is noted and the
rest of the message still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from core.mail.headers import decode_words, header_text
from core.mail.html import html_to_text
from core.mail.model import Attachment
from core.mail.parts import Part
from core.mail.text import decode, storable

MAX_DEPTH = 32  # nested multiparts and forwarded messages read; deeper ones are noted
_SIGNATURES = frozenset({"application/pgp-signature", "application/pkcs7-signature",
                         "application/x-pkcs7-signature"})
_SEALED = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted"})
_FORWARDED_HEADERS = ("from", "date", "subject", "to", "cc")
_READABLE = ("text/plain", "text/html")

MimePart = Message | Part  # the email package's tree, or the fast path's (core.mail.parts)


@dataclass
class Content:
    """What the parts of one message hold, in reading order."""

    body: list[str] = field(default_factory=list)            # the readable text of the message itself
    forwarded: list[str] = field(default_factory=list)       # forwarded messages: headers and text
    attached: list[tuple[str, str]] = field(default_factory=list)  # (file name, text) of text attachments
    attachments: list[Attachment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str | None) -> None:
        if text and text not in self.notes:
            self.notes.append(storable(text))


def read(message: MimePart) -> Content:
    content = Content()
    _part(message, content, 0)
    return content


def raw_header(part: MimePart, name: str) -> bytes | None:
    """The raw bytes of a part's first ``name`` header."""
    return next((_raw(value) for key, value in part.raw_items() if key.lower() == name), None)


def _raw(value: object) -> bytes:
    """A header value as the bytes it was read from (the parser keeps 8-bit bytes as escapes)."""
    text = value if isinstance(value, str) else str(value)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _part(part: MimePart, content: Content, depth: int) -> None:
    if depth > MAX_DEPTH:
        content.note(f"parts nested deeper than {MAX_DEPTH} levels not read")
        return
    try:
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            _forwarded(part, content, depth)
        elif part.is_multipart():
            _multipart(part, ctype, content, depth)
        else:
            _leaf(part, ctype, content)
    except Exception as exc:  # the email package raises on some hostile headers: skip the part
        content.note(f"unreadable part skipped ({type(exc).__name__})")


def _children(part: MimePart) -> list[MimePart]:
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, (Message, Part))] if isinstance(payload, list) else []


def _multipart(part: MimePart, ctype: str, content: Content, depth: int) -> None:
    children = _children(part)
    if ctype == "multipart/alternative":
        _alternative(children, content, depth)
    elif ctype == "multipart/signed":
        for index, child in enumerate(children):
            if index == 0:
                _part(child, content, depth + 1)
            else:
                _listed(child, content, "signature part not indexed")
    elif ctype == "multipart/encrypted":
        content.note("encrypted part not indexed")
        for child in children:
            if child.get_content_type() != "application/pgp-encrypted":  # the "Version: 1" control part
                _listed(child, content, None)
    elif part.get_content_maintype() == "message":  # delivery-status and the like: header blocks
        for child in children:
            lines = [f"{key}: {header_text(_raw(value))}" for key, value in child.raw_items()]
            if lines:
                content.body.append("\n".join(lines))
    else:
        for child in children:
            _part(child, content, depth + 1)


def _alternative(children: list[MimePart], content: Content, depth: int) -> None:
    """The plain-text version when it has text, else the HTML one, else the last (richest) part."""
    for wanted in _READABLE:
        for child in children:
            if child.get_content_type() == wanted and not _is_attachment(child):
                text, note = _text_of(child)
                if text.strip():
                    content.body.append(text)
                    content.note(note)
                    return
    if children:
        _part(children[-1], content, depth + 1)


def _forwarded(part: MimePart, content: Content, depth: int) -> None:
    children = _children(part)
    if not children:
        _leaf(part, "text/plain", content)
        return
    inner = children[0]
    forwarded = Content()
    _part(inner, forwarded, depth + 1)
    lines = [f"{name.capitalize()}: {value}" for name in _FORWARDED_HEADERS
             if (value := header_text(raw_header(inner, name)))]
    text = "\n\n".join(forwarded.body + forwarded.forwarded)
    sections = [f"--- attached file: {name} ---\n{body}" for name, body in forwarded.attached]
    content.forwarded.append("\n\n".join(["--- forwarded message ---\n" + "\n".join(lines), text, *sections]).strip())
    content.attachments.extend(forwarded.attachments)
    for note in forwarded.notes:
        content.note(f"forwarded message: {note}")


def _leaf(part: MimePart, ctype: str, content: Content) -> None:
    attachment = _is_attachment(part)
    if ctype in _SIGNATURES:
        _listed(part, content, "signature part not indexed")
    elif ctype in _SEALED:
        kind = str(part.get_param("smime-type", "") or "")
        _listed(part, content, "S/MIME signed part not indexed (opaque signature)" if "signed" in kind.lower()
                else f"encrypted part not indexed ({ctype})")
    elif (ctype in _READABLE and not attachment) or part.get_content_maintype() == "multipart":
        if part.get_content_maintype() == "multipart":
            content.note(f"{ctype} without parts: read as text")
        text, note = _text_of(part)
        content.note(note)
        if text.strip():
            content.body.append(text)
    elif part.get_content_maintype() == "text":
        text, note = _text_of(part)
        content.note(note)
        name = _filename(part)
        content.attachments.append(_attachment(part, name, True))
        if text.strip():
            content.attached.append((name or ctype, text))
    else:
        _listed(part, content, None)


def _listed(part: MimePart, content: Content, note: str | None) -> None:
    content.attachments.append(_attachment(part, _filename(part), False))
    content.note(note)


def _attachment(part: MimePart, name: str | None, indexed: bool) -> Attachment:
    return Attachment(name, storable(part.get_content_type())[:255], len(_payload(part)), indexed)


def _is_attachment(part: MimePart) -> bool:
    return part.get_content_disposition() == "attachment" or _filename(part) is not None


def _filename(part: MimePart) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # a Content-Disposition the parameter parser cannot read
        return None
    if not isinstance(name, str):
        return None
    name = storable(" ".join(decode_words(name).split()))[:255]  # Outlook encodes names with RFC 2047
    return name or None


def _payload(part: MimePart) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # a transfer encoding the email package cannot undo
        return b""
    return data if isinstance(data, bytes) else b""


def _text_of(part: MimePart) -> tuple[str, str | None]:
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text, note = decode(_payload(part), charset)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return storable(text), note
