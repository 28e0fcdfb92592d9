"""parse_message over the shapes real mail takes: MIME, charsets, attachments, broken input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.mail.message import Attachment, ParsedMessage, parse_message
from tests.mailfixtures import (
    alternative,
    attachment,
    encoded_word,
    encrypted,
    forwarded,
    html,
    message,
    mixed,
    part,
    plain,
    related,
    signed,
    smime,
    text_attachment,
)


def parsed(**options: object) -> ParsedMessage:
    return parse_message(message(**options))  # type: ignore[arg-type]


def test_a_plain_message_reads_every_header() -> None:
    m = parsed(message_id="m2@example.com", subject="Re: Plan", from_="Ann Example <ann@example.com>",
               to="bob@example.com, Carl <carl@example.com>", cc="dana@example.com",
               date="Tue, 05 Mar 2024 10:15:00 +0100", in_reply_to="m1@example.com",
               references=["m0@example.com", "m1@example.com"], body="Works for me.\n")
    assert (m.message_id, m.synthetic_id, m.subject, m.from_) == (
        "m2@example.com", False, "Re: Plan", "Ann Example <ann@example.com>")
    assert m.to == ("bob@example.com", "Carl <carl@example.com>") and m.cc == ("dana@example.com",)
    assert parsed(to="undisclosed-recipients:;").to == ()
    assert parsed(to="team: ann@example.com, bob@example.com;").to == ("ann@example.com", "bob@example.com")
    assert m.date == datetime(2024, 3, 5, 9, 15, tzinfo=UTC)
    assert m.in_reply_to == "m1@example.com" and m.references == ("m0@example.com", "m1@example.com")
    assert m.body_text == "Works for me." and m.attachments == () and m.notes == ()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(alternative(plain("the plain text"), html("<p>the <b>html</b></p>")), "the plain text",
                     id="alternative-prefers-plain"),
        pytest.param(alternative(plain(""), html("<p>only <b>html</b> has text</p>")), "only html has text",
                     id="alternative-empty-plain-falls-back-to-html"),
        pytest.param(alternative(plain("plain"), related(html("<p>rich</p>"), attachment("logo.png", b"\x89PNG",
                                                                                        "image/png"))),
                     "plain", id="alternative-with-related-html"),
        pytest.param(alternative(html("<div>Hello<br>there</div><ul><li>one</li></ul>")), "Hello\nthere\n  * one",
                     id="html-only-converted"),
        pytest.param(html("<p>caf\u00e9 &amp; cr\u00e8me</p><script>alert(1)</script><style>p{}</style>"),
                     "caf\u00e9 & cr\u00e8me", id="html-scripts-and-styles-dropped"),
        pytest.param(plain("Gr\u00fc\u00dfe aus K\u00f6ln", encoding="base64"), "Gr\u00fc\u00dfe aus K\u00f6ln",
                     id="base64"),
        pytest.param(plain("caf\u00e9 " * 30, encoding="quoted-printable"), ("caf\u00e9 " * 30), id="quoted-printable"),
        pytest.param(plain("\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435",
                           charset="koi8-r", encoding="8bit"),
                     "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435", id="koi8-r"),
        pytest.param(plain("\u65e5\u672c\u8a9e\u306e\u30e1\u30fc\u30eb", charset="iso-2022-jp", encoding="7bit"),
                     "\u65e5\u672c\u8a9e\u306e\u30e1\u30fc\u30eb", id="iso-2022-jp"),
        pytest.param(plain("\u4e2d\u6587\u90ae\u4ef6", charset="gb2312", encoding="base64"),
                     "\u4e2d\u6587\u90ae\u4ef6", id="gb2312"),
        pytest.param(mixed(plain("first part"), plain("list footer")), "first part\n\nlist footer",
                     id="mixed-inline-texts-in-order"),
        pytest.param(html("<div>" * 5000 + "deep text" + "</div>" * 5000), "deep text",
                     id="html-nested-deeper-than-libxml2-reads"),
    ],
)
def test_the_readable_text_of_each_mime_shape(body: object, expected: str) -> None:
    assert parsed(body=body).body_text.strip() == expected.strip()


@pytest.mark.parametrize(
    ("body", "charset", "text", "note"),
    [
        pytest.param("na\u00efve caf\u00e9".encode(), "us-ascii", "na\u00efve caf\u00e9",
                     "text not valid in charset 'us-ascii': decoded as utf-8", id="utf-8-labelled-ascii"),
        pytest.param("caf\u00e9 \u20ac".encode("cp1252"), "utf-8", "caf\u00e9 \u20ac",
                     "text not valid in charset 'utf-8': decoded as cp1252", id="cp1252-labelled-utf-8"),
        pytest.param("caf\u00e9".encode(), "x-unknown-charset", "caf\u00e9",
                     "unknown charset 'x-unknown-charset': decoded as utf-8", id="unknown-charset"),
        pytest.param(b"\x81\x8d\x8f caf\xe9", "x-bogus", "\x81\x8d\x8f caf\u00e9",
                     "unknown charset 'x-bogus': decoded as latin-1", id="neither-utf-8-nor-cp1252"),
        pytest.param(b"caf\xe9", "base64", "caf\u00e9", "unknown charset 'base64': decoded as cp1252",
                     id="a-bytes-codec-is-no-charset"),
        pytest.param(b"caf\xe9", None, "caf\u00e9", "no charset declared: decoded as cp1252", id="no-charset"),
    ],
)
def test_eight_bit_bodies_in_lying_or_unknown_charsets(body: bytes, charset: str | None, text: str,
                                                       note: str) -> None:
    m = parsed(body=plain(body, charset=charset, encoding="8bit"))
    assert m.body_text == text and note in m.notes


def test_rfc_2047_and_raw_utf_8_headers_are_decoded() -> None:
    greeting, city = encoded_word("Gr\u00fc\u00dfe", "utf-8", "Q"), encoded_word("aus K\u00f6ln", "iso-8859-1")
    name, chinese = encoded_word("M\u00fcller, J\u00fcrgen"), encoded_word("\u5f20\u4f1f", "gb2312")
    m = parsed(subject=f"Re: {greeting} {city} und caf\u00e9", from_=f"{name} <jm@example.de>",
               to=f"{chinese} <zw@example.cn>, \u00c9mile <e@example.fr>")
    assert m.subject == "Re: Gr\u00fc\u00dfeaus K\u00f6ln und caf\u00e9"  # no space between two encoded words
    assert m.from_ == "M\u00fcller, J\u00fcrgen <jm@example.de>"
    assert m.to == ("\u5f20\u4f1f <zw@example.cn>", "\u00c9mile <e@example.fr>")


def test_an_encoded_character_split_over_two_words_is_joined() -> None:
    data = "\u00e9t\u00e9".encode()
    subject = "=?utf-8?Q?" + "".join(f"={b:02X}" for b in data[:1]) + "?= =?utf-8?Q?" + "".join(
        f"={b:02X}" for b in data[1:]) + "?="
    assert parsed(subject=subject).subject == "\u00e9t\u00e9"


def test_attachments_listed_text_ones_indexed_under_a_marker() -> None:
    m = parsed(body=mixed(plain("See attached."), attachment("report.pdf", b"%PDF-1.4" * 100, "application/pdf"),
                          text_attachment("notes.txt", "the meeting notes"), attachment(None, b"\x00\x01", "image/gif"),
                          text_attachment("data.csv", "a,b\n1,2\n", "text/csv")))
    assert m.attachments == (
        Attachment("report.pdf", "application/pdf", 800, False),
        Attachment("notes.txt", "text/plain", 17, True),
        Attachment(None, "image/gif", 2, False),
        Attachment("data.csv", "text/csv", 10, True),  # decoded: the wire's CRLF line ends
    )
    assert m.body_text == ("See attached.\n\n--- attached file: notes.txt ---\nthe meeting notes\n\n"
                           "--- attached file: data.csv ---\na,b\n1,2")
    assert "%PDF" not in m.body_text and "--- attached file: notes.txt ---" in m.index_text


def test_an_rfc_2231_and_an_rfc_2047_file_name() -> None:
    encoded = encoded_word("\u00fcber.pdf")
    m = parsed(body=mixed(plain("x"),
                          part([("Content-Type", "application/pdf"),
                                ("Content-Disposition", "attachment; filename*=utf-8''Gr%C3%BC%C3%9Fe.pdf")], b"%PDF"),
                          part([("Content-Type", f'application/pdf; name="{encoded}"')], b"%PDF")))
    assert [a.filename for a in m.attachments] == ["Gr\u00fc\u00dfe.pdf", "\u00fcber.pdf"]


def test_signed_mail_reads_the_content_and_lists_the_signature() -> None:
    m = parsed(body=signed(plain("I approve the budget.")))
    assert m.body_text == "I approve the budget."
    assert m.attachments == (Attachment("signature.asc", "application/pgp-signature", 64, False),)
    assert "signature part not indexed" in m.notes and "PGP SIGNATURE" not in m.index_text


def test_smime_signed_mail() -> None:
    m = parsed(body=signed(plain("Signed with S/MIME."), b"MIIB", "application/pkcs7-signature"))
    assert m.body_text == "Signed with S/MIME." and m.attachments[0].content_type == "application/pkcs7-signature"


@pytest.mark.parametrize("body", [pytest.param(encrypted(), id="pgp-mime"), pytest.param(smime(), id="smime")])
def test_encrypted_mail_is_noted_and_not_indexed(body: object) -> None:
    m = parsed(body=body)
    assert any(note.startswith("encrypted part not indexed") for note in m.notes)
    assert "PGP MESSAGE" not in m.body_text and "MIAG" not in m.body_text
    assert len(m.attachments) == 1 and not m.attachments[0].indexed


def test_a_forwarded_message_is_read_with_its_headers_and_attachments() -> None:
    inner = message(message_id="orig@example.com", subject="Quarterly numbers", from_="Carl <carl@example.com>",
                    body=mixed(plain("Revenue is up 12%."), attachment("q1.xlsx", b"PK\x03\x04", "application/zip")))
    m = parsed(subject="Fwd: Quarterly numbers", body=mixed(plain("FYI, see below."), forwarded(inner)))
    assert m.body_text.startswith("FYI, see below.\n\n--- forwarded message ---\nFrom: Carl <carl@example.com>\n")
    assert "Subject: Quarterly numbers" in m.body_text and "Revenue is up 12%." in m.index_text
    assert m.attachments == (Attachment("q1.xlsx", "application/zip", 4, False),)


def test_no_message_id_and_an_unparseable_date_are_noted() -> None:
    m = parsed(message_id=None, date="the day after tomorrow")
    assert m.synthetic_id and m.date is None
    assert "no Message-ID: the id is derived from the content" in m.notes
    assert "unparseable Date: 'the day after tomorrow'" in m.notes


def test_a_date_without_zone_is_utc_and_every_date_is_aware_utc() -> None:
    assert parsed(date="Mon, 4 Mar 2024 09:30:00 -0000").date == datetime(2024, 3, 4, 9, 30, tzinfo=UTC)
    assert parsed(date="4 Mar 2024 23:30 -0500").date == datetime(2024, 3, 5, 4, 30, tzinfo=UTC)


def test_self_references_are_dropped_and_noted() -> None:
    m = parsed(message_id="me@x", in_reply_to="me@x", references=["a@x", "me@x"])
    assert m.references == ("a@x",) and m.in_reply_to is None and "self-reference dropped" in m.notes


@pytest.mark.parametrize(
    ("options", "in_reply_to", "references", "ignored"),
    [
        pytest.param({"in_reply_to": "yes"}, None, (), ["yes"], id="in-reply-to-yes-alone"),
        pytest.param({"in_reply_to": "yes", "references": ["a@x", "b@x"]}, None, ("a@x", "b@x"), ["yes"],
                     id="parent-falls-back-to-the-last-reference"),
        pytest.param({"in_reply_to": "b@x", "references": ["yes", "a@x"]}, "b@x", ("a@x", "b@x"), ["yes"],
                     id="yes-among-the-references"),
        pytest.param({"references": ["a@x", "yes", "1234.5678"]}, None, ("a@x",), ["yes", "1234.5678"],
                     id="two-ignored-two-notes"),
        pytest.param({"in_reply_to": "b@x", "references": ["a@x"]}, "b@x", ("a@x", "b@x"), [], id="valid-ids-no-note"),
    ],
)
def test_references_without_an_at_sign_are_ignored_and_noted(options: dict[str, object], in_reply_to: str | None,
                                                            references: tuple[str, ...], ignored: list[str]) -> None:
    m = parsed(message_id="m9@x", **options)
    assert (m.in_reply_to, m.references) == (in_reply_to, references)
    assert [note for note in m.notes if note.startswith("reference without")] == [
        f'reference without "@" ignored: {ref}' for ref in ignored]


@pytest.mark.parametrize("own", ["yes", "1234.5678", "local-part-only"])
def test_the_own_message_id_is_kept_without_an_at_sign(own: str) -> None:
    m = parsed(message_id=own, in_reply_to="a@x")
    assert (m.message_id, m.synthetic_id, m.references) == (own, False, ("a@x",))
    assert not [note for note in m.notes if "@" in note or "Message-ID" in note]


def test_ten_thousand_references_are_bounded_and_noted() -> None:
    m = parsed(references=[f"r{i}@x" for i in range(10_000)])
    assert len(m.references) == 100 and "References cut to 100 of 10000 ids" in m.notes


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"just some text, no headers at all\n", id="no-headers"),
        pytest.param(b"Subject: a\x00b\r\nFrom: \xff\xfe <x@y>\r\nMessage-ID: <n\x00ul@x>\r\n\r\nbo\x00dy\xff",
                     id="nul-and-invalid-utf-8"),
        pytest.param(b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nno boundary given\r\n", id="no-boundary"),
        pytest.param(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--b\r\n--b--\r\n",
                     id="empty-parts"),
        pytest.param(b"Content-Type: text/plain; charset=\"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64",
                     id="bad-charset-and-base64"),
        pytest.param(b"Content-Type: ;;;===\r\nContent-Disposition: attachment; filename*=x''%ZZ\r\n\r\nbody",
                     id="garbage-content-headers"),
        pytest.param(b"From: <<<@@@>>>\r\nTo: ,,,;;;\r\nDate: 99 Foo 99999 99:99:99\r\n\r\nx", id="garbage-addresses"),
        pytest.param(b"Subject: =?utf-8?B?!!!?= =?x?Q?=ZZ?=\r\n\r\nx", id="broken-encoded-words"),
        pytest.param(b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
                     + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 200, id="deep-nesting"),
        pytest.param(b"Content-Type: message/rfc822\r\n\r\n", id="empty-forward"),
    ],
)
def test_broken_input_gives_what_can_be_read(raw: bytes) -> None:
    m = parse_message(raw)
    for text in (m.message_id, m.body_text, m.index_text, m.subject or "", m.from_ or "", *m.notes):
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogate


def test_a_header_with_nul_and_invalid_utf_8_keeps_the_rest() -> None:
    m = parse_message(b"Subject: a\x00b \xff\r\nMessage-ID: <n\x00ul@x>\r\n\r\nbody")
    assert m.subject == "ab \u00ff" and m.message_id == "nul@x" and m.body_text == "body"


def test_an_opaque_smime_signature_is_not_called_encrypted() -> None:
    m = parsed(body=smime(smime_type="signed-data"))
    assert "S/MIME signed part not indexed (opaque signature)" in m.notes
    assert not any(note.startswith("encrypted") for note in m.notes)


def test_an_mbox_from_line_before_the_headers_is_no_header() -> None:
    raw = b"From ann@example.com Mon Mar  4 09:30:00 2024\nMessage-ID: <mbox@x>\nSubject: hi\n\nbody\n"
    m = parse_message(raw)
    assert (m.message_id, m.subject, m.body_text) == ("mbox@x", "hi", "body")


def test_a_bounce_reads_its_delivery_status() -> None:
    raw = (b"Message-ID: <bounce@x>\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
           b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
           b"Final-Recipient: rfc822; bob@example.com\r\nStatus: 5.1.1\r\n--b--\r\n")
    assert parse_message(raw).body_text == ("Delivery failed.\n\nReporting-MTA: dns; mx.example.com\n\n"
                                            "Final-Recipient: rfc822; bob@example.com\nStatus: 5.1.1")


def test_a_multipart_without_boundary_is_read_as_text() -> None:
    m = parse_message(b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nno boundary given\r\n")
    assert m.body_text == "no boundary given" and "multipart/mixed without parts: read as text" in m.notes
