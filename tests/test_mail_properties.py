"""parse_message never raises, always gives storable strings, and agrees with message_id_of:
for random bytes, for random header soup, and for real-shaped messages mutated at random."""

from __future__ import annotations

import dataclasses
from datetime import UTC

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.mail.message import ParsedMessage, message_id_of, parse_message
from tests.mailfixtures import (
    THREAD_CASES,
    alternative,
    attachment,
    encoded_word,
    encrypted,
    forwarded,
    html,
    message,
    mixed,
    plain,
    signed,
    smime,
    text_attachment,
)

SEEDS = [
    message(),
    message(message_id=None, subject=encoded_word("Gr\u00fc\u00dfe"), references=["a@x", "b@x"], in_reply_to="b@x"),
    message(body=alternative(plain("plain \u00e9"), html("<p>html <blockquote>quoted</blockquote></p>"))),
    message(body=mixed(plain("see attached", charset="iso-8859-1"),
                       attachment("a.pdf", b"%PDF" * 50, "application/pdf"), text_attachment("n.txt", "notes"))),
    message(body=signed(plain("signed"))),
    message(body=encrypted()),
    message(body=smime()),
    message(body=mixed(plain("fwd"), forwarded(message(message_id="inner@x", body=html("<b>inner</b>"))))),
    message(body=plain(b"\xff\xfe 8-bit \x00 junk", charset="x-unknown", encoding="8bit")),
    *(raw for case in THREAD_CASES[:3] for raw in case.raws()),
]


def assert_storable(parsed: ParsedMessage) -> None:
    for field in dataclasses.fields(parsed):
        value = getattr(parsed, field.name)
        strings = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)] \
            if isinstance(value, tuple) else []
        if field.name == "attachments":
            strings = [a.filename for a in value if a.filename] + [a.content_type for a in value]
        for text in strings:
            assert "\x00" not in text, (field.name, text)
            text.encode("utf-8")  # raises on a lone surrogate
    assert parsed.message_id and len(parsed.message_id) <= 512
    assert parsed.date is None or parsed.date.tzinfo == UTC
    assert parsed.message_id not in parsed.references and len(set(parsed.references)) == len(parsed.references)
    assert all(a.size >= 0 for a in parsed.attachments)


def check(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert_storable(parsed)
    assert message_id_of(raw) == (parsed.message_id, parsed.synthetic_id)


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_random_bytes(raw: bytes) -> None:
    check(raw)


HEADER_NAMES = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "Content-Type",
                "Content-Transfer-Encoding", "Content-Disposition", "MIME-Version", "X-Junk"]
TOKENS = ["<", ">", "@", "=?", "?=", "utf-8", "?B?", "?Q?", "multipart/mixed", "boundary=", '"', ";", ":", ",", "\r\n",
          "\n", " ", "\t", "base64", "quoted-printable", "charset=", "filename*=", "''", "%", "\x00", "\xff", "--"]


@st.composite
def header_soup(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(HEADER_NAMES))
        value = "".join(draw(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=12)))
        lines.append(f"{name}: {value}".encode("utf-8", "surrogatepass"))
    body = draw(st.binary(max_size=300))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@given(header_soup())
@settings(max_examples=300, deadline=None)
def test_header_soup(raw: bytes) -> None:
    check(raw)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b"\x00", b"\r\n", b"\n\n", b"--", b"=?utf-8?B?", b"<", b">", b"\xff",
                                                b"Content-Type: multipart/mixed; boundary=x\r\n", b"--x\r\n"]))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
    return bytes(data)


@given(mutated())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_real_messages(raw: bytes) -> None:
    check(raw)


def test_the_seeds_themselves() -> None:
    for raw in SEEDS:
        check(raw)
