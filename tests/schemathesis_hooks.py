"""Loaded by the schemathesis CLI (``SCHEMATHESIS_HOOKS``) in tests/test_api_fuzz.py: raw e-mail bodies.

Schemathesis serializes JSON, text and a few binary types itself; ``message/rfc822`` (``POST
/v1/emails``, webhooks) and ``application/mbox`` (``POST /v1/emails``) are a string or bytes sent
as they are."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("message/rfc822", "application/mbox")
def rfc822(ctx: Any, value: Any) -> bytes:
    return serialize_binary(value)
