"""Calls to the core API from the CLI: JSON errors become one-line OpsErrors."""

from __future__ import annotations

from typing import Any

import httpx

from core.errors import ConfigError, OperationFailed, ServiceUnavailable


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON answer of a request; a transport error or a 4xx/5xx is a one-line OpsError."""
    return answer(client, method, path, **kwargs).json()


def call_raw(client: httpx.Client, method: str, path: str, **kwargs: Any) -> bytes:
    """The bytes of the answer (``GET /v1/emails/{id}?raw=1``), with the errors of :func:`call`."""
    return answer(client, method, path, **kwargs).content


def answer(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ServiceUnavailable(f"cannot reach the API at {client.base_url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            err = response.json()["error"]
            message = f"{err['code']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        text = f"{method} {path} → {response.status_code} {message}"
        if response.status_code in (401, 403):
            raise ConfigError(text)
        raise OperationFailed(text)
    return response
