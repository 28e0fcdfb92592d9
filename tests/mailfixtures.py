"""Test mail, built: raw RFC 5322 / MIME messages of every shape, and JWZ's thread edge cases.

A small DSL that writes bytes (deterministic: the same call gives the same bytes, so synthetic
ids are stable in tests)::

    raw = message(message_id="m2@example.com", subject="Re: plan", references=["m1@example.com"],
                  body=mixed(alternative(plain("Sure."), html("<p>Sure.</p>")),
                             attachment("report.pdf", b"%PDF-1.4 ...", "application/pdf")))

Parts: ``plain``, ``html``, ``alternative``, ``mixed``, ``related``, ``attachment``,
``text_attachment``, ``signed``, ``encrypted``, ``smime``, ``forwarded`` (message/rfc822),
``part`` (any headers and body bytes, for broken input). Headers: ``encoded_word`` (RFC 2047).
Threads: ``THREAD_CASES``, each a list of mails in arrival order and the threads they must end
in (by label: a mail without a Message-ID is known by its label, its id is synthetic).
"""

from __future__ import annotations

import base64
import hashlib
import quopri
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial

CRLF = b"\r\n"
DEFAULT_DATE = datetime(2024, 3, 4, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Part:
    """One MIME part: its headers and its body bytes (already transfer-encoded)."""

    headers: tuple[tuple[str, str], ...]
    body: bytes

    def render(self, linesep: bytes = CRLF) -> bytes:
        head = linesep.join(f"{name}: {value}".encode("utf-8", "surrogateescape") for name, value in self.headers)
        return head + linesep + linesep + self.body


def _encode(data: bytes, encoding: str, linesep: bytes = CRLF) -> bytes:
    if encoding == "base64":
        text = base64.b64encode(data)
        return linesep.join(text[i : i + 76] for i in range(0, len(text), 76)) + linesep
    if encoding == "quoted-printable":
        return quopri.encodestring(data).replace(b"\n", linesep)
    return data.replace(b"\r\n", b"\n").replace(b"\n", linesep)


def _disposition(filename: str | None, inline: bool = False) -> tuple[tuple[str, str], ...]:
    if filename is None:
        return ()
    return (("Content-Disposition", f'{"inline" if inline else "attachment"}; filename="{filename}"'),)


def text_part(text: str | bytes, subtype: str = "plain", *, charset: str | None = "utf-8",
              encoding: str = "quoted-printable", filename: str | None = None, inline: bool = False) -> Part:
    """A text/* part. ``text`` as bytes is sent as given (a lying or unknown ``charset``)."""
    data = text if isinstance(text, bytes) else text.encode(charset or "utf-8")
    ctype = f"text/{subtype}" + (f"; charset={charset}" if charset else "")
    return Part((("Content-Type", ctype), ("Content-Transfer-Encoding", encoding), *_disposition(filename, inline)),
                _encode(data, encoding))


plain = partial(text_part, subtype="plain")
html = partial(text_part, subtype="html")


def multipart(subtype: str, *parts: Part, params: str = "", preamble: bytes = b"") -> Part:
    """A multipart/<subtype> of ``parts``; the boundary is derived from them (deterministic)."""
    rendered = [p.render() for p in parts]
    boundary = "=_" + hashlib.sha1(b"".join(rendered) + subtype.encode()).hexdigest()[:24]
    body = preamble + b"".join(b"--" + boundary.encode() + CRLF + r + CRLF for r in rendered)
    body += b"--" + boundary.encode() + b"--" + CRLF
    return Part((("Content-Type", f'multipart/{subtype}; boundary="{boundary}"{params}'),), body)


def alternative(*parts: Part) -> Part:
    return multipart("alternative", *parts)


def mixed(*parts: Part) -> Part:
    return multipart("mixed", *parts)


def related(*parts: Part) -> Part:
    return multipart("related", *parts)


def attachment(filename: str | None, data: bytes, content_type: str = "application/octet-stream") -> Part:
    """A base64 attachment (``filename`` None: a part with a type and no name)."""
    name = f'; name="{filename}"' if filename else ""
    return Part((("Content-Type", content_type + name), ("Content-Transfer-Encoding", "base64"),
                 *_disposition(filename)), _encode(data, "base64"))


def text_attachment(filename: str, text: str, content_type: str = "text/plain") -> Part:
    return text_part(text, content_type.split("/", 1)[1], filename=filename)


def signed(content: Part, signature: bytes = b"-----BEGIN PGP SIGNATURE-----\n\niQEz\n-----END PGP SIGNATURE-----\n",
           protocol: str = "application/pgp-signature") -> Part:
    """multipart/signed: the content, then the detached signature (PGP/MIME or S/MIME)."""
    sig = Part((("Content-Type", f'{protocol}; name="signature.asc"'),
                ("Content-Disposition", 'attachment; filename="signature.asc"')), signature)
    return multipart("signed", content, sig, params=f'; protocol="{protocol}"; micalg=pgp-sha256')


def encrypted(ciphertext: bytes = b"-----BEGIN PGP MESSAGE-----\n\nhQEMA\n-----END PGP MESSAGE-----\n") -> Part:
    """multipart/encrypted (PGP/MIME, RFC 3156): the version part and the encrypted payload."""
    control = Part((("Content-Type", "application/pgp-encrypted"),), b"Version: 1\r\n")
    payload = Part((("Content-Type", 'application/octet-stream; name="encrypted.asc"'),), ciphertext)
    return multipart("encrypted", control, payload, params='; protocol="application/pgp-encrypted"')


def smime(data: bytes = b"MIAGCSqGSIb3DQEHA6CAMIACAQAxggE=", smime_type: str = "enveloped-data") -> Part:
    """An S/MIME message body (application/pkcs7-mime)."""
    return Part((("Content-Type", f'application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"'),
                 ("Content-Transfer-Encoding", "base64"),
                 ("Content-Disposition", 'attachment; filename="smime.p7m"')), _encode(data, "base64"))


def forwarded(raw: bytes) -> Part:
    """A forwarded message as an attachment (message/rfc822)."""
    return Part((("Content-Type", "message/rfc822"), ("Content-Disposition", "inline")), raw)


def part(headers: Sequence[tuple[str, str]], body: bytes) -> Part:
    """Any part, for broken input: the headers and body bytes as given."""
    return Part(tuple(headers), body)


def encoded_word(text: str, charset: str = "utf-8", encoding: str = "B") -> str:
    """``text`` as one RFC 2047 encoded word."""
    data = text.encode(charset)
    if encoding.upper() == "B":
        return f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    quoted = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"={b:02X}" for b in data)
    return f"=?{charset}?Q?{quoted}?="


def message(*, message_id: str | None = "m1@example.com", subject: str | None = "Hello",
            from_: str | None = "Ann Example <ann@example.com>", to: str | None = "bob@example.com",
            cc: str | None = None, date: datetime | str | None = DEFAULT_DATE, in_reply_to: str | None = None,
            references: Iterable[str] = (), body: Part | str = "Hello Bob.\n",
            extra_headers: Iterable[tuple[str, str]] = (), linesep: bytes = CRLF) -> bytes:
    """One raw message. ``None`` leaves a header out; ``date`` as a string is written as given
    (an unparseable one); ``extra_headers`` come first (Received, Delivered-To...)."""
    content = plain(body) if isinstance(body, str) else body
    headers: list[tuple[str, str]] = list(extra_headers)
    if from_ is not None:
        headers.append(("From", from_))
    if to is not None:
        headers.append(("To", to))
    if cc is not None:
        headers.append(("Cc", cc))
    if subject is not None:
        headers.append(("Subject", subject))
    if date is not None:
        headers.append(("Date", date if isinstance(date, str) else format_datetime(date)))
    if message_id is not None:
        headers.append(("Message-ID", f"<{message_id}>"))
    if in_reply_to is not None:
        headers.append(("In-Reply-To", f"<{in_reply_to}>"))
    refs = list(references)
    if refs:
        headers.append(("References", (linesep + b" ").decode().join(f"<{r}>" for r in refs)))
    headers.append(("MIME-Version", "1.0"))
    whole = Part(tuple(headers) + content.headers, content.body).render(linesep)
    return whole if linesep == CRLF else whole.replace(CRLF, linesep)


# --- JWZ's edge cases, as thread sets -------------------------------------------------------------

@dataclass(frozen=True)
class Mail:
    """One message of a thread case. ``label`` names it (its Message-ID unless ``no_id``)."""

    label: str
    references: tuple[str, ...] = ()
    in_reply_to: str | None = None
    no_id: bool = False
    minute: int = 0                     # minutes after DEFAULT_DATE
    subject: str = "Topic"
    raw_references: str | None = None   # written as given (a broken References header)

    def raw(self) -> bytes:
        extra = (("References", self.raw_references),) if self.raw_references is not None else ()
        return message(
            message_id=None if self.no_id else self.label, subject=self.subject, in_reply_to=self.in_reply_to,
            references=self.references, date=DEFAULT_DATE + timedelta(minutes=self.minute),
            body=f"Message {self.label}.\n", extra_headers=extra)


@dataclass(frozen=True)
class ThreadCase:
    """Mails in arrival order and the threads (sets of labels) they must end in."""

    name: str
    mails: tuple[Mail, ...]
    threads: tuple[frozenset[str], ...]
    stored: frozenset[str] = field(default=frozenset())  # labels stored (duplicates: once); default all

    def raws(self) -> list[bytes]:
        return [mail.raw() for mail in self.mails]


def _case(name: str, mails: Sequence[Mail], *threads: Iterable[str]) -> ThreadCase:
    return ThreadCase(name, tuple(mails), tuple(frozenset(t) for t in threads),
                      frozenset(m.label for m in mails))


_FIFTY = tuple(f"r{i}@example.com" for i in range(50))

THREAD_CASES: tuple[ThreadCase, ...] = (
    _case("parent-then-reply", [Mail("a@x"), Mail("b@x", ("a@x",), "a@x", minute=1)], {"a@x", "b@x"}),
    _case("reply-before-parent", [Mail("b@x", ("a@x",), "a@x", minute=1), Mail("a@x")], {"a@x", "b@x"}),
    _case("ghost-parent-joins-siblings",  # both reply to a message never seen
          [Mail("b@x", ("a@x",), minute=1), Mail("c@x", ("a@x",), minute=2)], {"b@x", "c@x"}),
    _case("grandchild-before-everyone",
          [Mail("c@x", ("a@x", "b@x"), minute=2), Mail("a@x"), Mail("b@x", ("a@x",), minute=1)],
          {"a@x", "b@x", "c@x"}),
    _case("merge-through-a-late-message",  # two threads grew apart; d names both roots
          [Mail("a@x"), Mail("b@x", ("a@x",), minute=1), Mail("c@x", minute=2),
           Mail("d@x", ("a@x", "c@x"), minute=3)],
          {"a@x", "b@x", "c@x", "d@x"}),
    _case("in-reply-to-only",  # References truncated away by the client
          [Mail("a@x"), Mail("b@x", (), "a@x", minute=1), Mail("c@x", (), "b@x", minute=2)],
          {"a@x", "b@x", "c@x"}),
    _case("reference-loop",
          [Mail("a@x", ("b@x",)), Mail("b@x", ("a@x",), minute=1)], {"a@x", "b@x"}),
    _case("self-reference", [Mail("a@x", ("a@x",), "a@x"), Mail("b@x", minute=1)], {"a@x"}, {"b@x"}),
    _case("duplicate-delivery", [Mail("a@x"), Mail("b@x", ("a@x",), minute=1), Mail("b@x", ("a@x",), minute=1)],
          {"a@x", "b@x"}),
    _case("missing-ids",  # no Message-ID: a synthetic id, a thread of its own unless it references one
          [Mail("a@x"), Mail("anon-reply", ("a@x",), no_id=True, minute=1), Mail("anon-alone", no_id=True, minute=2)],
          {"a@x", "anon-reply"}, {"anon-alone"}),
    _case("fifty-references",
          [Mail("z@x", _FIFTY, minute=5), Mail("r0@example.com"), Mail("r49@example.com", _FIFTY[:49], minute=4)],
          {"z@x", "r0@example.com", "r49@example.com"}),
    _case("broken-references-header",  # garbage around the ids still links what can be read
          [Mail("a@x"), Mail("b@x", raw_references="<a@x>,, junk <<>> (comment <not-an-id>", minute=1)],
          {"a@x", "b@x"}),
    _case("references-without-an-at-sign",  # old git send-email wrote "In-Reply-To: <yes>": no link
          [Mail("a@x", (), "yes", subject="[PATCH] one"), Mail("b@x", ("yes",), "yes", minute=1, subject="[PATCH] two"),
           Mail("c@x", ("b@x", "yes"), "yes", minute=2, subject="Re: [PATCH] two")],
          {"a@x"}, {"b@x", "c@x"}),
    _case("unrelated-same-subject",  # no subject grouping by default
          [Mail("a@x", subject="Lunch?"), Mail("b@x", subject="Re: Lunch?", minute=1)], {"a@x"}, {"b@x"}),
)
