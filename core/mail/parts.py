"""The MIME tree of a well-formed message, read straight from its bytes (the fast path).

The standard library's parser reads a message line by line through a generator and builds a
header object for every header it is asked for: most of what parsing a message used to cost.
``read_parts`` cuts the same tree out of the bytes at once, for the shapes well-formed mail has,
and answers None for anything else, which the email package then reads (``core.mail.message``).

It gives what the email package gives (the same parts, types, parameters, file names, charsets
and decoded payloads, ``tests/test_mail_parts.py`` compares both), because it follows the same
rules (``email.feedparser``: headers, boundaries, the line end before a boundary; ``Message``:
``get_param``, ``get_filename``, ``get_payload(decode=True)``) and leaves every case where
the rules get subtle to the email package:

- a lone CR, a ``From `` line among the headers, 8-bit bytes or RFC 2047/2231 in a
  Content-Type, Content-Disposition or Content-Transfer-Encoding, quotes, comments or escapes
  in their parameters, a value that is not a plain token;
- message/* parts (forwarded messages, delivery reports) and multipart/digest;
- a multipart without a boundary, without its first or its closing boundary line, with two
  boundary lines in a row, or a part running to the end of its parent;
- uuencoded payloads.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import quopri
import re

_HEADER = re.compile(rb"(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])")  # email.feedparser.headerRE
_TOKEN = rb"[A-Za-z0-9!#$&^_.+-]+"
_VALUE = rb'(?:' + _TOKEN + rb'|"[^"\\\x00-\x1f\x7f-\xff<>;?*%\']*")'
_PARAMS = rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"=" + _VALUE + rb")*[ \t]*;?[ \t]*"
_PARAM = re.compile(rb"(" + _TOKEN + rb")=(" + _VALUE + rb")")
_CONTENT_TYPE = re.compile(rb"(" + _TOKEN + rb"/" + _TOKEN + rb")(" + _PARAMS + rb")")
_DISPOSITION = re.compile(rb"(" + _TOKEN + rb")(" + _PARAMS + rb")")
_ENCODING = re.compile(_TOKEN)
_BOUNDARY_END = re.compile(rb"(--)?[ \t]*(?:\r\n|\r|\n)?$")  # what follows "--boundary" on its line
_READ = (b"content-type", b"content-transfer-encoding", b"content-disposition")
# A header block of "Name: value" lines and continuations ended by a blank line, read with one pattern
_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\n]*\n(?:[ \t][^\n]*\n)*)*\r?\n")
_READ_FIELD = re.compile(rb"^(content-(?:type|transfer-encoding|disposition)):[ \t]*([^\n]*\n(?:[ \t][^\n]*\n)*)",
                         re.MULTILINE | re.IGNORECASE)


class Unsupported(Exception):
    """The message leaves the shapes read here: the email package reads it."""


class Part:
    """One MIME part, with the part of ``email.message.Message``'s interface ``core.mail.mime``
    uses, answering what the email package answers for the same bytes."""

    __slots__ = ("_body", "_children", "_ctype", "_disposition", "_disposition_params", "_encoding", "_params")

    def __init__(self, headers: dict[bytes, bytes], body: bytes, children: list[Part] | None) -> None:
        ctype = headers.get(b"content-type")
        if ctype is None:
            self._ctype, self._params = "text/plain", {}
        else:
            found = _CONTENT_TYPE.fullmatch(ctype)
            if not found:
                raise Unsupported("content-type")
            self._ctype, self._params = found.group(1).decode().lower(), _params(found.group(2))
        disposition = headers.get(b"content-disposition")
        self._disposition: str | None = None
        self._disposition_params: dict[str, str] = {}
        if disposition is not None:
            found = _DISPOSITION.fullmatch(disposition)
            if not found:
                raise Unsupported("content-disposition")
            self._disposition, self._disposition_params = found.group(1).decode().lower(), _params(found.group(2))
        encoding = headers.get(b"content-transfer-encoding", b"")
        if encoding and not _ENCODING.fullmatch(encoding):
            raise Unsupported("content-transfer-encoding")
        self._encoding = encoding.decode().lower()
        if self._encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
            raise Unsupported("uuencode")
        self._body = body
        self._children = children

    def get_content_type(self) -> str:
        return self._ctype

    def get_content_maintype(self) -> str:
        return self._ctype.split("/")[0]

    def get_content_subtype(self) -> str:
        return self._ctype.split("/")[1]

    def is_multipart(self) -> bool:
        return self._children is not None

    def get_param(self, param: str, failobj: object = None, header: str = "content-type") -> object:
        params = self._params if header == "content-type" else self._disposition_params
        return params.get(param.lower(), failobj)

    def get_content_charset(self) -> str | None:
        charset = self._params.get("charset")
        return charset.lower() if charset is not None else None

    def get_content_disposition(self) -> str | None:
        return self._disposition

    def get_filename(self) -> str | None:
        name = self._disposition_params.get("filename")
        if name is None:
            name = self._params.get("name")
        return name.strip() if name is not None else None

    def get_payload(self, decode: bool = False) -> list[Part] | bytes | None:
        """The parts of a multipart (``decode`` False), or the decoded payload of a leaf."""
        if self._children is not None:
            return None if decode else self._children
        if self._encoding == "quoted-printable":
            return quopri.decodestring(self._body)
        if self._encoding == "base64":
            return _base64(b"".join(self._body.splitlines()))
        return self._body

    def raw_items(self) -> list[tuple[str, str]]:
        """Never needed: message/* parts (whose headers are read as text) are not read here."""
        raise Unsupported("raw_items")


def read_parts(raw: bytes) -> Part | None:
    """The MIME tree of ``raw``, or None when it is not a shape read here."""
    if b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n"):
        return None  # a lone CR ends a line for the email package: not worth the subtlety
    try:
        return _part(raw, 0, len(raw), top=True)
    except Unsupported:
        return None


def _line_end(raw: bytes, start: int, end: int) -> int:
    """Where the line starting at ``start`` ends (after its line feed), within ``end``."""
    found = raw.find(b"\n", start, end)
    return end if found < 0 else found + 1


def _part(raw: bytes, start: int, end: int, *, top: bool = False) -> Part:
    """The part in ``raw[start:end]`` (a subpart ends before its parent's next boundary line)."""
    headers, at = _headers(raw, start, end)
    ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if ctype.startswith(b"message/") or ctype == b"multipart/digest":
        raise Unsupported("message part")
    if not ctype.startswith(b"multipart/"):
        body = raw[at:end]
        if not top:  # the line end before a boundary belongs to the boundary
            body = body[:-2] if body.endswith(b"\r\n") else body[:-1] if body.endswith(b"\n") else body
        return Part(headers, body, None)
    part = Part(headers, b"", [])
    boundary = part.get_param("boundary")
    if not isinstance(boundary, str) or not boundary.rstrip():
        raise Unsupported("no boundary")
    part._children = _subparts(raw, at, end, b"--" + boundary.rstrip().encode())
    return part


def _headers(raw: bytes, start: int, end: int) -> tuple[dict[bytes, bytes], int]:
    """The Content-* headers of the part at ``start`` (lower-cased names, unfolded values, the
    first of each) and where its body starts."""
    headers: dict[bytes, bytes] = {}
    block = _PLAIN_BLOCK.match(raw, start, end)
    if block is not None:
        for field in _READ_FIELD.finditer(raw, start, block.end()):
            headers.setdefault(field.group(1).lower(), field.group(2))
        at = block.end()
    else:
        name: bytes | None = None  # the header continuation lines belong to (None: not one we read)
        at = start
        while at < end:
            stop = _line_end(raw, at, end)
            line = raw[at:stop]
            if not _HEADER.match(line):
                if line in (b"\n", b"\r\n"):
                    at = stop
                break  # else the line starts the body (the email package's rule)
            at = stop
            if line[0] in b" \t":
                if name is not None:
                    headers[name] += line
                continue
            if line.startswith(b"From "):
                raise Unsupported("From line")
            colon = line.index(b":")
            key = line[:colon].lower()
            name = key if key in _READ and key not in headers and colon else None
            if name is not None:
                headers[name] = line[colon + 1 :].lstrip(b" \t")
    for key, value in headers.items():  # unfolded as policy.default does: line ends removed
        headers[key] = value.replace(b"\r", b"").replace(b"\n", b"")
    return headers, at


def _subparts(raw: bytes, start: int, end: int, separator: bytes) -> list[Part]:
    """The parts between the boundary lines in ``raw[start:end]``."""
    marks: list[tuple[int, int, bool]] = []  # boundary lines: start, end, whether the closing one
    at = raw.find(separator, start, end)
    while at >= 0:
        if at == start or raw[at - 1] == 0x0A:  # at the start of a line
            stop = _line_end(raw, at, end)
            found = _BOUNDARY_END.match(raw, at + len(separator), stop)
            if found is not None:
                marks.append((at, stop, bool(found.group(1))))
        at = raw.find(separator, at + 1, end)
    if not marks or marks[0][2] or not any(close for _, _, close in marks):
        raise Unsupported("no opening or closing boundary")
    children: list[Part] = []
    for (_, stop, close), (following, _, _) in itertools.pairwise(marks):
        if close:
            break
        if following == stop:
            raise Unsupported("boundary lines in a row")
        children.append(_part(raw, stop, following))
    return children


def _params(text: bytes) -> dict[str, str]:
    """The parameters of a Content-Type / Content-Disposition value as ``Message.get_param``
    reads them: names lower-cased, values unquoted, the first of a repeated name."""
    params: dict[str, str] = {}
    for found in _PARAM.finditer(text):
        params.setdefault(found.group(1).decode().lower(), found.group(2).decode().strip('"'))
    return params


def _base64(data: bytes) -> bytes:
    """``email._encoded_words.decode_b``: strict with the padding fixed, then lenient."""
    missing = b"==="[: 4 - len(data) % 4] if len(data) % 4 else b""
    for candidate, validate in ((data + missing, True), (data, False), (data + b"==", False)):
        try:
            return base64.b64decode(candidate, validate=validate)
        except binascii.Error:
            continue
    return data
