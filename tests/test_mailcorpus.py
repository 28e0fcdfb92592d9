"""The synthetic mailing list of the mail benchmark (bench/mailcorpus.py): deterministic, shaped
like real mail (thread sizes, reply structure, edge cases, MIME shapes), and every message is mail
the standard library reads."""

from __future__ import annotations

import email
import html
import mailbox
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest

from bench.mail_bench import (
    delivery_batches,
    documents_corpus,
    expected_threads,
    read_deliveries,
    server_ids,
    write_deliveries,
)
from bench.mailcorpus import (
    KINDS,
    LONG_THREAD_SIZES,
    Mail,
    MailCorpus,
    build_mailcorpus,
    connected_threads,
    long_thread_sizes,
    main,
    mbox_entry,
    write_eml,
    write_maildir,
    write_mbox,
)
from core.chunking import chunk_text

N = 8000
SEED = 11
BROKEN = {"broken-header"}  # the header block ends early: what follows is body (a defect by design)
_IDS = re.compile(r"<([^<>]+)>")
_TAG = re.compile(r"<[^>]+>")


@pytest.fixture(scope="module")
def corpus() -> MailCorpus:
    return build_mailcorpus(N, SEED)


@pytest.fixture(scope="module")
def parsed(corpus: MailCorpus) -> list[EmailMessage]:
    """Every delivery as the standard library reads it (modern policy), in corpus order."""
    out = []
    for mail in corpus.mails:
        msg = email.message_from_bytes(mail.raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes() -> None:
    a, b, c = build_mailcorpus(400, 3), build_mailcorpus(400, 3), build_mailcorpus(400, 4)
    assert [(m.company, m.key, m.raw) for m in a.mails] == [(m.company, m.key, m.raw) for m in b.mails]
    assert [m.raw for m in a.mails] != [m.raw for m in c.mails]


def test_distinct_messages_are_the_number_asked_for(corpus: MailCorpus) -> None:
    generated = {(m.company, m.key) for m in corpus.mails if "crosspost" not in m.kinds or m.company == "A"}
    assert len(generated) == N
    assert sum(t.delivered for t in corpus.threads) == N
    assert len(corpus.distinct()) == len({(m.company, m.key) for m in corpus.mails}) > N  # + crossposts


def test_thread_sizes_are_mostly_small_with_a_heavy_tail_and_a_few_very_long_threads(corpus: MailCorpus) -> None:
    sizes = [t.size for t in corpus.threads]
    small = sum(1 for s in sizes if s <= 3) / len(sizes)
    assert 0.75 <= small <= 0.95
    assert sum(1 for s in sizes if s == 1) / len(sizes) >= 0.5
    assert any(20 <= s <= 300 for s in sizes)  # the tail
    long = [s for s in sizes if s >= LONG_THREAD_SIZES[0]]
    assert len(long) == 1 and long[0] <= LONG_THREAD_SIZES[1]
    assert {t.company for t in corpus.threads} == {"A", "B"}


def test_long_threads_scale_with_the_corpus() -> None:
    rng = np.random.default_rng(1)
    assert long_thread_sizes(4999, rng) == []
    sizes = long_thread_sizes(100_000, rng)
    assert len(sizes) == 3 and all(LONG_THREAD_SIZES[0] <= s <= LONG_THREAD_SIZES[1] for s in sizes)


def test_replies_answer_the_newest_message_or_earlier_ones(corpus: MailCorpus) -> None:
    longest = max(range(len(corpus.threads)), key=lambda i: corpus.threads[i].size)
    mails = [m for m in corpus.mails if m.thread == longest]
    answered = Counter(m.parent for m in mails if m.parent)
    root = next(m.key for m in mails if m.parent is None)
    assert answered[root] >= 20  # replies to the root ...
    assert len(answered) >= len(mails) // 3  # ... and to many different replies (a tree, not a chain)


def test_every_edge_case_and_mime_shape_is_present(corpus: MailCorpus) -> None:
    seen = Counter(k for m in corpus.mails for k in m.kinds)
    assert [k for k in KINDS if not seen[k]] == []
    assert seen["reply"] > seen["root"]


def _body_text(msg: EmailMessage) -> str:
    for part in msg.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.is_attachment():
            text = part.get_content()
            return html.unescape(_TAG.sub(" ", text)) if part.get_content_type() == "text/html" else text
    raise AssertionError("no text part")


def test_every_message_parses_with_the_standard_library(corpus: MailCorpus, parsed: list[EmailMessage]) -> None:
    for mail, msg in zip(corpus.mails, parsed, strict=True):
        ids = _IDS.findall(str(msg.get("Message-ID", "")))
        assert ids == ([mail.message_id] if mail.message_id else []), mail.key
        assert _IDS.findall(str(msg.get("In-Reply-To", ""))) == ([mail.in_reply_to] if mail.in_reply_to else [])
        assert tuple(_IDS.findall(str(msg.get("References", "")))) == mail.references
        assert str(msg["subject"])
        if mail.kinds & BROKEN:
            continue
        defects = [d for part in msg.walk() for d in part.defects]
        if "raw-8bit-subject" not in mail.kinds:
            assert defects == [], (mail.key, defects)
        body = _words(_body_text(msg))
        for paragraph in mail.own_text.split("\n\n"):  # interleaved replies answer paragraph by paragraph
            assert _words(paragraph)[:200] in body, mail.key


def test_charsets_and_encoded_subjects_decode_to_their_text(corpus: MailCorpus,
                                                            parsed: list[EmailMessage]) -> None:
    by_mail = dict(zip((id(m) for m in corpus.mails), parsed, strict=True))
    greetings = {"koi8-r": "Добрый день", "iso-2022-jp": "お世話になっております", "iso-8859-1": "Grüße",
                 "windows-1252": "\u201cquick\u201d"}
    for charset, greeting in greetings.items():
        mails = [m for m in corpus.mails if charset in m.kinds and not m.kinds & BROKEN]
        assert mails, charset
        for mail in mails:
            assert greeting in _body_text(by_mail[id(mail)]), (charset, mail.key)
    for mail in (m for m in corpus.mails if "rfc2047-subject" in m.kinds):
        subject = str(by_mail[id(mail)]["subject"])
        assert "=?" not in subject and not subject.isascii(), subject


def test_attachments_quotes_and_signatures_are_where_clients_put_them(corpus: MailCorpus,
                                                                      parsed: list[EmailMessage]) -> None:
    by_key = {(m.company, m.key): (m, msg) for m, msg in zip(corpus.mails, parsed, strict=True)}
    checked = Counter[str]()
    for mail, msg in zip(corpus.mails, parsed, strict=True):
        if mail.kinds & BROKEN:
            continue
        if "attachment" in mail.kinds:
            names = [p.get_filename() for p in msg.iter_attachments()]
            assert names and all(names), mail.key
            checked["attachment"] += 1
        if "signed" in mail.kinds:
            assert msg.get_content_type() == "multipart/signed"
            assert [p.get_content_type() for p in msg.iter_parts()][-1] == "application/pgp-signature"
            checked["signed"] += 1
        parent, parent_msg = by_key.get((mail.company, mail.parent or ""), (None, None))
        if parent is None or parent_msg is None or "html" in mail.kinds | parent.kinds or parent.kinds & BROKEN:
            continue
        body = _body_text(msg)
        if "outlook-quote" in mail.kinds:  # the parent's whole text, unprefixed, under the block
            original = body.split("-----Original Message-----\n", 1)
            assert len(original) == 2 and _words(_body_text(parent_msg))[:100] in _words(original[1]), mail.key
            assert _words(mail.own_text)[:100] in _words(original[0])
            checked["outlook"] += 1
        elif "quoted" in mail.kinds:
            quoted = [line for line in body.split("\n") if line.startswith(">")]
            assert quoted and (" wrote:" in body or "schrieb" in body), mail.key
            checked["quoted"] += 1
        if "signature" in mail.kinds:
            assert "\n-- \n" in body
    assert min(checked.values()) >= 10 and len(checked) == 4


def test_duplicates_carry_the_same_id_and_early_replies_come_before_their_parent(corpus: MailCorpus) -> None:
    first: dict[tuple[str, str], tuple[int, Mail]] = {}
    for i, mail in enumerate(corpus.mails):
        key = (mail.company, mail.key)
        if "duplicate" in mail.kinds or "duplicate-copy" in mail.kinds:
            at, original = first[key]
            assert at < i
            if "duplicate" in mail.kinds:
                assert mail.raw == original.raw
            else:
                hop, rest = mail.raw.split(b"\n\t", 1)[0], mail.raw.split(b"\n", 2)[2]
                assert hop.startswith(b"Received: ") and rest == original.raw
        else:
            assert key not in first, key
            first[key] = (i, mail)
    early = [m for m in corpus.mails if "early-reply" in m.kinds]
    assert early
    for mail in early:
        assert first[(mail.company, mail.parent or "")][0] > first[(mail.company, mail.key)][0]
    no_id = [m for m in corpus.mails if m.message_id is None]
    assert no_id and all(m.key.startswith("noid:") and b"\nMessage-ID:" not in m.raw for m in no_id)


def test_crossposted_threads_reach_both_companies(corpus: MailCorpus) -> None:
    crossposted = [m for m in corpus.mails if "crosspost" in m.kinds]
    companies = defaultdict(set)
    for mail in crossposted:
        companies[mail.key].add(mail.company)
    assert companies and all(c == {"A", "B"} for c in companies.values())


def _mail(key: str, refs: tuple[str, ...] = (), irt: str | None = None) -> Mail:
    return Mail("A", b"", key, 0, irt, refs, "", frozenset(), key)


@pytest.mark.parametrize(("mails", "expected"), [
    ([_mail("a"), _mail("b", ("a",), "a"), _mail("c")], [{"a", "b"}, {"c"}]),
    # a reply before its parent, and the parent linking it to the root later: one thread
    ([_mail("c", (), "b"), _mail("a"), _mail("b", ("a",))], [{"a", "b", "c"}]),
    # a ghost parent (never delivered) joins its two replies
    ([_mail("b", (), "ghost"), _mail("c", ("ghost",))], [{"b", "c"}]),
    # loops and self-references terminate and do not merge anything else
    ([_mail("a", ("b", "a")), _mail("b", ("a",), "a"), _mail("x", ("x",))], [{"a", "b"}, {"x"}]),
    # a message naming two threads merges them
    ([_mail("a"), _mail("b"), _mail("c", ("a", "b"))], [{"a", "b", "c"}]),
])
def test_connected_threads_follow_every_link(mails: list[Mail], expected: list[set[str]]) -> None:
    assert [set(t) for t in connected_threads(mails)] == expected


def test_expected_threads_are_the_generated_threads(corpus: MailCorpus) -> None:
    for company in ("A", "B"):
        found = corpus.expected_threads(company)
        generated: dict[int, set[str]] = defaultdict(set)
        thread_of = {}
        for mail in corpus.of(company):
            generated[mail.thread].add(mail.key)
            thread_of[mail.key] = mail.thread
        for group in found:  # no link crosses two generated threads
            assert len({thread_of[k] for k in group}) == 1
        assert sum(len(g) for g in found) == len(thread_of)
        ghosted = {m.thread for m in corpus.of(company) if "ghost-parent" in m.kinds}
        whole = {frozenset(g) for t, g in generated.items() if t not in ghosted}
        assert whole <= set(found)


def test_mailboxes_on_disk_read_back_with_the_standard_library(corpus: MailCorpus, tmp_path: Path) -> None:
    mails = corpus.of("B")[:300]
    assert write_mbox(tmp_path / "list.mbox", mails) == 300
    box = mailbox.mbox(tmp_path / "list.mbox")
    assert [box.get_bytes(k) for k in box.iterkeys()] == [m.raw for m in mails]
    assert write_maildir(tmp_path / "Maildir", mails) == 300
    maildir = mailbox.Maildir(tmp_path / "Maildir", factory=None, create=False)
    assert sorted(maildir.get_bytes(k) for k in maildir.iterkeys()) == sorted(m.raw for m in mails)
    assert any(p.name.endswith(":2,S") for p in (tmp_path / "Maildir" / "cur").iterdir())
    assert any((tmp_path / "Maildir" / "new").iterdir())
    assert write_eml(tmp_path / "eml", mails) == 300
    assert sorted(p.read_bytes() for p in (tmp_path / "eml").glob("*.eml")) == sorted(m.raw for m in mails)


def test_mbox_escapes_from_lines_in_bodies() -> None:
    mail = Mail("A", b"Subject: x\n\nFrom here on\n>From there\nok\n", "x@y", 0, None, (), "", frozenset(), "x@y")
    entry = mbox_entry(mail, datetime(2024, 1, 1, tzinfo=UTC))
    assert entry.split(b"\n")[1:] == [b"Subject: x", b"", b">From here on", b">>From there", b"ok", b"", b""]


def test_the_command_writes_a_maildir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "md"), "--messages", "200", "--format", "maildir", "--company", "A"]) == 0
    files = [p for sub in ("cur", "new") for p in (tmp_path / "md" / sub).iterdir()]
    assert len(files) >= 150
    assert "messages" in capsys.readouterr().err


# --- the mail suite's own pieces (bench/mail_bench.py) ----------------------------------------------


def test_deliveries_reach_the_load_process_byte_for_byte(tmp_path: Path) -> None:
    small = build_mailcorpus(300, 5)
    write_deliveries(tmp_path / "d.bin", small)
    assert read_deliveries(tmp_path / "d.bin") == [(m.company, m.raw) for m in small.mails]


@pytest.mark.parametrize(("per_post", "max_bytes"), [(1, 1 << 20), (3, 1 << 20), (200, 1 << 20), (200, 25)])
def test_mbox_requests_hold_one_companys_deliveries_in_order_within_both_limits(per_post: int,
                                                                              max_bytes: int) -> None:
    deliveries = [(c, b"x" * size) for c, size in
                  [("A", 10), ("B", 10), ("A", 10), ("A", 10), ("B", 30), ("A", 10), ("C", 5), ("A", 10), ("B", 1)]]
    batches = delivery_batches(deliveries, per_post, max_bytes)
    assert sorted(i for _, members in batches for i in members) == list(range(len(deliveries)))
    for company, members in batches:
        assert all(deliveries[i][0] == company for i in members) and members == sorted(members)
        assert len(members) <= per_post
        assert len(members) == 1 or sum(len(deliveries[i][1]) for i in members) <= max_bytes
    per_company = {c: [i for _, ms in batches if _ == c for i in ms] for c in "ABC"}
    assert per_company == {c: [i for i, d in enumerate(deliveries) if d[0] == c] for c in "ABC"}
    if per_post == 1:
        assert [members for _, members in batches] == [[i] for i in range(len(deliveries))]
    if (per_post, max_bytes) == (3, 1 << 20):
        assert batches[0] == ("A", [0, 2, 3])  # sent once full, before the others' open bodies


def test_messages_without_an_id_are_expected_under_the_parsers_content_id(corpus: MailCorpus) -> None:
    from core.mail.message import message_id_of

    ids = server_ids(corpus)
    no_id = [m for m in corpus.distinct() if m.message_id is None]
    assert no_id
    for mail in no_id:
        assert ids[(mail.company, mail.key)] == message_id_of(mail.raw)[0]
    assert len(set(ids.values())) >= len(ids) - sum(1 for m in corpus.distinct() if "crosspost" in m.kinds)
    expected = expected_threads(corpus, ids)
    assert sum(len(g) for g in expected["A"]) == sum(1 for m in corpus.distinct() if m.company == "A")


def test_documents_of_the_same_text_leave_out_blank_ones_and_chunk_like_the_service() -> None:
    docs = documents_corpus([("A", "s", "One. " * 400), ("B", "", "  \n"), ("B", "t", "short")], 800, 100)
    assert [(d.company, d.text[:5]) for d in docs.docs] == [("A", "One. "), ("B", "short")]
    assert docs.n_chunks == len(chunk_text("One. " * 400, 800, 100)) + 1


def test_the_stripping_figure_reads_every_mailbox_shape(corpus: MailCorpus, tmp_path: Path) -> None:
    from bench.mail_strip import deliveries, measure

    mails = corpus.of("B")[:120]
    write_mbox(tmp_path / "list.mbox", mails[:40])
    write_maildir(tmp_path / "Maildir", mails[40:80])
    write_eml(tmp_path / "eml", mails[80:])
    assert sorted(r for p in ("list.mbox", "Maildir", "eml") for r in deliveries(tmp_path / p)) == \
        sorted(m.raw for m in mails)
    sizes = measure([tmp_path / "list.mbox", tmp_path / "Maildir", tmp_path / "eml"], 800, 100)
    assert sizes.messages == 120 and sizes.replies == sum(1 for m in mails if m.references or m.in_reply_to)
    assert 0 < sizes.index_bytes < sizes.body_bytes and 0 < sizes.index_chunks < sizes.body_chunks
