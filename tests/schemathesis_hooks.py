"""Loaded by the schemathesis CLI (``SCHEMATHESIS_HOOKS``) in tests/test_api_fuzz.py: raw e-mail bodies.

Schemathesis serializes JSON, text and a few binary types itself; ``message/rfc822`` (``POST
/v1/emails``, webhooks) is a string or bytes sent as they are. An ``application/mbox`` body must be
an mbox, which no JSON Schema says: the value generated is sent as the one message of an mbox
(``core.mail.mbox.mbox_entry``, after a header line so that it is never blank), an empty one as
it is (a 422). Bodies that are not mboxes are tested in tests/test_email_batch.py and
tests/test_mail_mbox.py (the splitting, over any bytes)."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.transport.serialization import serialize_binary

from core.mail.mbox import mbox_entry


@schemathesis.serializer("message/rfc822")
def rfc822(ctx: Any, value: Any) -> bytes:
    return serialize_binary(value)


@schemathesis.serializer("application/mbox")
def mbox(ctx: Any, value: Any) -> bytes:
    raw = serialize_binary(value)
    return raw and (mbox_entry(b"X-Fuzzed: 1\n" + raw + b"\n") or b"")
