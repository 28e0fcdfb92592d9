"""What the core accepts from clients: the one gate every JSON body and timestamp passes (pure).

``parse_json`` takes a body only when it is JSON that PostgreSQL and every layer after it can hold:

- UTF-8 (``BadEncoding``);
- RFC 8259 JSON (``NotJson``): no ``NaN``/``Infinity``, no number a double cannot hold (``1e400``),
  no lone surrogate (``"\\ud800"`` is not Unicode), nested at most ``MAX_DEPTH`` levels;
- no NUL character in any string or key (``NotStorable``): PostgreSQL text and jsonb cannot
  store one.

Integers keep their exact value (no float rounding of 20-digit ids).

``UtcDatetime`` is a timestamp string normalized to UTC, in years 2 to 9998 so that no offset and
no session time zone reading it back leaves the years 1 to 9999 Python and psycopg can hold.
``JsonObject`` is a free JSON object (metadata, metadata filters) held to the same rules as a body;
``JsonInt`` an integer as JSON has it (``10`` or ``10.0``, never ``"10"``).

The ``*_PATTERN`` and ``JSON_*`` schemas say the same in the OpenAPI document, so a client (or a
fuzzer) generating from it only sends what is accepted.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, WithJsonSchema

MAX_DEPTH = 64
# a year inside Python's range on each side: no offset, and no session time zone reading it back, leaves it
FIRST_YEAR, LAST_YEAR = 2, 9998
_SURROGATE = re.compile("[\ud800-\udfff]")

# JSON Schema (ECMA-262) patterns: no NUL; and at least one character that is not whitespace as Python
# strips it (str.isspace, spelled out: ECMA's \s differs, e.g. on U+001F and U+FEFF)
WHITESPACE = ("\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
              "\\u205f\\u3000")
NO_NUL_PATTERN = "^[^\\u0000]*$"
NON_BLANK_PATTERN = f"^[^\\u0000]*[^\\u0000{WHITESPACE}][^\\u0000]*$"
YEARS_PATTERN = "^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-"
TIMESTAMP_SCHEMA: dict[str, Any] = {"type": "string", "format": "date-time", "pattern": YEARS_PATTERN,
                                    "description": f"ISO 8601 / RFC 3339, years {FIRST_YEAR} to {LAST_YEAR}"}
JSON_VALUE_REF = "#/components/schemas/JsonValue"
JSON_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object", "propertyNames": {"pattern": NO_NUL_PATTERN}, "additionalProperties": {"$ref": JSON_VALUE_REF}}
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": f"any JSON value without NUL characters, nested at most {MAX_DEPTH} levels in the body",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL_PATTERN}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
        {"type": "array", "items": {"$ref": JSON_VALUE_REF}}, JSON_OBJECT_SCHEMA,
    ],
}


class InputRefused(ValueError):
    """A client's input that the core refuses; the message says why."""


class BadEncoding(InputRefused):
    """Not UTF-8."""


class NotJson(InputRefused):
    """Not JSON, or JSON beyond the core's limits."""


class NotStorable(InputRefused):
    """JSON holding what PostgreSQL cannot store (NUL)."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"number {literal[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def json_media(content_type: str | None) -> bool:
    """Whether a Content-Type says JSON: ``application/json`` or ``application/…+json`` (any parameters)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEncoding(f"not valid UTF-8 (byte {exc.start})") from exc


def parse_json(body: bytes | str) -> Any:
    """The JSON value of ``body``, or ``InputRefused`` naming the first problem.

    ``bytes`` are decoded as UTF-8 first; a ``str`` may hold anything a Python string can, so its
    value is always checked in full (``parse_utf8_json`` for text just decoded from bytes)."""
    if isinstance(body, bytes):
        return parse_utf8_json(decode_utf8(body))
    value = _loads(body)
    check_json(value)
    return value


def parse_utf8_json(text: str) -> Any:
    """``parse_json`` of text decoded from UTF-8 bytes, which lets most bodies skip the walk.

    NUL and lone surrogates can then only come as ``\\u`` escapes (raw control characters are not
    JSON, and UTF-8 holds no surrogate), and nesting needs brackets: strings are checked only when
    the text holds an escape, depth only when it holds more brackets than ``MAX_DEPTH``."""
    value = _loads(text)
    escapes = "\\u" in text
    if escapes or text.count("[") + text.count("{") > MAX_DEPTH:
        check_json(value, strings=escapes)
    return value


def _loads(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise NotJson(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and what the hooks above raise
        raise NotJson(str(exc)) from None


def _bad_string(value: str) -> bool:
    return "\x00" in value or (not value.isascii() and _SURROGATE.search(value) is not None)


def check_json(value: Any, strings: bool = True) -> None:
    """Refuse a parsed JSON value nested over ``MAX_DEPTH`` or (``strings``) holding NUL or lone
    surrogates in a string or a key.

    Iterative (no recursion), so any value that ``json.loads`` built is checked in O(size), and
    cheap: no path is kept per node; when something is wrong, ``_refuse`` walks again to name where."""
    if isinstance(value, str):
        if strings and _bad_string(value):
            _refuse(value)
        return
    stack: list[tuple[Any, int]] = [(value, 0)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth >= MAX_DEPTH:
            _refuse(value)
        if isinstance(item, dict):
            if strings and any(_bad_string(key) for key in item):
                _refuse(value)
            item = item.values()
        for child in item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif strings and isinstance(child, str) and _bad_string(child):
                _refuse(value)


def _path(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(p)[:100] for p in parts) or "body"


def _check_string(value: str, parts: tuple[str | int, ...], what: str) -> None:
    if "\x00" in value:
        raise NotStorable(f"{_path(parts)}: {what} must not contain NUL characters")
    if not value.isascii() and _SURROGATE.search(value):
        raise NotJson(f"{_path(parts)}: {what} holds a lone surrogate (not Unicode)")


def _refuse(value: Any) -> NoReturn:
    """Raise the error of the problem ``check_json`` found in ``value``, naming where it is."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 0, ())]
    while stack:
        item, depth, parts = stack.pop()
        if isinstance(item, str):
            _check_string(item, parts, "a string")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise NotJson(f"{_path(parts)}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_string(key, (*parts, key), "a key")
                    stack.append((child, depth + 1, (*parts, key)))
            else:
                stack.extend((child, depth + 1, (*parts, i)) for i, child in enumerate(item))
    raise AssertionError("check_json found a problem that _refuse does not")  # pragma: no cover


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC); its year must be ``FIRST_YEAR`` to ``LAST_YEAR``."""
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"out of range: the year must be {FIRST_YEAR} to {LAST_YEAR}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp_string(value: Any) -> Any:
    if isinstance(value, str | datetime):
        return value
    raise ValueError("expected an ISO 8601 date-time string, e.g. 2024-05-01T12:00:00Z")


def _json_integer(value: Any) -> Any:
    """An integer as JSON has it: ``10`` or ``10.0`` (the same number), never ``"10"`` or ``true``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    return value


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


PARSED = {"parsed": True}  # validation context of a value ``parse_json`` built: checked already


def _checked_json(value: Any, info: ValidationInfo) -> Any:
    if info.context is not PARSED:
        check_json(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
UtcDatetime = Annotated[datetime, BeforeValidator(_timestamp_string), AfterValidator(to_utc),
                        WithJsonSchema(TIMESTAMP_SCHEMA)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_checked_json), WithJsonSchema(JSON_OBJECT_SCHEMA)]
