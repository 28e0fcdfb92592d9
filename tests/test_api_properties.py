"""Properties of the body parser, the search filters and the webhook parser, whatever the input.

Pure properties run on ``core.inputs`` and ``core.ingest.webhooks`` directly; the HTTP ones send
generated filters and signed events to the real server: every answer is a documented 2xx or a 4xx
in the error shape, never a 5xx.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.ingest.webhooks import event_document
from core.inputs import (
    MAX_DEPTH,
    NON_BLANK_PATTERN,
    WHITESPACE,
    BadEncoding,
    InputRefused,
    NotJson,
    NotStorable,
    check_json,
    parse_json,
    to_utc,
)
from core.search.retrieve import SearchRequest, _filters
from core.tenants import sign
from tests.conftest import RunningApi, client_for

HTTP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
PURE = settings(max_examples=200, deadline=None)

# JSON as any client library writes it: strings of any code point but lone surrogates (not Unicode),
# with the values that once broke the API among the first tried
EDGE_TEXTS = ["\x00", "k\x00", " ", "\x1f", "\ufeff", "\u2028", "9999-12-31T23:00:00-05:00"]
texts = st.sampled_from(EDGE_TEXTS) | st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
EXTREME_TIMES = ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+05:00", "9999-12-31T23:59:59", "0001-01-01"]
times = st.sampled_from(EXTREME_TIMES) | st.datetimes(timezones=st.none() | st.timezones()).map(datetime.isoformat)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner,
                                                                                                   max_size=4),
                           max_leaves=30)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


@PURE
@given(json_values)
def test_parse_json_takes_what_json_dumps_wrote_unless_it_holds_nul(value: Any) -> None:
    body = json.dumps(value).encode()
    if has_nul(value):
        with pytest.raises(NotStorable):
            parse_json(body)
    else:
        assert parse_json(body) == value


@PURE
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_parse_json_refuses_anything_else_with_its_own_errors(body: bytes) -> None:
    try:
        value = parse_json(body)
    except InputRefused:
        return
    # whatever it took can be stored: UTF-8 text, finite numbers, no NUL, shallow enough
    json.dumps(value, allow_nan=False).encode("utf-8")
    assert not has_nul(value)
    assert depth(value) <= MAX_DEPTH


@PURE
@given(st.integers(min_value=0, max_value=3 * MAX_DEPTH), st.sampled_from(["[", '{"a":']))
def test_depth_limit(levels: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    body = (opener * levels + "1" + closer * levels).encode()
    if levels > MAX_DEPTH:
        with pytest.raises(NotJson):
            parse_json(body)
    else:
        parse_json(body)


@PURE
@given(st.from_regex(r"-?(0|[1-9][0-9]{0,2})(\.[0-9]{1,3})?[eE][+-]?[0-9]{1,4}", fullmatch=True))
def test_numbers_are_finite_or_refused(literal: str) -> None:
    try:
        value = parse_json(literal.encode())
    except NotJson:
        assert math.isinf(float(literal))
        return
    assert math.isfinite(value)


@PURE
@given(st.integers(min_value=0xD800, max_value=0xDFFF), texts.filter(lambda t: "\x00" not in t))
def test_lone_surrogates_are_refused_anywhere(code: int, text: str) -> None:
    inside = json.dumps(text)[1:-1] + f"\\u{code:04x}"  # the escape JSON encoders write for a lone surrogate
    for body in (f'["{inside}"]', f'{{"{inside}": 1}}', f'{{"a": [{{"b": "{inside}"}}]}}'):
        with pytest.raises(NotJson):
            parse_json(body.encode())


def test_not_utf8_is_bad_encoding() -> None:
    with pytest.raises(BadEncoding):
        parse_json(b'{"a": "\xff"}')


def test_whitespace_is_what_python_strips() -> None:
    """NON_BLANK_PATTERN (in the OpenAPI document) and the models' ``strip()`` agree on every code point."""
    every = "".join(chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF)
    assert re.findall(f"[{WHITESPACE}]", every) == [c for c in every if c.isspace()]
    assert not re.search(NON_BLANK_PATTERN, " \t\u3000\x1f")
    assert re.search(NON_BLANK_PATTERN, " \ufeff ")


@PURE
@given(st.datetimes(), st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59) | st.none())
def test_timestamps_are_utc_within_years_1_to_9999_or_refused(moment: datetime, offset: int | None) -> None:
    if offset is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    try:
        utc = to_utc(moment)
    except ValueError:
        assert not 2 <= moment.year <= 9998
        return
    assert utc.tzinfo is UTC
    for zone in (-24 * 60 + 1, 24 * 60 - 1):  # any session time zone can read it back
        utc.astimezone(timezone(timedelta(minutes=zone)))


filter_values = st.fixed_dictionaries({}, optional={
    "metadata": json_values | st.dictionaries(texts, json_values, max_size=3),
    "external_ids": st.lists(texts, max_size=4) | json_values,
    "created_after": times | texts | json_values,
    "created_before": times | st.integers(),
    "colour": texts,
})
search_bodies = st.fixed_dictionaries({"query": texts}, optional={
    "k": st.integers(min_value=-5, max_value=200) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    "mode": st.sampled_from(["hybrid", "vector", "keyword", "psychic"]),
    "filters": filter_values | json_values,
})


@PURE
@given(search_bodies)
def test_a_valid_search_request_makes_sql_parameters_postgresql_takes(body: dict[str, Any]) -> None:
    try:
        request = SearchRequest.model_validate(parse_json(json.dumps(body).encode()))
    except (InputRefused, ValidationError):
        return
    _, params = _filters(request.filters)
    for name, value in params.items():
        if name == "f_metadata":
            check_json(value.obj)
            json.dumps(value.obj, allow_nan=False).encode("utf-8")
        elif name == "f_external_ids":
            assert all("\x00" not in v for v in value)
        else:
            assert value.tzinfo is UTC and 1 <= value.year <= 9999


def assert_documented(response: httpx.Response, success: set[int]) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code in success:
        assert "error" not in body
    else:
        assert 400 <= response.status_code < 500
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body


@HTTP
@given(filters=filter_values)
def test_search_filters_over_http_are_answered_or_refused_in_shape(api: RunningApi, tenant: Any,
                                                                   filters: dict[str, Any]) -> None:
    with client_for(api, tenant.api_key) as client:
        assert_documented(client.post("/v1/search", json={"query": "alpha", "filters": filters}), {200})


@HTTP
@given(body=search_bodies)
def test_searches_over_http_are_answered_or_refused_in_shape(api: RunningApi, tenant: Any,
                                                             body: dict[str, Any]) -> None:
    with client_for(api, tenant.api_key) as client:
        assert_documented(client.post("/v1/search", json=body), {200})


EDGE_EVENTS = [b'{"id": "e", "text": "x", "type": NaN}', b'{"id": "e", "text": "x", "n": 1e400}',
               b'{"id": "e", "text": "x\\ud800"}', b"[" * 10_000 + b"]" * 10_000, b'{"id": "\\u0000", "text": "x"}']
events = (st.sampled_from(EDGE_EVENTS)
          | st.binary(max_size=300)
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.fixed_dictionaries({"id": texts | st.integers(), "text": texts},
                                  optional={"title": json_values, "type": json_values, "extra": json_values})
          .map(lambda v: json.dumps(v).encode()))


@HTTP
@given(body=events)
def test_signed_webhook_events_are_queued_or_refused_in_shape(api: RunningApi, tenant: Any, body: bytes) -> None:
    headers = {"X-Opsctl-Company": str(tenant.company_id),
               "X-Opsctl-Signature": sign(tenant.webhook_secret, int(time.time()), body)}
    with client_for(api, None) as client:
        assert_documented(client.post("/v1/webhooks/crm", content=body, headers=headers), {202})


@PURE
@given(events)
def test_event_document_makes_a_document_or_refuses(body: bytes) -> None:
    try:
        doc = event_document("src", body)
    except (InputRefused, ValidationError):
        return
    assert doc.external_id.startswith("src:") and len(doc.external_id) <= 512
    assert doc.text.strip() and "\x00" not in doc.text
    check_json(doc.metadata)
