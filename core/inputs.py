"""What the core accepts from clients: the one gate every JSON body and timestamp passes (pure).

``parse_json`` takes a body only when it is JSON that PostgreSQL and every layer after it can hold:

- UTF-8 (``BadEncoding``);
- RFC 8259 JSON (``NotJson``): no ``NaN``/``Infinity``, no number a double cannot hold (``1e400``),
  no lone surrogate (``"\\ud800"`` is not Unicode), nested at most ``MAX_DEPTH`` levels;
- no NUL character in any string or key (``NotStorable``): PostgreSQL text and jsonb cannot
  store one.

Integers keep their exact value (no float rounding of 20-digit ids).

``UtcDatetime`` is a timestamp string normalized to UTC, refused unless every session time zone
can still read it back (Python and psycopg stop at years 1 and 9999). ``JsonObject`` is a free
JSON object (metadata, metadata filters) held to the same rules as a body.

The ``*_PATTERN`` and ``JSON_*`` schemas say the same in the OpenAPI document, so a client (or a
fuzzer) generating from it only sends what is accepted.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

MAX_DEPTH = 64
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)  # a day inside Python's range: a session time zone may shift it
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_SURROGATE = re.compile("[\ud800-\udfff]")

# JSON Schema (ECMA-262) patterns: no NUL; and at least one character that is not whitespace
NO_NUL_PATTERN = "^[^\\u0000]*$"
NON_BLANK_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
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


def parse_json(body: bytes | str) -> Any:
    """The JSON value of ``body``, or ``InputRefused`` naming the first problem."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadEncoding(f"not valid UTF-8 (byte {exc.start})") from exc
    else:
        text = body
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise NotJson(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and what the hooks above raise
        raise NotJson(str(exc)) from None
    check_json(value)
    return value


def _path(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(p)[:100] for p in parts) or "body"


def _check_string(value: str, parts: tuple[str | int, ...], what: str) -> None:
    if "\x00" in value:
        raise NotStorable(f"{_path(parts)}: {what} must not contain NUL characters")
    if not value.isascii() and _SURROGATE.search(value):
        raise NotJson(f"{_path(parts)}: {what} holds a lone surrogate (not Unicode)")


def check_json(value: Any) -> None:
    """Refuse a parsed JSON value nested over ``MAX_DEPTH`` or holding NUL or lone surrogates.

    Iterative (no recursion), so any value that ``json.loads`` built is checked in O(size)."""
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
                    if isinstance(child, str | dict | list):
                        stack.append((child, depth + 1, (*parts, key)))
            else:
                stack.extend((child, depth + 1, (*parts, i)) for i, child in enumerate(item)
                             if isinstance(child, str | dict | list))


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC), refused outside ``EARLIEST`` … ``LATEST``."""
    refused = ValueError(f"out of range: the time in UTC must fall between {EARLIEST:%Y-%m-%d} and "
                         f"{LATEST:%Y-%m-%d}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise refused from None
    if not EARLIEST <= value <= LATEST:
        raise refused
    return value


def _timestamp_string(value: Any) -> Any:
    if isinstance(value, str | datetime):
        return value
    raise ValueError("expected an ISO 8601 date-time string, e.g. 2024-05-01T12:00:00Z")


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _checked_json(value: Any) -> Any:
    check_json(value)
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_timestamp_string), AfterValidator(to_utc)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_checked_json), WithJsonSchema(JSON_OBJECT_SCHEMA)]
