"""Text out of bytes in any declared (or lying) charset, as strings PostgreSQL can store.

Mail declares charsets that Python does not know (``x-unknown``, ``unknown-8bit``), that are
wrong (8-bit UTF-8 labelled ``us-ascii``) or that are not text encodings at all (``base64``).
``decode`` tries the declared charset, then UTF-8, then cp1252, then latin-1 (which decodes any
byte), and says what it did when it was not the declared charset.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TypeVar

_Value = TypeVar("_Value", bound="str | bytes | None")
_Result = TypeVar("_Result")
CACHED_LENGTH = 512  # longer values are computed each time: a cache of short ones cannot grow big

_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")
_BLANK_RUN = re.compile(r"\n{3,}")
_FALLBACKS = ("utf-8", "cp1252", "latin-1")


def storable(text: str) -> str:
    """``text`` without NUL (PostgreSQL text refuses it) and with lone surrogates replaced."""
    if "\x00" not in text and (text.isascii() or _encodes(text)):  # a lone surrogate does not encode
        return text
    return _NOT_STORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def cached_when_short(function: Callable[[_Value], _Result]) -> Callable[[_Value], _Result]:
    """``function`` (pure, one argument) remembering its answers for the last 4,096 values of at
    most ``CACHED_LENGTH`` characters (mail repeats its senders, subjects and message ids)."""
    cached = lru_cache(maxsize=4096)(function)

    @wraps(function)
    def call(value: _Value) -> _Result:
        return cached(value) if value is None or len(value) <= CACHED_LENGTH else function(value)

    return call


def single_blank_lines(text: str) -> str:
    """``text`` with runs of blank lines cut to one."""
    return _BLANK_RUN.sub("\n\n", text) if "\n\n\n" in text else text


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=512)
def codec_of(charset: str | None) -> str | None:
    """The Python text codec for a MIME charset name, or None when there is none."""
    if not charset or len(charset) > 64:
        return None
    try:
        info = codecs.lookup(charset.strip().strip('"').lower())
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib, rot13...: bytes-to-bytes
        return None
    return info.name


def decode(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """(text, note): the declared charset if it decodes ``data``, else the first fallback that
    does; the note says which fallback was used (None when the declared charset worked)."""
    declared = codec_of(charset)
    if declared is not None:
        try:
            return data.decode(declared), None
        except (UnicodeDecodeError, ValueError, LookupError):  # LookupError: a codec broken at use
            pass
    for fallback in _FALLBACKS:
        try:
            text = data.decode(fallback)
        except UnicodeDecodeError:
            continue
        if charset is None:
            return text, None if fallback == "utf-8" else f"no charset declared: decoded as {fallback}"
        reason = "unknown charset" if declared is None else "text not valid in charset"
        return text, f"{reason} {storable(charset)[:64]!r}: decoded as {fallback}"
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def unescape_surrogates(text: str) -> str:
    """Text the email parser read as ASCII with surrogate escapes (8-bit bytes in a header),
    decoded properly: UTF-8 when the bytes are UTF-8, else cp1252/latin-1."""
    if not _NOT_STORABLE.search(text):
        return text
    data = text.encode("utf-8", "surrogateescape") if _is_escaped(text) else None
    if data is None:
        return storable(text)
    return storable(decode(data, "utf-8")[0])


def _is_escaped(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate outside U+DC80..U+DCFF: not an escaped byte
        return False
    return True
