"""The OpenAPI document describes what the API does: every body, every response, the real error shape."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.conftest import RunningApi

ERROR_REF = "#/components/schemas/ErrorOut"


@pytest.fixture
def spec(api: RunningApi) -> dict[str, Any]:
    with httpx.Client(base_url=api.url) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, methods in spec["paths"].items() for method, op in methods.items()]


def test_served_at_both_addresses(api: RunningApi, spec: dict[str, Any]) -> None:
    with httpx.Client(base_url=api.url) as client:
        assert client.get("/v1/openapi.json").json() == spec
    assert {path for path, _, _ in operations(spec)} == {
        "/v1/documents", "/v1/documents/{external_id}", "/v1/documents/{external_id}/content",
        "/v1/webhooks/{source}", "/v1/jobs/{job_id}", "/v1/search",
        "/v1/emails", "/v1/emails/{message_id}", "/v1/threads/{thread_id}",
        "/admin/workers", "/healthz", "/readyz", "/metrics"}


def test_no_phantom_422_and_every_error_in_the_real_shape(spec: dict[str, Any]) -> None:
    text = json.dumps(spec)
    assert "HTTPValidationError" not in text
    assert '"detail"' not in text
    assert spec["components"]["schemas"]["ErrorOut"]["additionalProperties"] is False
    for path, method, op in operations(spec):
        for status, response in op["responses"].items():
            if status.startswith("2") or (path == "/readyz" and status == "503"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, status)


EXPECTED_ERRORS = {
    ("post", "/v1/documents"): {"400", "401", "403", "413", "415", "422", "429", "503"},
    ("get", "/v1/documents"): {"400", "401", "422", "429", "503"},
    ("get", "/v1/documents/{external_id}"): {"400", "401", "404", "422", "429", "503"},
    ("get", "/v1/documents/{external_id}/content"): {"400", "401", "404", "422", "429", "503"},
    ("delete", "/v1/documents/{external_id}"): {"400", "401", "422", "429", "503"},
    ("post", "/v1/webhooks/{source}"): {"400", "401", "403", "404", "413", "422", "429", "503"},
    ("get", "/v1/jobs/{job_id}"): {"400", "401", "404", "422", "429", "503"},
    ("post", "/v1/search"): {"400", "401", "403", "413", "415", "422", "429", "503"},
    ("post", "/v1/emails"): {"400", "401", "413", "415", "422", "429", "503"},
    ("get", "/v1/emails/{message_id}"): {"400", "401", "404", "422", "429", "503"},
    ("get", "/v1/threads/{thread_id}"): {"400", "401", "404", "422", "429", "503"},
    ("get", "/admin/workers"): {"400", "401", "403", "409", "429"},
    ("put", "/admin/workers"): {"400", "401", "403", "409", "413", "415", "422", "429"},
}


def test_every_route_declares_its_errors_and_its_answer(spec: dict[str, Any]) -> None:
    for path, method, op in operations(spec):
        statuses = set(op["responses"])
        success = {s for s in statuses if s.startswith("2")}
        assert len(success) == 1, (method, path)
        answer = op["responses"][success.pop()]["content"]
        assert answer, (method, path)
        expected = EXPECTED_ERRORS.get((method, path))
        if expected is not None:
            assert statuses - {"200", "202"} == expected, (method, path)


def test_every_body_is_described(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    bodies = {(method, path): op.get("requestBody") for path, method, op in operations(spec)
              if method in ("post", "put")}
    for key, body in bodies.items():
        assert body is not None and body["required"], key
    assert bodies[("post", "/v1/documents")]["content"]["application/json"]["schema"]["$ref"].endswith("/DocumentsIn")
    assert bodies[("post", "/v1/search")]["content"]["application/json"]["schema"]["$ref"].endswith("/SearchRequest")
    assert bodies[("put", "/admin/workers")]["content"]["application/json"]["schema"]["$ref"].endswith("/WorkersIn")
    webhook_media = set(bodies[("post", "/v1/webhooks/{source}")]["content"])
    assert {"application/json", "text/plain", "message/rfc822"} <= webhook_media
    raw = {"type": "string", "format": "binary", "minLength": 1}
    assert bodies[("post", "/v1/emails")]["content"] == {"message/rfc822": {"schema": raw},
                                                         "application/mbox": {"schema": raw}}
    document = schemas["DocumentIn"]
    assert set(document["required"]) == {"external_id", "text"}
    assert set(document["properties"]) == {"external_id", "text", "title", "metadata", "created_at"}
    assert document["additionalProperties"] is False
    assert set(schemas["Filters"]["properties"]) == {"metadata", "external_ids", "created_after", "created_before"}
    # metadata: any JSON without NUL, described recursively
    assert document["properties"]["metadata"]["additionalProperties"] == {"$ref": "#/components/schemas/JsonValue"}
    assert "JsonValue" in schemas


def test_limits_come_from_the_settings(settings: Any) -> None:
    limited = RunningApi(settings.model_copy(update={"search_max_k": 7, "max_documents_per_request": 3,
                                                     "max_text_chars": 50}))
    try:
        with httpx.Client(base_url=limited.url) as client:
            schemas = client.get("/openapi.json").json()["components"]["schemas"]
    finally:
        limited.close()
    assert schemas["SearchRequest"]["properties"]["k"]["maximum"] == 7
    assert schemas["DocumentsIn"]["properties"]["documents"]["maxItems"] == 3
    assert schemas["DocumentIn"]["properties"]["text"]["maxLength"] == 50


def test_the_docs_page_is_offline_and_complete(api: RunningApi, spec: dict[str, Any]) -> None:
    with httpx.Client(base_url=api.url) as client:
        response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert not re.search(r"<script|<link|src=|https?://", page), "the docs page must load nothing from anywhere"
    for path, method, _ in operations(spec):
        assert f"{method.upper()}</span> {path}" in page
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


def test_the_mail_routes_describe_their_answers(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    paths = spec["paths"]
    accepted = paths["/v1/emails"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert [one["$ref"].rsplit("/", 1)[1] for one in accepted["anyOf"]] == ["EmailAcceptedOut", "MboxAcceptedOut"]
    assert set(schemas["MboxAcceptedOut"]["properties"]) == {"accepted", "job_ids", "messages"}
    assert set(schemas["EmailQueuedOut"]["properties"]) == {"message_id", "job_id", "duplicate"}
    read = paths["/v1/emails/{message_id}"]["get"]
    assert set(read["responses"]["200"]["content"]) == {"application/json", "message/rfc822"}
    assert [p["name"] for p in read["parameters"]] == ["message_id", "raw"]
    assert set(schemas["EmailOut"]["properties"]) == {
        "message_id", "thread_id", "subject", "from", "to", "cc", "date", "in_reply_to", "references", "attachments",
        "notes", "synthetic_id"}
    assert set(schemas["ThreadOut"]["properties"]) == {
        "thread_id", "subject", "message_count", "participants", "first_at", "last_at", "messages"}
    assert set(schemas["ThreadMessageOut"]["properties"]) == {
        "message_id", "parent", "depth", "ghost", "subject", "from", "date"}
    assert {"thread_id", "matched_messages"} <= set(schemas["SearchHit"]["properties"])
    assert schemas["SearchRequest"]["properties"]["group_by"]
    assert "email" in schemas["JobOut"]["properties"]["op"]["enum"]
