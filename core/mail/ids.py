"""Message ids: normalised, bounded, listed, and made up (stably) when a message has none.

A Message-ID is stored without its angle brackets and whitespace, case kept (RFC 5322 ids are
case-sensitive), at most ``MAX_ID_LENGTH`` characters: a longer one keeps its start and ends with
a hash of the whole, so two long ids never meet by truncation.

A message without a usable Message-ID gets ``<hex>@opsctl.synthetic``: a hash of its body and its
From, Date, Subject and To headers (whitespace collapsed), so re-ingesting the same bytes, or the
same message re-delivered with other transport headers (Received, Delivered-To, Return-Path,
X-*), gives the same id. ``head_and_body`` reads the header block itself (never raises, never
parses MIME), so that ``message_id_of`` is cheap and ``parse_message`` gives the same answer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import NamedTuple

from core.mail.text import cached_when_short, storable

MAX_ID_LENGTH = 512
MAX_REFERENCES = 100  # a References header is cut to its first id and its last 99
SYNTHETIC_DOMAIN = "opsctl.synthetic"

_BRACKETED = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_LINE = re.compile(rb"^([\x21-\x39\x3b-\x7e]*):(.*)$", re.DOTALL)  # the email parser's rule
_LINE = re.compile(rb"\r?\n")
_FIRST_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_SYNTHETIC_HEADERS = ("from", "date", "subject", "to")
# A header block of "Name: value" lines and their continuations only (no mbox "From " line, no
# stray line, no empty name): read with one pattern, the way the line-by-line loop reads it
_FIELD = rb"[\x21-\x39\x3b-\x7e]+:[^\n]*(?:\n[ \t][^\n]*)*"
_PLAIN_HEAD = re.compile(rb"%s(?:\n%s)*" % (_FIELD, _FIELD))
_FIELDS = re.compile(rb"^([\x21-\x39\x3b-\x7e]+):([^\n]*)((?:\n[ \t][^\n]*)*)", re.MULTILINE)


def head_and_body(raw: bytes) -> tuple[dict[str, bytes], bytes]:
    """(the first value of each header, lower-cased name -> unfolded bytes; the body bytes).
    The header block ends at the first blank line, or at the first line that is neither a header
    nor a continuation (the email parser's rule too); an mbox ``From `` line is skipped."""
    blank = _blank_line(raw)
    head, body = (raw[: blank[0]], raw[blank[1]:]) if blank else (raw, b"")
    if _PLAIN_HEAD.fullmatch(head):
        return _fields(head), body
    return _read_lines(raw)


def _blank_line(raw: bytes) -> tuple[int, int] | None:
    """Where the first blank line is, as ``_FIRST_BLANK_LINE.search`` finds it (start, end)."""
    lf = raw.find(b"\n\n")
    crlf = raw.find(b"\n\r\n", 0, len(raw) if lf < 0 else lf + 2)  # one before the first LF LF
    if crlf >= 0:
        at, end = crlf, crlf + 3
    elif lf >= 0:
        at, end = lf, lf + 2
    else:
        return None
    return (at - 1 if at and raw[at - 1] == 0x0D else at), end


def _read_lines(raw: bytes) -> tuple[dict[str, bytes], bytes]:
    """``head_and_body`` line by line (any header block)."""
    headers: dict[str, bytes] = {}
    match = _FIRST_BLANK_LINE.search(raw)
    head, body = (raw[: match.start()], raw[match.end():]) if match else (raw, b"")
    lines = _LINE.split(head)
    name: str | None = None  # the header the continuation lines belong to; None: not one we keep
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                headers[name] += b" " + line.strip()
            continue
        if line.startswith(b"From "):  # an mbox separator (or a stray one): not a header
            name = None
            continue
        found = _HEADER_LINE.match(line)
        if not found:
            rest = b"\n".join(lines[index:])
            return headers, rest + (b"\n\n" + body if match else b"")
        name = found.group(1).decode("ascii").lower()
        if not name or name in headers:  # only the first one counts
            name = None
            continue
        headers[name] = found.group(2).strip()
    return headers, body


def _fields(head: bytes) -> dict[str, bytes]:
    """The headers of a plain header block (``_PLAIN_HEAD``), as the loop above reads them."""
    headers: dict[str, bytes] = {}
    for field in _FIELDS.finditer(head):
        key = field.group(1).decode("ascii").lower()
        if key not in headers:
            value, folded = field.group(2).strip(), field.group(3)
            headers[key] = b" ".join([value, *(line.strip() for line in folded.split(b"\n")[1:])]) if folded else value
    return headers


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@cached_when_short
def normalize_id(value: str) -> str | None:
    """A msg-id without brackets and whitespace, bounded; None when nothing is left."""
    text = _CONTROL.sub("", _WHITESPACE.sub("", storable(value))).strip("<>")
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]
        text = f"{text[: MAX_ID_LENGTH - 33]}~{digest}"
    return text


class IdList(NamedTuple):
    """The msg-ids of a References / In-Reply-To value, and the bracketed tokens that are none."""

    ids: list[str]      # in order, normalised
    ignored: list[str]  # bracketed but without "@" (old git send-email's "<yes>"), normalised


def id_list(value: bytes | str | None) -> IdList:
    """The msg-ids of a References / In-Reply-To value, in order, normalised. Bracketed ids
    when there are any (In-Reply-To often carries comments too); else whitespace-separated
    tokens that look like ids (an ``@`` in them), as some clients write them bare.

    A msg-id is ``<id-left@id-right>`` (RFC 5322): a bracketed token without an ``@`` names no
    message and is ignored (listed in ``ignored``). Old git send-email wrote ``In-Reply-To: <yes>``
    when its user answered "yes" to its prompt; taken as an id, ``yes`` joins every such patch,
    years apart, into one thread under a ghost. The ``@`` is looked for before an id is bounded
    (a bounded id may have lost it)."""
    if not value:
        return IdList([], [])
    text = _text(value)
    found = _BRACKETED.findall(text)
    tokens = found if found else [token for token in text.split() if "@" in token]
    ids: list[str] = []
    ignored: list[str] = []
    for token in tokens:
        normalized = normalize_id(token)
        if normalized is not None:
            (ids if "@" in token else ignored).append(normalized)
    return IdList(ids, ignored)


def own_id(value: bytes | str | None) -> str | None:
    """The Message-ID header's id: the first bracketed one, else the whole value."""
    if not value:
        return None
    text = _text(value)
    found = _BRACKETED.search(text)
    if found:
        return normalize_id(found.group(1))
    return normalize_id(text.split()[0]) if text.split() else None


def references_of(own: str, references: Iterable[str], in_reply_to: str | None) -> tuple[str, ...]:
    """References in order, then In-Reply-To if not among them; no duplicates, never ``own``;
    at most ``MAX_REFERENCES`` (the first, the root of the thread, and the most recent ones)."""
    chain = dict.fromkeys(ref for ref in (*references, *([in_reply_to] if in_reply_to else [])) if ref != own)
    ids = tuple(chain)
    if len(ids) > MAX_REFERENCES:
        ids = (ids[0], *ids[len(ids) - MAX_REFERENCES + 1:])
    return ids


def _collapsed(value: bytes) -> bytes:
    return b" ".join(value.split())


def synthetic_id(headers: dict[str, bytes], body: bytes) -> str:
    """``<hex>@opsctl.synthetic`` from the body and From, Date, Subject, To: stable across
    re-deliveries (line endings and trailing whitespace of the body do not count)."""
    digest = hashlib.sha256()
    for name in _SYNTHETIC_HEADERS:
        digest.update(name.encode() + b"\0" + _collapsed(headers.get(name, b"")) + b"\0")
    digest.update(b"\n".join(line.rstrip() for line in _LINE.split(body)).rstrip())
    return f"{digest.hexdigest()[:40]}@{SYNTHETIC_DOMAIN}"


def identity_of(headers: dict[str, bytes], body: bytes) -> tuple[str, bool]:
    """(message_id, synthetic): the Message-ID header's id, or a synthetic one."""
    found = own_id(headers.get("message-id"))
    if found is not None:
        return found, False
    return synthetic_id(headers, body), True
