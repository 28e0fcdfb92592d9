"""The fast MIME reader (core.mail.parts) reads what the email package reads: the same text,
attachments and notes, for the synthetic mailing list, the test mail and mutated messages; it
takes the well-formed mail (the whole synthetic list) and leaves the rest to the email package."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from bench.mailcorpus import build_mailcorpus
from core.mail import mime
from core.mail.ids import head_and_body
from core.mail.message import email_content
from core.mail.parts import read_parts
from tests.mailfixtures import alternative, attachment, html, message, mixed, plain, text_attachment
from tests.test_mail_properties import SEEDS, header_soup, mutated


def same_as_email_package(raw: bytes) -> bool:
    """Whether the fast reader took ``raw``; when it did, it must read what the email package reads."""
    tree = read_parts(raw)
    if tree is None:
        return False
    assert mime.read(tree) == email_content(raw, head_and_body(raw)[1])
    return True


def test_the_synthetic_mailing_list_is_read_fast_and_alike() -> None:
    raws = [mail.raw for mail in build_mailcorpus(1500, 11).mails]
    assert all([same_as_email_package(raw) for raw in raws])


def test_the_test_mail_is_read_alike() -> None:
    taken = [same_as_email_package(raw) for raw in SEEDS]
    assert sum(taken) >= len(SEEDS) // 2  # forwarded, nested and 8-bit oddities go to the email package


@pytest.mark.parametrize("raw", [
    message(body=plain("crlf line ends\nsecond line", encoding="8bit")),
    message(body=mixed(plain("lf line ends"), html("<p>x</p>")), linesep=b"\n"),
    message(body=mixed(plain("x"), attachment("a b.pdf", b"%PDF" * 9, "application/pdf"),
                       text_attachment("n.txt", "t"))),
    message(body=alternative(plain(""), html("<p>only html</p>"))),
    b"Content-Type: multipart/mixed; boundary=b\n\npreamble\n--b\n\nno headers\n--b\nContent-Type: text/plain\n--b--\n",
    b"Content-Type: text/plain; charset=\"utf-8\"; format=flowed\nContent-Transfer-Encoding: base64\n\nw6k\n",
    b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!bad base64==\n",
])
def test_shapes_read_alike(raw: bytes) -> None:
    assert same_as_email_package(raw)


@pytest.mark.parametrize("raw", [
    b"From someone\nContent-Type: text/plain\n\nx",
    b"Content-Type: text/plain\r\n\r\nlone\rCR",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nnever closed\n",
    b"Content-Type: multipart/mixed\n\nno boundary\n",
    b"Content-Type: text/plain; charset*=utf-8''x\n\nrfc 2231\n",
    b"Content-Type: message/rfc822\n\nSubject: inner\n\nforwarded\n",
    b"Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n",
])
def test_subtle_shapes_are_left_to_the_email_package(raw: bytes) -> None:
    assert read_parts(raw) is None


@given(mutated())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_messages_read_alike(raw: bytes) -> None:
    same_as_email_package(raw)


@given(header_soup())
@settings(max_examples=300, deadline=None)
def test_header_soup_read_alike(raw: bytes) -> None:
    same_as_email_package(raw)
