"""Header values as text: 8-bit bytes and RFC 2047 encoded words decoded, addresses, dates.

Everything here takes the raw bytes of one header (``core.mail.ids.head_and_body``) and never
raises: a part it cannot decode is replaced, and ``Date`` gives None with a note.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime

from core.mail.text import cached_when_short, decode, storable

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t\r\n]+(?==\?[^?\s]+\?[QqBb]\?)")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_WHITESPACE = re.compile(r"\s+")
_EMPTY_GROUP = re.compile(r"^[^:<>@\"]*:\s*;?\s*$")  # "undisclosed-recipients:;"
# Address lists in their common shapes ("Name <a@b>", "\"Last, First\" <a@b>", "a@b", comma-separated),
# which email.utils.getaddresses reads into (name, address) exactly as these groups hold them
_WORD = r'[^ \t\r\n()<>@,:;"\[\]\\]+'  # an atom of a display name (a dot is part of it)
_ATOM = r'[^\s()<>@,:;".\[\]\\]+'  # no blank at all: getaddrspec drops an atom that strip() empties
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_ENTRY = (rf'[ \t]*(?:(?:"(?P<quoted>[^"\\\r\n]*)"|(?P<words>{_WORD}(?:[ \t]+{_WORD})*))?[ \t]*'
          rf"<(?P<routed>{_ADDR_SPEC})>|(?P<bare>{_ADDR_SPEC}))[ \t]*")
_UNNAMED_ENTRY = re.sub(r"\(\?P<\w+>", "(?:", _ENTRY)
_SIMPLE_LIST = re.compile(rf"{_UNNAMED_ENTRY}(?:,{_UNNAMED_ENTRY})*")
_SIMPLE_ENTRY = re.compile(_ENTRY)
_BLANKS = re.compile(r"[ \t]+")


@cached_when_short
def header_text(raw: bytes | None) -> str | None:
    """The readable value of one header: 8-bit bytes as UTF-8 (else cp1252), encoded words
    decoded, whitespace collapsed; None when the header is absent. Cached: a thread's subject recurs."""
    if raw is None:
        return None
    return storable(_WHITESPACE.sub(" ", decode_words(decode(raw, "utf-8")[0])).strip())


def decode_words(text: str) -> str:
    """RFC 2047: ``=?charset?Q|B?...?=`` words decoded, the whitespace between two adjacent words
    dropped, adjacent words in one charset decoded together (a character may straddle them)."""
    if "=?" not in text:
        return text
    text = _BETWEEN_WORDS.sub(r"\1", text)
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        if pending:
            out.append(decode(b"".join(pending), pending_charset)[0])
            pending.clear()

    for match in _ENCODED_WORD.finditer(text):
        if match.start() > position:
            flush()
            out.append(text[position : match.start()])
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
        if pending and charset.lower() != (pending_charset or "").lower():
            flush()
        pending_charset = charset
        pending.append(_word_bytes(match.group(2).upper(), match.group(3)))
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = payload.encode("ascii", "replace")
    if encoding == "Q":
        return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    data = data.rstrip(b"=")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return data


@cached_when_short
def addresses(raw: bytes | None) -> tuple[str, ...]:
    """``Name <addr@host>`` (or the bare address) for each address of an address header, display
    names decoded; a value that is not a list of addresses is kept as one readable entry. Cached:
    the same people write and are written to all day."""
    if raw is None:
        return ()
    value = decode(raw, "utf-8")[0]
    pairs = _pairs(value)
    found = tuple(entry for name, address in pairs if (entry := _address(name, address)))
    if found or not value.strip() or _EMPTY_GROUP.match(value):
        return found
    text = header_text(raw)
    return (text,) if text else ()


def _pairs(value: str) -> list[tuple[str, str]]:
    """(display name, address) of each entry, as ``email.utils.getaddresses`` reads them; the
    common shapes without it (its character-by-character reader is the costly part)."""
    if _SIMPLE_LIST.fullmatch(value):
        return [(entry["quoted"] if entry["quoted"] is not None else " ".join(_BLANKS.split(entry["words"] or "")),
                 entry["routed"]) if entry["bare"] is None else ("", entry["bare"])
                for entry in _SIMPLE_ENTRY.finditer(value)]
    try:
        return getaddresses([value])
    except Exception:  # the parser has failed on hostile input before: keep the text
        return []


def _address(name: str, address: str) -> str:
    name = storable(_WHITESPACE.sub(" ", decode_words(name)).strip())
    address = storable(_WHITESPACE.sub("", address))
    if name and address and name != address:
        return f"{name} <{address}>"
    return address or name


def first_address(raw: bytes | None) -> str | None:
    found = addresses(raw)
    return found[0] if found else None


def date_of(raw: bytes | None) -> tuple[datetime | None, str | None]:
    """(the Date header as an aware UTC datetime, None) or (None, a note saying why not)."""
    if raw is None:
        return None, "no Date"
    text = header_text(raw) or ""
    try:
        parsed = parsedate_to_datetime(text)
        if parsed.tzinfo is None:  # "-0000": the time is UTC, the zone unknown
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC), None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None, f"unparseable Date: {text[:100]!r}"
