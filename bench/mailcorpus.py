"""A deterministic synthetic mailing list, shaped like real multi-tenant mail.

What real mail looks like, and what this generator reproduces (each a parameter below):

- **Threads.** Most threads are one to three messages; sizes follow a heavy-tailed (zeta) law
  up to a few hundred, and a few very long threads of 500 to 2,000 messages (the never-ending
  design discussion). A reply answers the newest message most of the time, else an earlier one
  or the root, so threads branch like real ones.
- **References as clients write them.** Most replies carry In-Reply-To and References (capped at
  20 ids, root + the last 19, as mail clients trim them); some clients send only In-Reply-To,
  some only References; some References are cut harder (the root lost). A few replies arrive
  before their parents (a parent held up in a queue), a few messages are delivered twice (once
  byte-identical, once as another folder's copy with its own Received line), a few leaves have no
  Message-ID, a few parents were never delivered (ghosts: a private reply quoted on the list), a
  few References repeat an id (a loop) or name the message itself, a few threads are delivered
  to both companies (a message copied to two tenants' inboxes).
- **Bodies about something.** Each thread has a subject drawn from ``bench.corpus``'s topical
  model (the company's Zipf popularity over 300 topics), and every message's own text mixes that
  topic's words with background words, so search over mail is meaningful. Lengths are log-normal
  (median 450 characters: most mail is short).
- **Quoting and signatures.** Bottom-posted replies quote the parent with an attribution line
  (``On <date>, <name> wrote:``) and ``> ``; some clients interleave; Gmail-style replies put the
  quote below the answer; Outlook top-posts the whole parent under ``-----Original Message-----``
  unprefixed; phones add "Sent from my phone". Quotes nest (``> > ``) up to three levels and are
  trimmed to a few thousand characters. Most people sign with a ``-- `` line.
- **MIME shapes.** text/plain (8bit, quoted-printable, base64), multipart/alternative with an HTML
  part, HTML-only, multipart/mixed with attachments (PDF and PNG, not indexed; CSV, indexed),
  multipart/signed with a PGP signature, several charsets (utf-8, iso-8859-1, windows-1252,
  koi8-r, iso-2022-jp), RFC 2047 encoded subjects and names, a few broken headers (an unparseable
  Date, a raw 8-bit Subject, a header line without a colon).

Every message is rendered by hand (string templates plus the standard library's encoders), which
is what makes 100,000 messages take seconds; ``tests/test_mailcorpus.py`` checks that each one
parses with the standard library's ``email`` package. Seeded: the same seed gives the same bytes.

``python -m bench.mailcorpus --messages 2000 --format mbox OUT`` writes a mailbox for the CLI
(``.eml`` files, an mbox file or a Maildir).
"""

from __future__ import annotations

import argparse
import base64
import html
import quopri
import random
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.corpus import (
    BACKGROUND_WORDS,
    COMPANIES,
    DOC_CONCENTRATION,
    MIX_BACKGROUND,
    MIX_SECONDARY,
    SECONDARY_TOPIC_SHARE,
    TOPIC_POPULARITY_EXPONENT,
    Topic,
    document_text,
    make_topics,
    vocabulary,
    zipf_probabilities,
)

# --- thread sizes -------------------------------------------------------------------------------
THREAD_SIZE_EXPONENT = 2.1  # P(size = k) ~ k^-2.1: 2/3 of threads are single messages
THREAD_SIZE_MAX = 300  # the zeta tail stops here; longer threads are the few "very long" ones
LONG_THREAD_SIZES = (500, 2000)
LONG_THREAD_EVERY = 30_000  # one very long thread per this many messages (at least one from 5,000)
LONG_THREAD_MIN_MESSAGES = 5_000
LONG_THREAD_MAX_SHARE = 0.25  # never more than this share of a small corpus in long threads
REPLY_TO_NEWEST, REPLY_TO_ROOT = 0.55, 0.15  # else a uniformly drawn earlier message

# --- companies and people -----------------------------------------------------------------------
COMPANY_SHARE_B = 0.10  # as in bench.corpus: company A holds 90% of the mail
PEOPLE = {"A": 600, "B": 120}
ACTIVITY_EXPONENT = 1.1  # a few people write most of the mail
THREAD_PARTICIPANTS = (2, 12)
DOMAINS = {"A": "acme-logistics.example", "B": "borealis-health.example"}
OUTSIDE_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "customers.example")
OUTSIDE_SHARE = 0.35  # correspondents from outside the company (customers, vendors)
SIGNATURE_SHARE = 0.6  # people who sign with a "-- " line
SIGNOFF_ONLY_SHARE = 0.15  # people who end with "Best regards,\nName" and no "-- " line
FIRST_NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
               "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Wendy", "Zoë", "José",
               "Jürgen", "Łukasz", "Søren", "François", "Ana", "María", "Wei", "Hiroshi", "Olga", "Dmitri",
               "Priya", "Ahmed", "Chloé", "Björn", "Inés", "Mateo", "Yuki", "Aoife")
LAST_NAMES = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Müller", "García",
              "Nowak", "Sørensen", "Dubois", "Tanaka", "Ivanova", "Rossi", "Novák", "Öztürk", "Kowalski",
              "Fernández", "Schmidt", "O'Brien", "Nakamura", "Petrov", "Silva", "Jensen", "Lefèvre", "Chen",
              "Kumar", "Haddad")
TITLES = ("Account Manager", "Support Engineer", "Operations Lead", "Head of Logistics", "Customer Success",
          "Billing Specialist", "Site Reliability Engineer", "Procurement", "Sales Director", "CTO")

# --- bodies -------------------------------------------------------------------------------------
OWN_TEXT_MEDIAN_CHARS = 450
OWN_TEXT_SIGMA = 0.8
OWN_TEXT_CHARS = (20, 8000)
QUOTE_MAX_CHARS = 4000  # what a reply keeps of its parent (people and clients trim)
QUOTE_MAX_DEPTH = 3  # "> > > " is as deep as quotes go
REFERENCES_CAP = 20  # root + the last 19, as clients trim a long References header

# --- edge cases (shares of the messages that can have them) ------------------------------------
GHOST_SHARE = 0.005  # of replies that have replies: never delivered
NO_MESSAGE_ID_SHARE = 0.003  # of messages nobody replies to
LATE_PARENT_SHARE = 0.01  # of delivered messages with replies: delivered after their first reply
DUPLICATE_SHARE = 0.01  # of delivered messages: delivered a second time
TRUNCATED_REFERENCES_SHARE = 0.04  # of replies at depth >= 3: only the last 3 ids (root lost)
SELF_REFERENCE_SHARE = 0.001
REFERENCE_LOOP_SHARE = 0.001
BAD_DATE_SHARE = 0.002
RAW_8BIT_SUBJECT_SHARE = 0.001
BROKEN_HEADER_SHARE = 0.001
SIGNED_SHARE = 0.005
ATTACHMENT_SHARE = 0.06
NON_ASCII_SUBJECT_SHARE = 0.03
CROSSPOST_SHARE = 0.003  # of company A's threads of at most 5 messages: also delivered to B
SUBJECT_CHANGE_SHARE = 0.01  # replies that rename the thread ("New (was: Old)")


@dataclass(frozen=True)
class Client:
    """How one mail program writes: MIME shape, quoting style, encoding, headers it sends."""

    name: str
    weight: float
    shape: str  # plain | alternative | html
    quoting: str  # bottom | interleaved | below | outlook | phone
    transfer: str  # 8bit | 7bit | quoted-printable | base64
    references: str  # both | irt-only | refs-only
    charset: str
    agent: str
    greeting: str = ""  # a line in the charset's own script, so the charset matters
    reply_prefix: str = "Re: "


CLIENTS = (
    Client("thunderbird", 0.17, "plain", "bottom", "8bit", "both", "utf-8", "User-Agent: Mozilla Thunderbird 115.6"),
    Client("mutt", 0.05, "plain", "interleaved", "8bit", "both", "utf-8", "User-Agent: Mutt/2.2.12"),
    Client("gmail", 0.28, "alternative", "below", "quoted-printable", "both", "utf-8",
           "X-Mailer: Gmail"),
    Client("outlook", 0.18, "alternative", "outlook", "quoted-printable", "both", "utf-8",
           "X-Mailer: Microsoft Outlook 16.0", reply_prefix="RE: "),
    Client("outlook-legacy", 0.05, "alternative", "outlook", "quoted-printable", "irt-only", "windows-1252",
           "X-Mailer: Microsoft Office Outlook 12.0",
           greeting="Thanks \u2013 \u201cquick\u201d note on the \u20ac-invoice:", reply_prefix="RE: "),
    Client("apple-mail", 0.08, "plain", "bottom", "quoted-printable", "both", "utf-8",
           "X-Mailer: Apple Mail (2.3774)"),
    Client("android", 0.06, "plain", "phone", "base64", "refs-only", "utf-8", "User-Agent: K-9 Mail for Android"),
    Client("webmail", 0.04, "html", "below", "quoted-printable", "both", "utf-8", "X-Mailer: Roundcube Webmail"),
    Client("pine-latin1", 0.05, "plain", "bottom", "8bit", "both", "iso-8859-1", "User-Agent: Alpine 2.26",
           greeting="Grüße an alle, hier die Übersicht:", reply_prefix="AW: "),
    Client("becky-jp", 0.02, "plain", "bottom", "7bit", "both", "iso-2022-jp", "X-Mailer: Becky! ver. 2.81",
           greeting="お世話になっております。"),
    Client("thebat-ru", 0.02, "plain", "bottom", "8bit", "both", "koi8-r", "X-Mailer: The Bat! (v10.4)",
           greeting="Добрый день, коллеги."),
)

# Labels of what a message exercises (Mail.kinds); the tests check each appears.
KINDS = ("reply", "root", "irt-only", "refs-only", "truncated-references", "capped-references", "early-reply",
         "late-parent", "duplicate", "duplicate-copy", "no-message-id", "ghost-parent", "self-reference",
         "reference-loop", "bad-date", "no-date", "raw-8bit-subject", "broken-header", "signed", "attachment",
         "text-attachment", "rfc2047-subject", "crosspost", "subject-change", "signature", "quoted", "outlook-quote",
         "interleaved", "phone", "plain", "alternative", "html", "quoted-printable", "base64", "8bit", "7bit",
         "utf-8", "iso-8859-1", "windows-1252", "koi8-r", "iso-2022-jp")


@dataclass(frozen=True)
class Person:
    name: str
    address: str
    client: Client
    signature: str  # "" when the person does not sign


@dataclass
class _Node:
    """One message of a generated thread, before and after rendering."""

    thread: int
    index: int  # position in the thread (date order)
    parent: int | None
    author: Person
    date: datetime
    depth: int
    message_id: str
    children: list[int] = field(default_factory=list)
    ghost: bool = False
    no_id: bool = False
    plain: str = ""  # the text/plain a reader sees (what the next reply quotes)
    raw: bytes = b""
    own_text: str = ""
    references: tuple[str, ...] = ()
    in_reply_to: str | None = None
    kinds: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Mail:
    """One delivery: the raw bytes as a client would POST them, and what the generator knows."""

    company: str
    raw: bytes
    message_id: str | None  # without angle brackets; None: sent without a Message-ID
    thread: int  # the generator's thread (index into MailCorpus.threads)
    in_reply_to: str | None
    references: tuple[str, ...]  # as written in the header (ids, in order, repeats kept)
    own_text: str  # what the author wrote (no quote, no signature)
    kinds: frozenset[str]
    key: str  # the message's identity: its Message-ID, or "noid:<thread>.<n>" for one without
    parent: str | None = None  # the id of the message it answers (None for a thread's root)


@dataclass(frozen=True)
class ThreadInfo:
    company: str
    topic: int
    subject: str
    size: int  # messages generated, ghosts included
    delivered: int  # distinct messages delivered


@dataclass
class MailCorpus:
    mails: list[Mail]  # in delivery order, duplicates and crossposts included
    threads: list[ThreadInfo]
    vocabulary: list[str]
    topics: list[Topic]
    popularity: dict[str, npt.NDArray[np.float64]]
    seconds: float = 0.0

    def distinct(self) -> list[Mail]:
        """Each (company, message) once: what the service should store."""
        seen: set[tuple[str, str]] = set()
        out = []
        for mail in self.mails:
            if (mail.company, mail.key) not in seen:
                seen.add((mail.company, mail.key))
                out.append(mail)
        return out

    def of(self, company: str) -> list[Mail]:
        return [m for m in self.mails if m.company == company]

    def expected_threads(self, company: str) -> list[frozenset[str]]:
        """JWZ's threads of ``company``'s delivered mail: the connected components of the graph of
        ids (each message's own id, In-Reply-To and References, ghosts included as nodes), as sets
        of delivered message keys. Largest first, ties by their smallest key."""
        return connected_threads(self.of(company))


def connected_threads(mails: Iterable[Mail]) -> list[frozenset[str]]:
    """Connected components over Message-ID / In-Reply-To / References (see expected_threads)."""
    return id_components((m.key, *m.references, *([m.in_reply_to] if m.in_reply_to else [])) for m in mails)


def id_components(messages: Iterable[Sequence[str]]) -> list[frozenset[str]]:
    """The connected components of the id graph, each message given as its own id then the ids it
    names; messages only (a named id never delivered is left out). Largest first, ties by their
    smallest id. The exact answer threading must give (tests use it as the oracle too)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    own: set[str] = set()
    for own_id, *named in messages:
        own.add(own_id)
        root = find(own_id)
        for other in named:
            r = find(other)
            if r != root:
                parent[r] = root
    groups: dict[str, set[str]] = {}
    for key in own:
        groups.setdefault(find(key), set()).add(key)
    return sorted((frozenset(g) for g in groups.values()), key=lambda g: (-len(g), min(g)))


# --- the generator ------------------------------------------------------------------------------


def long_thread_sizes(n_messages: int, np_rng: np.random.Generator) -> list[int]:
    """The few very long threads of a corpus of ``n_messages`` (none below 5,000 messages)."""
    if n_messages < LONG_THREAD_MIN_MESSAGES:
        return []
    n_long = max(1, round(n_messages / LONG_THREAD_EVERY))
    cap = int(n_messages * LONG_THREAD_MAX_SHARE / n_long)
    return [min(cap, int(np_rng.integers(LONG_THREAD_SIZES[0], LONG_THREAD_SIZES[1] + 1))) for _ in range(n_long)]


class ZetaSizes:
    """Thread sizes drawn from P(k) ~ k^-THREAD_SIZE_EXPONENT, 1 <= k <= THREAD_SIZE_MAX."""

    def __init__(self, np_rng: np.random.Generator) -> None:
        self.np_rng = np_rng
        self.ks = np.arange(1, THREAD_SIZE_MAX + 1)
        p = self.ks.astype(np.float64) ** -THREAD_SIZE_EXPONENT
        self.p = p / p.sum()
        self.drawn: list[int] = []

    def next(self, at_most: int) -> int:
        if not self.drawn:
            self.drawn = [int(k) for k in self.np_rng.choice(self.ks, size=4096, p=self.p)][::-1]
        return max(1, min(self.drawn.pop(), at_most))


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower().replace("'", "")


def _people(company: str, rng: random.Random) -> list[Person]:
    clients = list(CLIENTS)
    weights = [c.weight for c in clients]
    out = []
    for i in range(PEOPLE[company]):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        outside = rng.random() < OUTSIDE_SHARE
        domain = rng.choice(OUTSIDE_DOMAINS) if outside else DOMAINS[company]
        address = f"{_ascii(first)}.{_ascii(last)}{i}@{domain}"
        client = rng.choices(clients, weights)[0]
        name = f"{first} {last}"
        roll = rng.random()
        if roll < SIGNATURE_SHARE:
            org = domain.split(".")[0].replace("-", " ").title()
            signature = (f"-- \n{name}\n{rng.choice(TITLES)}, {org}\n"
                         f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}\n")
        elif roll < SIGNATURE_SHARE + SIGNOFF_ONLY_SHARE:
            signature = f"Best regards,\n{first}\n"
        else:
            signature = ""
        out.append(Person(name, address, client, signature))
    return out


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.vocab = vocabulary(self.rng)
        self.topics = make_topics(self.np_rng)
        self.background = zipf_probabilities(BACKGROUND_WORDS)
        topic_zipf = zipf_probabilities(len(self.topics), TOPIC_POPULARITY_EXPONENT)
        self.popularity = {c: topic_zipf[self.np_rng.permutation(len(self.topics))] for c in COMPANIES}
        self.people = {c: _people(c, self.rng) for c in COMPANIES}
        self.activity = {c: zipf_probabilities(len(p), ACTIVITY_EXPONENT) for c, p in self.people.items()}
        self.id_counter = 0
        self.start = datetime(2024, 1, 1, tzinfo=UTC)

    # -- structure ------------------------------------------------------------------------------

    def new_id(self, domain: str) -> str:
        self.id_counter += 1
        return f"{self.rng.getrandbits(48):012x}.{self.id_counter}@{domain}"

    def thread(self, number: int, company: str, size: int) -> tuple[ThreadInfo, list[_Node]]:
        rng, np_rng = self.rng, self.np_rng
        topic = int(np_rng.choice(len(self.topics), p=self.popularity[company]))
        people = self.people[company]
        k = min(len(people), rng.randint(*THREAD_PARTICIPANTS))
        chosen = np_rng.choice(len(people), size=k, replace=False, p=self.activity[company])
        participants = [people[int(i)] for i in chosen]
        date = self.start + timedelta(seconds=rng.uniform(0, 2 * 365 * 86400))
        mean_gap = 3600 * rng.choice((0.5, 2, 6, 24))
        nodes: list[_Node] = []
        for i in range(size):
            if i == 0:
                parent, author, depth = None, participants[0], 0
            else:
                roll = rng.random()
                if roll < REPLY_TO_NEWEST:
                    parent = i - 1
                elif roll < REPLY_TO_NEWEST + REPLY_TO_ROOT:
                    parent = 0
                else:
                    parent = rng.randrange(i)
                author = participants[0] if rng.random() < 0.3 else rng.choice(participants)
                depth = nodes[parent].depth + 1
                date = date + timedelta(seconds=rng.expovariate(1 / mean_gap) + 30)
                nodes[parent].children.append(i)
            domain = author.address.split("@", 1)[1]
            nodes.append(_Node(number, i, parent, author, date, depth, self.new_id(domain)))
        words = [self.vocab[i] for i in self.topics[topic].words[: rng.randint(2, 5)]]
        subject = " ".join(words).capitalize() + rng.choice(("", "", "", "?", " - update", " (urgent)"))
        if rng.random() < NON_ASCII_SUBJECT_SHARE:
            subject = rng.choice(("Überprüfung: ", "Réunion \u2013 ", "Café ", "Подтверждение: ", "確認: ")) + subject
        return ThreadInfo(company, topic, subject, size, 0), nodes

    def edge_cases(self, nodes: list[_Node]) -> None:
        rng = self.rng
        for node in nodes:
            if node.parent is not None and node.children and rng.random() < GHOST_SHARE:
                node.ghost = True
            elif not node.children and rng.random() < NO_MESSAGE_ID_SHARE:
                node.no_id = True

    # -- text -----------------------------------------------------------------------------------

    def thread_words(self, topic: int) -> ThreadWords:
        """The thread's own word mix, as bench.corpus mixes a document's: background words, the
        topic through one Dirichlet draw around its weights (a thread repeats its own key terms),
        sometimes a second topic."""
        topics, np_rng = self.topics, self.np_rng
        secondary = int(np_rng.integers(len(topics))) if np_rng.random() < SECONDARY_TOPIC_SHARE else None
        second = MIX_SECONDARY if secondary is not None else 0.0
        own = np_rng.dirichlet(DOC_CONCENTRATION * topics[topic].weights + 1e-3)
        words = [np.arange(BACKGROUND_WORDS), topics[topic].words]
        weights = [MIX_BACKGROUND * self.background, (1 - MIX_BACKGROUND - second) * own]
        if secondary is not None:
            words.append(topics[secondary].words)
            weights.append(second * topics[secondary].weights)
        cdf = np.cumsum(np.concatenate(weights))
        return ThreadWords(np.concatenate(words), cdf / cdf[-1])

    def own_text(self, words: ThreadWords, author: Person, to_first: str | None) -> str:
        rng = self.rng
        target = int(min(OWN_TEXT_CHARS[1], max(OWN_TEXT_CHARS[0],
                                                rng.lognormvariate(np.log(OWN_TEXT_MEDIAN_CHARS), OWN_TEXT_SIGMA))))
        drawn = words.words[np.searchsorted(words.cdf, self.np_rng.random(max(4, target // 4)), side="right")]
        vocab = self.vocab
        text = document_text([vocab[i] for i in drawn.tolist()], rng, target)
        lines = []
        if author.client.greeting:
            lines.append(author.client.greeting)
        elif to_first and rng.random() < 0.5:
            lines.append(f"Hi {to_first},")
        lines.append(text)
        return "\n\n".join(lines) + "\n"


@dataclass(frozen=True)
class ThreadWords:
    words: npt.NDArray[np.int64]  # vocabulary indexes
    cdf: npt.NDArray[np.float64]  # their cumulative probabilities


def _first(name: str) -> str:
    return name.split(" ", 1)[0]


def _quote_lines(body: str, max_chars: int) -> list[str]:
    """The parent's body as quoted lines: ``> `` prefixed, quotes nested at most QUOTE_MAX_DEPTH
    deep (deeper ones dropped), trimmed to about ``max_chars``."""
    out: list[str] = []
    used = 0
    for line in body.rstrip("\n").split("\n"):
        depth = len(line) - len(line.lstrip(">")) if line.startswith(">") else 0
        if depth >= QUOTE_MAX_DEPTH:
            continue
        quoted = ">" + line if line.startswith(">") else ("> " + line if line else ">")
        used += len(quoted) + 1
        if used > max_chars:
            break
        out.append(quoted)
    return out


def _wrap(text: str, width: int = 72) -> str:
    """Plain-text mail is wrapped at 72 columns (paragraphs kept)."""
    out: list[str] = []
    for line in text.split("\n"):
        while len(line) > width:
            cut = line.rfind(" ", 0, width)
            if cut <= 0:
                cut = width
            out.append(line[:cut])
            line = line[cut:].lstrip(" ")
        out.append(line)
    return "\n".join(out)


def _attribution(client: Client, parent: _Node) -> str:
    when = parent.date
    who = parent.author
    if client.name == "gmail":
        return f"On {when:%a, %b} {when.day}, {when:%Y} at {when:%I:%M %p} {who.name} <{who.address}> wrote:"
    if client.name == "apple-mail":
        return f"On {when.day} {when:%b %Y}, at {when:%H:%M}, {who.name} <{who.address}> wrote:"
    if client.name == "pine-latin1":
        return f"Am {when:%d.%m.%Y %H:%M}, schrieb {who.name}:"
    return f"On {when:%d/%m/%Y %H:%M}, {who.name} wrote:"


def _reply_body(client: Client, own: str, signature: str, parent: _Node, subject: str, rng: random.Random) -> str:
    """The text/plain body of a reply in ``client``'s quoting convention."""
    own = _wrap(own)
    if client.quoting == "outlook":
        p = parent
        kept = p.plain[:QUOTE_MAX_CHARS]
        header = (f"-----Original Message-----\nFrom: {p.author.name} <{p.author.address}>\n"
                  f"Sent: {p.date:%A, %B} {p.date.day}, {p.date:%Y %I:%M %p}\nTo: {p.author.address}\n"
                  f"Subject: {subject}\n\n")
        return f"{own}\n{signature}\n{header}{kept}"
    quoted = "\n".join(_quote_lines(parent.plain, QUOTE_MAX_CHARS))
    attribution = _attribution(client, parent)
    if client.quoting == "interleaved":
        paragraphs = own.rstrip("\n").split("\n\n")
        parent_lines = _quote_lines(_wrap(parent.own_text), QUOTE_MAX_CHARS)
        parts, step = [attribution], max(1, len(parent_lines) // max(1, len(paragraphs)))
        for i, paragraph in enumerate(paragraphs):
            chunk = parent_lines[i * step:(i + 1) * step]
            if chunk:
                parts.append("\n".join(chunk))
            parts.append(paragraph)
        return "\n\n".join(parts) + "\n" + (f"\n{signature}" if signature else "")
    if client.quoting == "below":
        return f"{own}\n{signature}\n{attribution}\n\n{quoted}\n"
    if client.quoting == "phone":
        return f"{own}\nSent from my phone\n\n{attribution}\n{quoted}\n"
    # bottom-posting: the quote first, the answer under it
    return f"{attribution}\n{quoted}\n\n{own}" + (f"\n{signature}" if signature else "")


def _html(plain: str) -> str:
    """The HTML alternative of a plain body: paragraphs, quoted lines as blockquotes."""
    parts = ['<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head><body>']
    for block in html.escape(plain, quote=False).split("\n\n"):
        lines = block.strip("\n").split("\n")
        if not lines[0]:
            continue
        if lines[0].startswith("&gt;"):
            inner = "<br>\n".join(line.lstrip("&gt; ") for line in lines)
            parts.append(f'<blockquote type="cite" style="margin:0 0 0 .8ex;border-left:1px solid #ccc">{inner}'
                         "</blockquote>")
        else:
            parts.append("<p>" + "<br>\n".join(lines) + "</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _encode_header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8", maxlinelen=76).encode()


def _address(person: Person) -> str:
    return formataddr((person.name, person.address), charset="utf-8")


def _fold_ids(ids: Sequence[str]) -> str:
    return "\n ".join(f"<{i}>" for i in ids)


def _payload(text: str, charset: str, transfer: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body bytes) of a text part."""
    data = text.encode(charset)
    if transfer == "base64":
        return "base64", base64.encodebytes(data)
    if transfer == "quoted-printable":
        return "quoted-printable", quopri.encodestring(data)
    if transfer == "7bit" and charset == "iso-2022-jp":
        return "7bit", data
    return ("7bit" if data.isascii() else "8bit"), data


def _text_part(subtype: str, text: str, charset: str, transfer: str, kinds: set[str]) -> bytes:
    encoding, data = _payload(text, charset, transfer)
    kinds.add(encoding)
    flowed = "; format=flowed" if subtype == "plain" and encoding == "8bit" and charset == "utf-8" else ""
    head = f"Content-Type: text/{subtype}; charset=\"{charset}\"{flowed}\nContent-Transfer-Encoding: {encoding}\n\n"
    return head.encode("ascii") + data


def _multipart(subtype: str, parts: Sequence[bytes], boundary: str, extra: str = "") -> bytes:
    out = [f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"{extra}\n\n".encode("ascii")]
    out.append(b"This is a multi-part message in MIME format.\n")
    for part in parts:
        out.append(f"\n--{boundary}\n".encode("ascii"))
        out.append(part if part.endswith(b"\n") else part + b"\n")
    out.append(f"\n--{boundary}--\n".encode("ascii"))
    return b"".join(out)


def _attachment(rng: random.Random, kinds: set[str], topic_words: Sequence[str]) -> bytes:
    kind = rng.choice(("pdf", "pdf", "png", "csv"))
    if kind == "csv":
        kinds.add("text-attachment")
        rows = ["item,quantity,region"] + [f"{rng.choice(topic_words)},{rng.randint(1, 500)},{rng.choice('NESW')}"
                                           for _ in range(rng.randint(3, 40))]
        data = ("\n".join(rows) + "\n").encode()
        return (f"Content-Type: text/csv; charset=\"utf-8\"; name=\"report-{rng.randint(1, 999)}.csv\"\n"
                "Content-Disposition: attachment; filename=\"report.csv\"\nContent-Transfer-Encoding: base64\n\n"
                ).encode() + base64.encodebytes(data)
    size = rng.randint(2_000, 60_000)
    head = b"%PDF-1.4\n" if kind == "pdf" else b"\x89PNG\r\n\x1a\n"
    data = head + rng.randbytes(size)
    ctype, name = ("application/pdf", "invoice.pdf") if kind == "pdf" else ("image/png", "screenshot.png")
    return (f"Content-Type: {ctype}; name=\"{name}\"\nContent-Disposition: attachment; filename=\"{name}\"\n"
            "Content-Transfer-Encoding: base64\n\n").encode() + base64.encodebytes(data)


def _signature_part(rng: random.Random) -> bytes:
    armor = base64.encodebytes(rng.randbytes(180)).decode()
    return ("Content-Type: application/pgp-signature; name=\"signature.asc\"\n"
            "Content-Description: OpenPGP digital signature\n\n"
            f"-----BEGIN PGP SIGNATURE-----\n\n{armor}-----END PGP SIGNATURE-----\n").encode("ascii")


def _render(gen: _Generator, info: ThreadInfo, words: ThreadWords, nodes: list[_Node], node: _Node,
            company: str) -> None:
    """Fill ``node``'s texts, references and raw bytes (its parent is already rendered)."""
    rng = gen.rng
    client = node.author.client
    parent = nodes[node.parent] if node.parent is not None else None
    kinds = node.kinds
    kinds.add("reply" if parent else "root")
    node.own_text = gen.own_text(words, node.author, _first(parent.author.name) if parent else None)
    signature = "" if parent is not None and client.quoting == "phone" else node.author.signature
    if signature.startswith("-- "):
        kinds.add("signature")
    subject = info.subject
    if parent is not None:
        body = _reply_body(client, node.own_text, signature, parent, subject, rng)
        kinds.add({"outlook": "outlook-quote", "interleaved": "interleaved", "phone": "phone"}.get(client.quoting,
                                                                                                     "quoted"))
        subject = client.reply_prefix + subject
        if rng.random() < SUBJECT_CHANGE_SHARE:
            subject = f"{gen.vocab[rng.randrange(len(gen.vocab))].capitalize()} plan (was: {info.subject})"
            kinds.add("subject-change")
        ancestors: list[str] = []
        walk: _Node | None = parent
        while walk is not None:
            ancestors.append(walk.message_id)
            walk = nodes[walk.parent] if walk.parent is not None else None
        chain = ancestors[::-1]  # root .. parent
        if len(chain) > REFERENCES_CAP:
            chain = [chain[0], *chain[-(REFERENCES_CAP - 1):]]
            kinds.add("capped-references")
        if len(chain) >= 3 and rng.random() < TRUNCATED_REFERENCES_SHARE:
            chain = chain[-3:]
            kinds.add("truncated-references")
        if rng.random() < REFERENCE_LOOP_SHARE and len(chain) >= 2:
            chain = [*chain, chain[0]]
            kinds.add("reference-loop")
        if rng.random() < SELF_REFERENCE_SHARE:
            chain = [*chain, node.message_id]
            kinds.add("self-reference")
        refs_mode = client.references
        node.in_reply_to = None if refs_mode == "refs-only" else parent.message_id
        node.references = () if refs_mode == "irt-only" else tuple(chain)
        if refs_mode != "both":
            kinds.add(refs_mode)
        if parent.ghost:
            kinds.add("ghost-parent")
    else:
        body = f"{_wrap(node.own_text)}" + (f"\n{signature}" if signature else "")
    charset = "utf-8" if client.shape == "html" else client.charset
    try:
        body.encode(charset)
    except UnicodeEncodeError:  # a quote in a script this charset cannot write: the client falls back
        charset = "utf-8"
    kinds.add(charset)
    node.plain = body
    # -- headers
    when = node.date
    received = (f"Received: from mx{rng.randint(1, 9)}.{node.author.address.split('@')[1]} "
                f"(mx.{node.author.address.split('@')[1]} [192.0.2.{rng.randint(1, 254)}])\n"
                f"\tby mail.{DOMAINS[company]} with ESMTPS id {rng.getrandbits(40):010x};\n"
                f"\t{format_datetime(when + timedelta(seconds=rng.randint(1, 90)))}\n")
    headers = [f"Return-Path: <{node.author.address}>\n", received]
    roll = rng.random()
    if roll < BAD_DATE_SHARE / 2:
        headers.append("Date: someday next week\n")
        kinds.add("bad-date")
    elif roll < BAD_DATE_SHARE:
        kinds.add("no-date")
    else:
        headers.append(f"Date: {format_datetime(when.astimezone(_zone(rng)))}\n")
    headers.append(f"From: {_address(node.author)}\n")
    to = parent.author if parent is not None else None
    headers.append(f"To: {_address(to) if to else ''}{', ' if to else ''}team@{DOMAINS[company]}\n")
    if rng.random() < 0.2:
        cc = gen.people[company][rng.randrange(len(gen.people[company]))]
        headers.append(f"Cc: {_address(cc)}\n")
    if rng.random() < RAW_8BIT_SUBJECT_SHARE:
        headers.append(f"Subject: {subject} Bestätigung\n")  # 8-bit latin-1, as old clients send it
        kinds.add("raw-8bit-subject")
    else:
        encoded = _encode_header(subject)
        if encoded != subject:
            kinds.add("rfc2047-subject")
        headers.append(f"Subject: {encoded}\n")
    if not node.no_id:
        headers.append(f"Message-ID: <{node.message_id}>\n")
    else:
        kinds.add("no-message-id")
    if node.in_reply_to:
        headers.append(f"In-Reply-To: <{node.in_reply_to}>\n")
    if node.references:
        headers.append(f"References: {_fold_ids(node.references)}\n")
    headers.append(f"{client.agent}\nMIME-Version: 1.0\n")
    if rng.random() < BROKEN_HEADER_SHARE:
        tail = b"X-Broken-Header this line has no colon\n"
        kinds.add("broken-header")
    else:
        tail = b""
    # -- body
    transfer = client.transfer
    shape = client.shape
    kinds.add(shape)
    boundary = f"----=_Part_{rng.getrandbits(64):016x}"
    if shape == "plain":
        entity = _text_part("plain", body, charset, transfer, kinds)
    elif shape == "html":
        entity = _text_part("html", _html(body), "utf-8", transfer, kinds)
    else:
        entity = _multipart("alternative", [_text_part("plain", body, charset, transfer, kinds),
                                            _text_part("html", _html(body), "utf-8", "quoted-printable", kinds)],
                            boundary)
    if rng.random() < ATTACHMENT_SHARE:
        items = [gen.vocab[i] for i in gen.topics[info.topic].words[:20]]
        attachments = [_attachment(rng, kinds, items) for _ in range(rng.choice((1, 1, 1, 2)))]
        entity = _multipart("mixed", [entity, *attachments], boundary + "_mixed")
        kinds.add("attachment")
    elif rng.random() < SIGNED_SHARE:
        entity = _multipart("signed", [entity, _signature_part(rng)], boundary + "_signed",
                            '; micalg=pgp-sha256; protocol="application/pgp-signature"')
        kinds.add("signed")
    entity_head, entity_body = entity.split(b"\n\n", 1)
    node.raw = "".join(headers).encode("latin-1", "replace") + entity_head + b"\n" + tail + b"\n" + entity_body


_ZONES = tuple(timezone(timedelta(hours=h)) for h in (0, 0, 1, 2, -5, -8, 9, 5.5, -3))


def _zone(rng: random.Random) -> timezone:
    return rng.choice(_ZONES)


def build_mailcorpus(n_messages: int, seed: int) -> MailCorpus:
    """Threads until ``n_messages`` distinct messages are delivered (ghosts are generated and
    quoted but never delivered; duplicate and crosspost deliveries come on top), in delivery order.
    See the module docstring for the model."""
    if n_messages < 1:
        raise ValueError("n_messages must be at least 1")
    started = time.perf_counter()
    gen = _Generator(seed)
    rng = gen.rng
    long_sizes = long_thread_sizes(n_messages, gen.np_rng)
    zeta = ZetaSizes(gen.np_rng)
    deliveries: list[tuple[float, int, Mail]] = []
    infos: list[ThreadInfo] = []
    delivered = 0
    while delivered < n_messages:
        number = len(infos)
        if number < len(long_sizes):
            size = min(long_sizes[number], n_messages - delivered)
            company = "B" if number % 3 == 2 else "A"
        else:
            size = zeta.next(n_messages - delivered)
            company = "B" if rng.random() < COMPANY_SHARE_B else "A"
        info, nodes = gen.thread(number, company, size)
        gen.edge_cases(nodes)
        words = gen.thread_words(info.topic)
        for node in nodes:
            _render(gen, info, words, nodes, node, company)
        sent = [n for n in nodes if not n.ghost]
        delivered += len(sent)
        crosspost = company == "A" and len(sent) <= 5 and rng.random() < CROSSPOST_SHARE
        infos.append(ThreadInfo(company, info.topic, info.subject, len(nodes), len(sent)))
        for node in sent:
            deliveries.extend(_deliveries(gen, nodes, node, [company, "B"] if crosspost else [company], crosspost,
                                          len(deliveries)))
    deliveries.sort(key=lambda d: (d[0], d[1]))
    mails = _label_early_replies([m for _, _, m in deliveries])
    return MailCorpus(mails, infos, gen.vocab, gen.topics, gen.popularity, time.perf_counter() - started)


def _deliveries(gen: _Generator, nodes: list[_Node], node: _Node, companies: list[str], crosspost: bool,
                order: int) -> Iterator[tuple[float, int, Mail]]:
    """(delivery time, tie-break, mail) of ``node`` for each company it goes to, and its duplicates."""
    rng = gen.rng
    at = node.date.timestamp() + rng.expovariate(1 / 30)
    kinds = set(node.kinds)
    sent_children = [nodes[c] for c in node.children if not nodes[c].ghost]
    if sent_children and rng.random() < LATE_PARENT_SHARE:  # held up in a queue: a reply overtakes it
        at = sent_children[0].date.timestamp() + rng.uniform(60, 86400)
        kinds.add("late-parent")
    if crosspost:
        kinds.add("crosspost")
    key = f"noid:{node.thread}.{node.index}" if node.no_id else node.message_id
    parent = nodes[node.parent].message_id if node.parent is not None else None
    for company in companies:
        mail = Mail(company, node.raw, None if node.no_id else node.message_id, node.thread, node.in_reply_to,
                    node.references, node.own_text, frozenset(kinds), key, parent)
        yield at, order, mail
        order += 1
        if rng.random() < DUPLICATE_SHARE:
            again = at + rng.uniform(60, 30 * 86400)
            if node.no_id or rng.random() < 0.5:  # a retry: the same bytes
                copy = replace(mail, kinds=mail.kinds | {"duplicate"})
            else:  # the copy another folder got: one more Received line on top
                hop = (f"Received: from lists.{DOMAINS[company]} by imap.{DOMAINS[company]};\n"
                       f"\t{format_datetime(datetime.fromtimestamp(again, UTC))}\n").encode("ascii")
                copy = replace(mail, raw=hop + node.raw, kinds=mail.kinds | {"duplicate-copy"})
            yield again, order, copy
            order += 1


def _label_early_replies(mails: list[Mail]) -> list[Mail]:
    """Mark the replies delivered before their parent's first delivery (same company)."""
    first: dict[tuple[str, str], int] = {}
    for i, mail in enumerate(mails):
        first.setdefault((mail.company, mail.key), i)
    out = []
    for i, mail in enumerate(mails):
        at = first.get((mail.company, mail.parent or ""))
        if mail.parent is not None and at is not None and at > i:
            mail = replace(mail, kinds=mail.kinds | {"early-reply"})
        out.append(mail)
    return out


def make_mail_queries(corpus: MailCorpus, company: str, n: int, seed: int) -> list[str]:
    """``n`` distinct 2-4-word queries of ``company``'s popular topics (as bench.corpus.make_queries)."""
    np_rng = np.random.default_rng(seed)
    found: dict[str, None] = {}
    while len(found) < n:
        topic = corpus.topics[int(np_rng.choice(len(corpus.topics), p=corpus.popularity[company]))]
        words = np_rng.choice(topic.words, size=int(np_rng.integers(2, 5)), replace=False, p=topic.weights)
        found[" ".join(corpus.vocabulary[i] for i in words)] = None
    return list(found)


# --- mailboxes on disk --------------------------------------------------------------------------


def mbox_entry(mail: Mail, at: datetime) -> bytes:
    """One mboxrd entry: the ``From `` line, the message with body lines matching ``>*From ``
    escaped by one more ``>``, a blank line."""
    lines = mail.raw.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    escaped = [b">" + line if line.lstrip(b">").startswith(b"From ") else line for line in lines]
    return f"From MAILER-DAEMON {at:%a %b %d %H:%M:%S %Y}\n".encode("ascii") + b"\n".join(escaped) + b"\n\n"


def write_mbox(path: Path, mails: Iterable[Mail]) -> int:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    n = 0
    with path.open("wb") as out:
        for n, mail in enumerate(mails, start=1):
            out.write(mbox_entry(mail, at + timedelta(minutes=n)))
    return n


def write_maildir(root: Path, mails: Iterable[Mail]) -> int:
    """A Maildir: read mail in ``cur/`` (``…:2,S``), unread in ``new/``, ``tmp/`` empty."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    n = 0
    for n, mail in enumerate(mails, start=1):
        name = f"{1354585346 + n}.{n:06d}.bench"
        if n % 10 == 0:
            (root / "new" / name).write_bytes(mail.raw)
        else:
            (root / "cur" / f"{name}:2,S").write_bytes(mail.raw)
    return n


def write_eml(root: Path, mails: Iterable[Mail]) -> int:
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, mail in enumerate(mails, start=1):
        (root / f"{n:06d}.eml").write_bytes(mail.raw)
    return n


WRITERS = {"mbox": write_mbox, "maildir": write_maildir, "eml": write_eml}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mailcorpus", description=__doc__.splitlines()[0],
                                epilog="example: python -m bench.mailcorpus --messages 2000 --format mbox list.mbox")
    p.add_argument("output", type=Path, help="the mbox file, or the directory of the Maildir / .eml files")
    p.add_argument("--messages", type=int, default=2000, help="distinct messages (default 2000)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--company", choices=COMPANIES, default="A", help="whose mail to write (default A)")
    p.add_argument("--format", choices=tuple(WRITERS), default="mbox")
    a = p.parse_args(argv)
    if a.messages < 1:
        p.error("--messages must be positive")
    corpus = build_mailcorpus(a.messages, a.seed)
    n = WRITERS[a.format](a.output, corpus.of(a.company))
    threads = len(corpus.expected_threads(a.company))
    print(f"wrote {n} messages ({threads} threads) of company {a.company} to {a.output} in {corpus.seconds:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
