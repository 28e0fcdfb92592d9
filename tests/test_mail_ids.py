"""Message ids: normalisation, the synthetic id, message_id_of == parse_message, subjects."""

from __future__ import annotations

import pytest

from core.mail.ids import MAX_ID_LENGTH, MAX_REFERENCES, SYNTHETIC_DOMAIN, id_list, own_id, references_of
from core.mail.message import message_id_of, normalize_subject, parse_message


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(b"<abc@example.com>", "abc@example.com", id="brackets-stripped"),
        pytest.param(b"  <  AbC@Example.COM >  ", "AbC@Example.COM", id="whitespace-stripped-case-kept"),
        pytest.param(b"<a\r\n b@x>", "ab@x", id="folded"),
        pytest.param(b"abc@example.com", "abc@example.com", id="no-brackets"),
        pytest.param(b"abc@example.com (added by postmaster)", "abc@example.com", id="bare-with-comment"),
        pytest.param(b"<first@x> <second@x>", "first@x", id="first-of-two"),
        pytest.param(b"<>", None, id="empty-brackets"),
        pytest.param(b"   ", None, id="blank"),
        pytest.param(b"<a\x00b@x>", "ab@x", id="nul-dropped"),
    ],
)
def test_own_id_normalisation(header: bytes, expected: str | None) -> None:
    assert own_id(header) == expected


def test_a_long_id_is_bounded_and_two_long_ids_with_one_prefix_stay_apart() -> None:
    first, second = "a" * 600 + "1@x", "a" * 600 + "2@x"
    bounded = own_id(f"<{first}>".encode())
    assert bounded is not None and len(bounded) == MAX_ID_LENGTH
    assert bounded != own_id(f"<{second}>".encode())
    assert bounded == own_id(f"<{first}>".encode())


@pytest.mark.parametrize(
    ("header", "ids", "ignored"),
    [
        pytest.param(b"<a@x> <b@x>\r\n\t<c@x>", ["a@x", "b@x", "c@x"], [], id="in-order"),
        pytest.param(b"<a@x> (Bob's message of Monday)", ["a@x"], [], id="comment"),
        pytest.param(b"a@x b@x", ["a@x", "b@x"], [], id="bare-ids"),
        pytest.param(b"your message of yesterday", [], [], id="bare-words-are-no-ids"),
        pytest.param(b"<yes>", [], ["yes"], id="git-send-email-yes"),
        pytest.param(b"<a@x> <yes> <b@x>", ["a@x", "b@x"], ["yes"], id="yes-among-ids"),
        pytest.param(b"<1234.5678> <a@x>", ["a@x"], ["1234.5678"], id="no-at-sign"),
        pytest.param(b"<a@>", ["a@"], [], id="an-at-sign-is-enough"),
        pytest.param(b"<<>> <a@x>", ["a@x"], [], id="empty-brackets-skipped"),
        pytest.param(("<" + "a" * 600 + "@x>").encode(), [own_id(("<" + "a" * 600 + "@x>").encode())], [],
                     id="a-long-id-bounded-past-its-at-sign-is-kept"),
    ],
)
def test_id_lists_keep_order_and_ignore_ids_without_an_at_sign(header: bytes, ids: list[str],
                                                               ignored: list[str]) -> None:
    assert id_list(header) == (ids, ignored)


def test_references_drop_self_and_duplicates_and_append_in_reply_to() -> None:
    assert references_of("me", ["a", "b", "me", "a"], "c") == ("a", "b", "c")
    assert references_of("me", ["a", "b"], "b") == ("a", "b")
    assert references_of("me", [], "me") == ()


def test_ten_thousand_references_are_bounded_to_the_root_and_the_latest() -> None:
    refs = [f"r{i}@x" for i in range(10_000)]
    kept = references_of("me", refs, None)
    assert len(kept) == MAX_REFERENCES
    assert kept[0] == "r0@x" and kept[-1] == "r9999@x" and kept[1] == f"r{10_000 - MAX_REFERENCES + 1}@x"


PLAIN = (b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Hello\r\n"
         b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHi Bob,\r\nsee you.\r\n")


def test_a_message_without_id_gets_a_synthetic_one_stable_across_redelivery() -> None:
    found, synthetic = message_id_of(PLAIN)
    assert synthetic and found.endswith("@" + SYNTHETIC_DOMAIN)
    redelivered = (b"Return-Path: <ann@example.com>\nReceived: from mx by mx2; Tue, 2 Jan 2024\n"
                   b"Delivered-To: bob@example.com\nX-Spam-Score: 0.1\n"
                   + PLAIN.replace(b"\r\n", b"\n") + b"\n\n")
    assert message_id_of(redelivered) == (found, True)
    assert message_id_of(b"From nobody Mon Jan  1 10:00:00 2024\n" + PLAIN) == (found, True)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(PLAIN.replace(b"Hi Bob", b"Hi Rob"), id="body"),
        pytest.param(PLAIN.replace(b"Subject: Hello", b"Subject: Hello again"), id="subject"),
        pytest.param(PLAIN.replace(b"From: Ann", b"From: Anne"), id="from"),
        pytest.param(PLAIN.replace(b"10:00:00", b"10:00:01"), id="date"),
        pytest.param(PLAIN.replace(b"To: bob", b"To: rob"), id="to"),
    ],
)
def test_the_synthetic_id_changes_with_the_content(changed: bytes) -> None:
    assert message_id_of(changed)[0] != message_id_of(PLAIN)[0]


def test_message_id_of_equals_parse_message() -> None:
    for raw in (PLAIN, b"Message-ID: <x@y>\r\n\r\nbody", b"", b"\x00", b"Message-ID:\r\n\r\n"):
        parsed = parse_message(raw)
        assert message_id_of(raw) == (parsed.message_id, parsed.synthetic_id)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: RE: Fwd: [list] Hello ", "hello"),
        ("AW: WG: Antw:  Meeting   Tomorrow", "meeting tomorrow"),
        ("SV: Re[2]: [a] [b] Fw: Budget", "budget"),
        ("[dev-list] Re: patch v2", "patch v2"),
        ("Regarding the plan", "regarding the plan"),
        ("Invoice: March", "invoice: march"),
        ("RE\uff1a Budget", "budget"),  # a CJK client's fullwidth colon
        ("Re:", ""),
        (None, ""),
    ],
)
def test_normalize_subject(subject: str | None, expected: str) -> None:
    assert normalize_subject(subject) == expected
