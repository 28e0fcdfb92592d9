"""``GET /v1/emails/{id}`` takes a Message-ID as a person copies it (in its brackets, a space inside, a
comment after it, longer than the core keeps) and answers the message stored under its normalised id:
the same function as ``opsctl emails show`` (``core.mail.lookup.asked_id``). Real API, real database."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from core.mail.message import parse_message
from tests.conftest import RunningApi, client_for, drain
from tests.email_helpers import post_email
from tests.mailfixtures import message

LONG = "n" * 700 + "@long.example"
HEADERS = ["<Case@Sensitive.example> (comment)", "<a/b%c+d e@x.example>", f"<{LONG}>"]


def test_an_id_copied_from_its_header_answers_the_stored_message(api: RunningApi, tenant: Any, db_url: str) -> None:
    raws = [message(message_id=None, extra_headers=[("Message-ID", header)]) for header in HEADERS]
    with client_for(api, tenant.api_key) as client:
        for raw in raws:
            post_email(client, raw)
        drain(api.settings, db_url)
        for header, raw in zip(HEADERS, raws, strict=True):
            stored = parse_message(raw).message_id
            asked = [header, header.strip("<>").partition(">")[0], f"  {header}\t", stored]
            for given in asked:
                path = "/v1/emails/" + quote(given, safe="")
                found = client.get(path)
                assert found.status_code == 200, (given, found.text)
                assert found.json()["message_id"] == stored
                original = client.get(path, params={"raw": "1"})
                assert (original.status_code, original.content) == (200, raw)


@pytest.mark.parametrize("given", ["%3C%3E", "%3C%20%3E", "%20%3C%3E%09", "x%3C%3E", "%01"])
def test_an_id_that_normalises_to_nothing_names_no_message(api: RunningApi, tenant: Any, given: str) -> None:
    """Non-blank, so valid as the OpenAPI document says: no message is stored under it (a 404, not a 500)."""
    with client_for(api, tenant.api_key) as client:
        answer = client.get(f"/v1/emails/{given}")
        blank = client.get("/v1/emails/%20%09")
    assert answer.status_code == 404, answer.text
    assert "holds no Message-ID" in answer.json()["error"]["message"]
    assert blank.status_code == 422, "a blank id is refused as before"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_the_longest_id_a_path_may_hold_reaches_the_api_and_a_longer_one_is_a_json_422(
        api: RunningApi, tenant: Any, method: str) -> None:
    """URL-encoded, an id of MAX_ASKED four-byte characters still fits the request line the HTTP server
    reads (it answers a longer one itself, a text/plain 400): so every id the API takes reaches it,
    and one longer than it takes is the API's JSON 422."""
    from core.mail.lookup import MAX_ASKED

    with client_for(api, tenant.api_key) as client:
        longest = client.request(method, "/v1/emails/" + quote("\U0001f60d" * MAX_ASKED, safe=""))
        longer = client.request(method, "/v1/emails/" + quote("\U0001f60d" * (MAX_ASKED + 1), safe=""))
    assert (longest.status_code, longest.headers["content-type"]) == (
        {"GET": 404, "DELETE": 202}[method], "application/json")
    assert (longer.status_code, longer.headers["content-type"]) == (422, "application/json")
    assert longer.json()["error"]["code"] == "validation_error"
