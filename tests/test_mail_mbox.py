"""mbox, pure (``core.mail.mbox``): ``From_`` lines, splitting (the blank line after each message, mboxrd
``>From`` unquoting, pieces of long lines, oversize messages), and writing: every message that
``mbox_entry`` takes comes back byte-exact from ``split_mbox``, the property both sides of
``application/mbox`` rely on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.mail.mbox import FROM_LINE, NotAnMbox, Part, is_from_line, lines_of, mbox_entry, split_mbox, split_mbox_bytes

FROM = b"From alice@example.com Mon Jan  5 09:00:00 2026\n"


def n(*pieces: bytes) -> int:
    """The bytes of ``pieces``: what a message accounts for in its mbox."""
    return sum(map(len, pieces))


@pytest.mark.parametrize(("line", "separates"), [
    (FROM, True),
    (b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n", True),
    (b"From - Mon Jan 01 00:00:00 2001\r\n", True),  # Thunderbird
    (b"From alice@example.com Tue, 12 Mar 2024 10:00:00 +0000\n", True),  # an RFC 5322 date
    (b"From 1790324521@xxx Mon Jan 01 00:00:00 +0000 2024\n", True),  # Gmail's takeout
    (b"From alice@example.com Mon Jan  5 09:00:00 2026", True),  # the last line, no newline
    (b"From here on, we meet at the usual place\n", False),  # a body line: no date
    (b"From alice@example.com\n", False),
    (b"From 9:30 to 2024\n", False),  # no month
    (b">From alice@example.com Mon Jan  5 09:00:00 2026\n", False),  # escaped
    (b"from alice@example.com Mon Jan  5 09:00:00 2026\n", False),
    (b"From  Mon Jan  5 09:00:00 2026\n", False),  # no address
])
def test_from_lines(line: bytes, separates: bool) -> None:
    assert is_from_line(line) is separates


@pytest.mark.parametrize(("lines", "expected"), [
    # two messages; the blank line the mbox adds after each is not part of it; line numbers of the From lines
    ([FROM, b"Subject: a\n", b"\n", b"one\n", b"\n", FROM, b"Subject: b\n", b"\n", b"two\n"],
     [Part(1, 1, b"Subject: a\n\none\n", n(FROM, b"Subject: a\n\none\n\n")),
      Part(2, 6, b"Subject: b\n\ntwo\n", n(FROM, b"Subject: b\n\ntwo\n"))]),
    # mboxrd and mboxo: one '>' comes off '>From ' and '>>From ', only at the start of a line
    ([FROM, b"S: a\n", b"\n", b">From the start\n", b">>From quoted\n", b"x >From kept\n", b">Fromage\n"],
     [Part(1, 1, b"S: a\n\nFrom the start\n>From quoted\nx >From kept\n>Fromage\n",
           n(FROM, b"S: a\n\n>From the start\n>>From quoted\nx >From kept\n>Fromage\n"))]),
    # a body line 'From …' without a date does not split the message, even after a blank line
    ([FROM, b"S: a\n", b"\n", b"From here on, we meet\n"],
     [Part(1, 1, b"S: a\n\nFrom here on, we meet\n", n(FROM, b"S: a\n\nFrom here on, we meet\n"))]),
    # CRLF mbox, blank lines before the first From line
    ([b"\r\n", b"From - Mon Jan 01 00:00:00 2001\r\n", b"S: a\r\n", b"\r\n", b"x\r\n", b"\r\n"],
     [Part(1, 2, b"S: a\r\n\r\nx\r\n", n(b"\r\nFrom - Mon Jan 01 00:00:00 2001\r\nS: a\r\n\r\nx\r\n\r\n"))]),
    # pieces of a long line: a piece that starts with 'From …' but does not start a line is body
    ([FROM, b"S: a\n", b"\n", b"xxxx", FROM, b"tail\n"],
     [Part(1, 1, b"S: a\n\nxxxx" + FROM + b"tail\n", n(FROM, b"S: a\n\nxxxx", FROM, b"tail\n"))]),
    # a From line right after a From line: an empty message
    ([FROM, FROM, b"S: b\n"], [Part(1, 1, b"", n(FROM)), Part(2, 2, b"S: b\n", n(FROM, b"S: b\n"))]),
    ([], []),
    ([b"\n", b"\n"], []),
])
def test_split_mbox(lines: list[bytes], expected: list[Part]) -> None:
    assert list(split_mbox(lines)) == expected
    assert split_mbox_bytes(b"".join(lines)) == expected, "the same mbox held whole"


def test_a_message_over_the_limit_is_counted_not_held_and_the_next_one_is_read() -> None:
    big = [FROM, b"S: big\n", b"\n", *[b"x" * 99 + b"\n"] * 20, b"\n"]
    parts = list(split_mbox([*big, FROM, b"S: small\n"], max_bytes=1000))
    assert parts == [Part(1, 1, None, n(*big)), Part(2, 25, b"S: small\n", n(FROM, b"S: small\n"))]
    assert split_mbox_bytes(b"".join([*big, FROM, b"S: small\n"]), max_bytes=1000) == parts


def test_text_before_the_first_from_line_is_not_an_mbox() -> None:
    with pytest.raises(NotAnMbox, match="not an mbox: line 2 comes before any 'From <address> <date>' line"):
        list(split_mbox([b"\n", b"Subject: hi\n", FROM]))
    with pytest.raises(NotAnMbox, match="not an mbox: line 2 comes before any 'From <address> <date>' line"):
        split_mbox_bytes(b"\n" + b"Subject: hi\n" + FROM)


def test_lines_are_cut_at_newlines_only() -> None:
    assert list(lines_of(b"a\r\nb\rc\x0cd\n\nlast")) == [b"a\r\n", b"b\rc\x0cd\n", b"\n", b"last"]
    assert list(lines_of(b"")) == []


@pytest.mark.parametrize(("raw", "entry"), [
    (b"S: a\n\nFrom here\n>From there\nx From\n", FROM_LINE + b"S: a\n\n>From here\n>>From there\nx From\n\n"),
    (b"From bob Mon Jan  5 09:00:00 2026\r\nS: a\r\n\r\n", FROM_LINE + b">From bob Mon Jan  5 09:00:00 2026\r\n"
     b"S: a\r\n\r\n\n"),
    (b"S: no newline at the end", None),
    (b"", None),
])
def test_mbox_entry_quotes_from_lines(raw: bytes, entry: bytes | None) -> None:
    assert mbox_entry(raw) == entry


LINE = st.one_of(st.sampled_from([b"From ", b">From ", b">>From x", FROM, b">" + FROM, b"\n", b"\r\n", b"\r",
                                  b"Subject: s\n", b"From here on\n", b"\x00\xff"]),
                 st.binary(max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(LINE, max_size=8).map(b"".join), max_size=5))
def test_messages_written_then_split_come_back_byte_exact(messages: list[bytes]) -> None:
    carried = [m for m in messages if mbox_entry(m) is not None]
    body = b"".join(e for e in map(mbox_entry, carried) if e is not None)
    assert [p.raw for p in split_mbox(lines_of(body))] == carried
    assert [p.raw for p in split_mbox(lines_of(b"\n\r\n" + body))] == carried, "blank lines before the first"


def _split_or_error(split: Callable[[], list[Part]]) -> list[Part] | str:
    try:
        return split()
    except NotAnMbox as exc:
        return str(exc)


@settings(max_examples=500, deadline=None)
@given(st.lists(LINE, max_size=30).map(b"".join), st.integers(min_value=0, max_value=60))
def test_an_mbox_held_whole_splits_as_its_lines_do(data: bytes, max_bytes: int) -> None:
    """``split_mbox_bytes`` (the API's, over a body) equals ``split_mbox`` over the body's lines (the
    CLI's, over a file as it is read): messages, line numbers, sizes, the limit, the errors."""
    for body in (data, FROM + data, b"\n" + FROM + data):
        whole = _split_or_error(lambda body=body: split_mbox_bytes(body, max_bytes))  # type: ignore[misc]
        assert whole == _split_or_error(lambda body=body: list(split_mbox(lines_of(body), max_bytes)))  # type: ignore[misc]
