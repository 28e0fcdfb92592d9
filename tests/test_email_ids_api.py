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


@pytest.mark.parametrize("blank", ["%3C%3E", "%3C%20%3E", "%20%3C%3E%09"])
def test_an_id_with_nothing_left_is_a_422(api: RunningApi, tenant: Any, blank: str) -> None:
    with client_for(api, tenant.api_key) as client:
        answer = client.get(f"/v1/emails/{blank}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    assert "no Message-ID" in answer.json()["error"]["message"]
