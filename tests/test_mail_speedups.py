"""The shortcuts of mail parsing answer what the long way answers: header blocks read with one
pattern, address lists read without email.utils.getaddresses, and quote stripping that looks at a
line only when the text holds a word that line could match; and the parse figure of the bench."""

from __future__ import annotations

import re
import sys
from email.utils import getaddresses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import mail_strip
from bench.mailcorpus import build_mailcorpus, write_mbox
from core.mail import quotes
from core.mail.headers import _pairs
from core.mail.ids import _FIRST_BLANK_LINE, _blank_line, _read_lines, head_and_body
from core.mail.message import parse_message
from core.mail.text import CACHED_LENGTH, cached_when_short
from tests.test_mail_properties import header_soup, mutated
from tests.test_mail_quotes import BOTTOM_POST, GMAIL_TOP_POST, GMAIL_WRAPPED_ATTRIBUTION, INLINE, OUTLOOK

ADDRESS_LISTS = [
    "Ann Example <ann@example.com>", "ann@example.com", '"Example, Ann" <ann@example.com>',
    "Ann <ann@example.com>, bob@example.org,\t\"Carl\" <carl.c@mail.example.net>", "<only@example.com>",
    "=?utf-8?q?Zo=C3=AB?= Smith <zoe@example.com>", "Dr. Bob . Jr <b@x.y>", "\u00a0Ann\u00a0 <a@b>", '"" <a@b>',
    "\u00a0@Ann", "<\u00a0.x@b>", "x\u00a0y@b", "Bob \u00a0 <a@b>",
]
ADDRESS_PIECES = ["Ann", "Bob Smith", '"Smith, Ann"', '"a\\"b"', "<", ">", "@", ",", " ", "\t", ".", "(c)", ":", ";",
                  "a@b", "a.b@c.d", "<a@b>", "=?utf-8?q?x?=", "[1.2.3.4]", "\u00e9", "\u00a0", "\r\n", "\\", '"',
                  "\u2028", "\x0b", "\x85", "\u3000", "-", "'"]


@pytest.mark.parametrize("value", ADDRESS_LISTS)
def test_common_address_lists_read_as_getaddresses_reads_them(value: str) -> None:
    assert _pairs(value) == getaddresses([value])


@given(st.lists(st.sampled_from(ADDRESS_PIECES), max_size=12).map("".join))
@settings(max_examples=1000, deadline=None)
def test_any_address_list_reads_as_getaddresses_reads_it(value: str) -> None:
    assert _pairs(value) == getaddresses([value])


WORDS = [*quotes._FORWARD_WORDS, *quotes._ORIGINAL_WORDS, *quotes._SUBJECT_WORDS, *quotes._MOBILE_FOOTER_WORDS]
EVERY_WORD = "\n".join([*WORDS, "from:", "-- ", ">"])


def test_the_words_are_found_however_a_pattern_matches_their_letters() -> None:
    """Every character the patterns match case-insensitively to a letter of a word (K for k, long s
    for s, dotted and dotless i...) folds to that letter."""
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    letters = set("".join([*WORDS, "fromvondedavanfrånfra"]))
    for letter in letters:
        for char in re.findall(re.escape(letter), everything, re.IGNORECASE):
            assert quotes.folded(char) == letter.lower(), (letter, char)


TEXTS = [GMAIL_TOP_POST, GMAIL_WRAPPED_ATTRIBUTION, BOTTOM_POST, INLINE, OUTLOOK,
         "Thanks\n\nSENT FROM MY IPHONE", "x\n\u017fent from my iphone", "---------- Forwarded message ---------\nhi",
         "fyi\n\nFROM: a\nSENT: b\nSUBJECT: c\n\nold", "ok\n-- \nAnn"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("forwarded", [False, True])
def test_quote_stripping_as_when_every_line_is_looked_at(text: str, forwarded: bool) -> None:
    assert quotes.strip_quotes(text, forwarded=forwarded) == quotes._strip(text, forwarded, EVERY_WORD)


def test_the_synthetic_list_strips_as_when_every_line_is_looked_at() -> None:
    for mail in build_mailcorpus(800, 12).mails:
        text = parse_message(mail.raw).body_text
        assert quotes.strip_quotes(text) == quotes._strip(text, False, EVERY_WORD)


@given(st.lists(st.sampled_from([*TEXTS, "> ", ">", "\n", "On Monday Ann wrote:", " ", "Original", "-----",
                                 "Von: x", "Gesendet:", "Betreff: y", "\u0130", "\u212a"]), max_size=20).map("".join),
       st.booleans())
@settings(max_examples=500, deadline=None)
def test_any_text_strips_as_when_every_line_is_looked_at(text: str, forwarded: bool) -> None:
    assert quotes.strip_quotes(text, forwarded=forwarded) == quotes._strip(text, forwarded, EVERY_WORD)


def test_plain_header_blocks_read_as_line_by_line() -> None:
    for mail in build_mailcorpus(800, 13).mails:
        assert head_and_body(mail.raw) == _read_lines(mail.raw)


@given(st.one_of(header_soup(), mutated(), st.binary(max_size=300)))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_header_block_reads_as_line_by_line(raw: bytes) -> None:
    assert head_and_body(raw) == _read_lines(raw)


def test_the_stripping_figure_says_what_parsing_costs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_mbox(tmp_path / "list.mbox", build_mailcorpus(30, 14).mails[:30])
    assert mail_strip.main([str(tmp_path / "list.mbox")]) == 0
    assert re.search(r"parse_message: [\d,]+ µs of CPU per message \(30 messages\)", capsys.readouterr().out)


@pytest.mark.parametrize("raw", [b"", b"a: b", b"a: b\n\nc", b"a: b\r\n\r\nc", b"a\r\n\nb", b"a\n\r\nb", b"\n\n",
                                 b"a\n\r\r\nb\n\nc", b"a\r\r\n\r\nb", b"\r\n\r\n", b"x\n\r\n\n"])
def test_the_blank_line_is_found_where_the_pattern_finds_it(raw: bytes) -> None:
    found = _FIRST_BLANK_LINE.search(raw)
    assert _blank_line(raw) == ((found.start(), found.end()) if found else None)


@given(st.lists(st.sampled_from([b"\r", b"\n", b"a", b": "]), max_size=12).map(b"".join))
@settings(max_examples=500, deadline=None)
def test_any_blank_line_is_found_where_the_pattern_finds_it(raw: bytes) -> None:
    found = _FIRST_BLANK_LINE.search(raw)
    assert _blank_line(raw) == ((found.start(), found.end()) if found else None)


def test_only_short_values_are_remembered() -> None:
    calls: list[str] = []

    @cached_when_short
    def shout(value: str) -> str:
        calls.append(value)
        return value.upper()

    long = "x" * (CACHED_LENGTH + 1)
    assert [shout("ab"), shout("ab"), shout(long), shout(long)] == ["AB", "AB", long.upper(), long.upper()]
    assert calls == ["ab", long, long]
