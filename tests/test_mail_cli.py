"""``opsctl ingest`` of mail, ``opsctl threads show``, ``opsctl emails show`` and ``opsctl search --group-by
thread`` against the real API, database and ingest worker: counts of accepted, duplicate and refused messages
exact, a folder ingested again all duplicates, a Ctrl-C (a real SIGINT) mid-ingest leaving every accepted
message durable and the rest unsent, the README's sample mailbox drawn as a tree."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from core.mail.mbox import mbox_entry
from tests.conftest import RunningApi, client_for, drain, project_root
from tests.test_ingest_cli import lines, table
from tests.test_ingest_mail_readers import FROM, eml, maildir, write

SAMPLE = project_root() / "examples" / "mail"
SAMPLE_IDS = {"refund-1042@customer.example", "support-1@acme.example", "support-2@acme.example",
              "refund-1042-thanks@customer.example", "billing-1@acme.example", "billing-2@acme.example",
              "invoice-march@shop.example", "invoice-march-reply@acme.example"}


def opsctl(capsys: pytest.CaptureFixture[str], api: RunningApi, key: str, *args: str) -> tuple[int, str, str]:
    from opsctl.cli import main

    code = main([*args, "--api-url", api.url, "--api-key", key])
    out = capsys.readouterr()
    return code, out.out, out.err


def email_jobs(conn: psycopg.Connection[Any]) -> list[str]:
    """The message ids queued as e-mail jobs, sorted (one job per message: a duplicate writes none)."""
    rows = conn.execute("SELECT external_id FROM ingest_jobs WHERE external_id LIKE 'email:%'").fetchall()
    return sorted(row[0].removeprefix("email:") for row in rows)


def mbox_of(*ids: str) -> bytes:
    return b"".join(FROM + eml(i, f"about {i}") + b"\n" for i in ids)


def test_a_mixed_directory_counts_every_message_exactly(api: RunningApi, tenant: Any, tmp_path: Path,
                                                         conn: psycopg.Connection[Any],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path / "inbox", {
        "guide.md": "# How we answer refunds", "one.eml": eml("one@x"),
        "latin1.eml": eml("latin1@x", "caf\xe9", "d\xe9j\xe0 vu").decode().encode("latin-1"),  # not UTF-8: fine
        "lists/archive.mbox": mbox_of("l1@x", "l2@x") + FROM + b"\n" + FROM + eml("l3@x", body=">From the list"),
        "photo.jpg": b"\xff\xd8\xff\xe0", "Inbox.msf": "mork",
        **maildir(tmp_path, "mail"),
        "mail/.Sent/cur/1354585800.000265.host:2,S": eml("m1@x"),  # a copy of an INBOX message: a duplicate
        "mail/cur/1354585900.000266.host:2,S": b"%PDF-1.7 not mail\n"})
    code, out, err = opsctl(capsys, api, tenant.api_key, "ingest", str(root), "-o", "json")
    assert code == 1
    assert lines(err) == [
        f"error: {root}/lists/archive.mbox: message 3 (line 19): an empty message",
        f"error: {root}/mail/cur/1354585900.000266.host:2,S: does not look like a mail message (its first line is "
        "neither a header field nor a 'From' line); --format email sends it as it is",
        "error: 11 files ingested, 10 messages accepted, 1 duplicate, 2 refused"]
    report = json.loads(out)
    assert report == {"files": 11, "documents": 1, "messages": {"accepted": 10, "duplicate": 1, "refused": 2},
                      "jobs": 11, "refused": [  # the duplicate answers with m1@x's job
                          {"file": f"{root}/lists/archive.mbox", "message": 3, "line": 19,
                           "error": "an empty message"},
                          {"file": f"{root}/mail/cur/1354585900.000266.host:2,S",
                           "error": "does not look like a mail message (its first line is neither a header field "
                                    "nor a 'From' line); --format email sends it as it is"}]}
    assert email_jobs(conn) == sorted(["one@x", "latin1@x", "l1@x", "l2@x", "l3@x", "m1@x", "m2@x", "sent@x",
                                       "archived@x", "draft@x"])
    assert drain(api.settings, db_url=api.settings.database_url or "") == 11
    with client_for(api, tenant.api_key) as client:
        raw = client.get("/v1/emails/l3@x", params={"raw": 1}).content
        latin1 = client.get("/v1/emails/latin1@x").json()
    assert raw == eml("l3@x", body="From the list")  # mboxrd: one '>' off
    assert latin1["subject"] == "caf\xe9"  # 8-bit bytes sent as they are, read by the core


def test_mail_goes_in_batches_and_every_message_is_stored_byte_exact(
        api: RunningApi, tenant: Any, tmp_path: Path, conn: psycopg.Connection[Any],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from opsctl import mailsend

    quoting = [eml(f"q{i}@x", body=f"From here on\n>From the list\n>>From deeper\nFrom x Mon Jan  5 09:00:00 2026\n{i}")
               for i in range(5)]
    no_id = b"Subject: no id\r\nFrom: ann@x\r\n\r\nno Message-ID, an id from the bytes\r\n"
    files = {"list.mbox": b"".join(mbox_entry(m) or b"" for m in quoting),
             "no-newline.eml": eml("tail@x").rstrip(b"\n"), "no-id.eml": no_id, **maildir(tmp_path, "Maildir")}
    root = write(tmp_path / "box", files)
    sent: list[str] = []
    real = mailsend.post_retrying

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs["headers"]["Content-Type"])
        return real(*args, **kwargs)

    monkeypatch.setattr(mailsend, "post_retrying", counting)
    code, out, err = opsctl(capsys, api, tenant.api_key, "ingest", str(root), "--batch-size", "3", "-o", "json")
    assert code == 0 and lines(err) == [], err
    assert json.loads(out)["messages"] == {"accepted": 12, "duplicate": 0, "refused": 0}
    # 11 messages an mbox carries, 3 per request; the one without a last newline alone, as it is
    assert sorted(sent) == ["application/mbox"] * 4 + ["message/rfc822"]
    drain(api.settings, api.settings.database_url or "")
    with client_for(api, tenant.api_key) as client:
        for i, raw in enumerate(quoting):
            assert client.get(f"/v1/emails/q{i}@x", params={"raw": 1}).content == raw, "mboxrd: one '>' off each"
        assert client.get("/v1/emails/tail@x", params={"raw": 1}).content == eml("tail@x").rstrip(b"\n")
        assert client.get("/v1/emails/m1@x", params={"raw": 1}).content == eml("m1@x")
        alone = client.post("/v1/emails", content=no_id, headers={"Content-Type": "message/rfc822"}).json()
        assert alone["duplicate"] is True, "the same bytes, so the same id derived from them as sent alone"


def test_a_folder_ingested_again_is_all_duplicates(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = opsctl(capsys, api, tenant.api_key, "ingest", str(SAMPLE))
    assert code == 0 and lines(err) == [], err
    assert table(out) == [["FILES", "DOCUMENTS", "MESSAGES", "DUPLICATES", "JOBS", "REFUSED"],
                          ["3", "0", "8", "0", "8", "0"]]
    assert drain(api.settings, api.settings.database_url or "") == 8
    code, out, _ = opsctl(capsys, api, tenant.api_key, "ingest", str(SAMPLE), "--wait", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out) == {
        "files": 3, "documents": 0, "messages": {"accepted": 0, "duplicate": 8, "refused": 0}, "jobs": 8,
        "refused": [], "statuses": {"done": 8}}
    assert email_jobs(conn) == sorted(SAMPLE_IDS)


def test_format_email_sends_every_file_as_one_message(api: RunningApi, tenant: Any, tmp_path: Path,
                                                      conn: psycopg.Connection[Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path / "export", {"0001": eml("a@x"), "0002.txt": eml("b@x"), "notes.md": "no headers at all"})
    code, out, _ = opsctl(capsys, api, tenant.api_key, "ingest", str(root), "--format", "email", "-o", "json")
    assert code == 0 and json.loads(out)["messages"] == {"accepted": 3, "duplicate": 0, "refused": 0}
    ids = email_jobs(conn)
    assert {"a@x", "b@x"} < set(ids) and len(ids) == 3  # the one without a Message-ID: an id from its content
    # without --format email, 0002.txt is a document and 0001 nothing opsctl knows
    code, out, _ = opsctl(capsys, api, tenant.api_key, "ingest", str(root / "0002.txt"), "-o", "json")
    assert code == 0 and json.loads(out)["documents"] == 1 and "messages" not in json.loads(out)


def test_an_mbox_without_messages_is_nothing_to_ingest(api: RunningApi, tenant: Any, tmp_path: Path,
                                                       conn: psycopg.Connection[Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"empty.mbox": b""})
    code, out, err = opsctl(capsys, api, tenant.api_key, "ingest", str(tmp_path / "empty.mbox"))
    assert (code, out) == (2, "")
    assert lines(err) == [f"error: nothing to ingest: {tmp_path}/empty.mbox holds no message"]
    assert email_jobs(conn) == []


def test_ctrl_c_mid_ingest_leaves_every_accepted_message_durable_and_the_rest_unsent(
        api: RunningApi, tenant: Any, tmp_path: Path, db_url: str, conn: psycopg.Connection[Any],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from opsctl import mailsend

    ids = [f"m{i:03}@x" for i in range(60)]
    write(tmp_path, {"big.mbox": mbox_of(*ids)})
    real = mailsend.post_retrying
    answered = 0

    def post_then_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        nonlocal answered
        response = real(*args, **kwargs)
        answered += 1
        if answered == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while requests are in flight
        return response

    monkeypatch.setattr(mailsend, "post_retrying", post_then_ctrl_c)
    code, out, err = opsctl(capsys, api, tenant.api_key, "ingest", str(tmp_path / "big.mbox"), "--batch-size", "4",
                            "-o", "json")
    report = json.loads(out)
    accepted = report["messages"]["accepted"]
    assert code == 130 and 5 * 4 <= accepted == 4 * answered < len(ids), (accepted, answered)  # whole batches
    assert lines(err) == [f"interrupted: 1 file ingested, {accepted} messages accepted, 0 duplicate, 0 refused before "
                          "Ctrl-C; the rest was not sent (running the same command again sends it: what was accepted "
                          "comes back as duplicates)"]
    # every message the API accepted is queued, whole, and becomes a stored message; nothing else was sent
    assert email_jobs(conn) == ids[:accepted] and drain(api.settings, db_url) == accepted
    assert conn.execute("SELECT count(*) FROM mail_messages").fetchone() == (accepted,)
    monkeypatch.setattr(mailsend, "post_retrying", real)
    code, out, _ = opsctl(capsys, api, tenant.api_key, "ingest", str(tmp_path / "big.mbox"), "-o", "json")
    assert code == 0 and json.loads(out)["messages"] == {"accepted": len(ids) - accepted, "duplicate": accepted,
                                                         "refused": 0}
    assert email_jobs(conn) == ids


def row_of(out: str, *cells: str) -> bool:
    """Whether a line of a printed table holds ``cells`` in order, each followed by padding or a border."""
    pattern = r"\s*".join(re.escape(c) + r"\s*(?:│|$)" for c in cells)
    return any(re.match(r"^\s*" + pattern, line) for line in out.splitlines())


def test_the_sample_thread_drawn_read_and_searched(api: RunningApi, tenant: Any, other_tenant: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert opsctl(capsys, api, tenant.api_key, "ingest", str(SAMPLE))[0] == 0
    assert drain(api.settings, api.settings.database_url or "") == 8
    code, out, _ = opsctl(capsys, api, tenant.api_key, "emails", "show", "<billing-1@acme.example>", "-o", "json")
    email = json.loads(out)
    assert code == 0 and email["subject"] == "Re: [escalation] Refund for order 1042"
    thread_id = str(email["thread_id"])

    code, out, err = opsctl(capsys, api, tenant.api_key, "threads", "show", thread_id)
    assert code == 0 and err == "", err
    assert f"thread {thread_id}: Refund for order 1042 — 6 messages from 4 participants, 2026-01-05 08:12:00Z to " \
           "2026-01-06 10:30:00Z" in " ".join(out.split())
    tree = [("Refund for order 1042", "Dana Customer <dana@customer.example>", "2026-01-05 08:12:00Z",
             "refund-1042@customer.example"),
            ("└─ Re: Refund for order 1042", "Sam Support <sam@acme.example>", "2026-01-05 09:03:00Z",
             "support-1@acme.example"),
            ("├─ (missing message escalation-1@acme.example)", "", "", ""),  # two replies to a message not sent
            ("│  ├─ Re: [escalation] Refund for order 1042", "Bea Billing <bea@acme.example>", "2026-01-05 13:20:00Z",
             "billing-1@acme.example"),
            ("│  └─ Re: [escalation] Refund for order 1042", "Lee Lead <lee@acme.example>", "2026-01-05 13:45:00Z",
             "billing-2@acme.example"),
            ("└─ Re: Refund for order 1042", "Sam Support <sam@acme.example>", "2026-01-06 08:00:00Z",
             "support-2@acme.example"),
            # the thank-you comes before its parent in support.mbox: it is drawn under it all the same
            ("└─ Re: Refund for order 1042", "Dana Customer <dana@customer.example>", "2026-01-06 10:30:00Z",
             "refund-1042-thanks@customer.example")]
    body = [line for line in out.splitlines() if "@" in line or "missing" in line]
    assert len(body) == len(tree)
    for line, cells in zip(body, tree, strict=True):
        assert row_of(line, *[c for c in cells if c]), (line, cells)
    assert [len(line) - len(line.lstrip()) for line in body] == [1, 1, 4, 4, 4, 4, 7]  # depth: indentation

    code, out, _ = opsctl(capsys, api, tenant.api_key, "threads", "show", thread_id, "-o", "json")
    with client_for(api, tenant.api_key) as client:
        assert code == 0 and json.loads(out) == client.get(f"/v1/threads/{thread_id}").json()

    # --raw: the original bytes (support.mbox's third message, its '>From ' line unescaped)
    code, out, _ = opsctl(capsys, api, tenant.api_key, "emails", "show", "refund-1042-thanks@customer.example",
                          "--raw")
    mbox = (SAMPLE / "support.mbox").read_text()
    original = mbox.split("From dana@customer.example Tue Jan  6 11:30:00 2026\n")[1].split("\n\nFrom sam@")[0] + "\n"
    assert code == 0 and out == original.replace("\n>From now on", "\nFrom now on")

    code, out, _ = opsctl(capsys, api, tenant.api_key, "emails", "show", "invoice-march@shop.example")
    assert code == 0 and row_of(out, "attachments", "totals.csv (text/csv, 27 B, indexed)")
    assert row_of(out, "from", "Jörg König <joerg@shop.example>") and row_of(out, "references", "")

    code, out, _ = opsctl(capsys, api, tenant.api_key, "search", "refund", "--group-by", "thread")
    title, *rows = table(out)
    assert code == 0 and len(title) == 1 and title[0].startswith("2 results, one per thread (")
    assert rows[0] == ["#", "SCORE", "THREAD", "MATCHED", "DOCUMENT", "TEXT"]
    assert [(r[2], r[3], r[4]) for r in rows[1:]] == [(thread_id, "6", "email:billing-1@acme.example"),
                                                      (rows[2][2], "2", "email:invoice-march@shop.example")]

    # another company's thread and message are not found
    code, out, err = opsctl(capsys, api, other_tenant.api_key, "threads", "show", thread_id)
    assert (code, out) == (1, "") and err == f"error: GET /v1/threads/{thread_id} → 404 not_found: no thread " \
                                             f"{thread_id}\n"
    code, _, err = opsctl(capsys, api, other_tenant.api_key, "emails", "show", "billing-1@acme.example", "--raw")
    assert code == 1 and "404 not_found" in err


def test_a_thread_merged_away_shows_the_one_it_became(api: RunningApi, tenant: Any, tmp_path: Path, db_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"a.eml": eml("a@x", "first"), "b.eml": eml("b@x", "second"),
                     "c.eml": eml("c@x", "Re: both", extra="References: <a@x> <b@x>\n")})
    thread_of = {}
    for name in ("a", "b"):
        assert opsctl(capsys, api, tenant.api_key, "ingest", str(tmp_path / f"{name}.eml"))[0] == 0
        drain(api.settings, db_url)
        code, out, _ = opsctl(capsys, api, tenant.api_key, "emails", "show", f"{name}@x", "-o", "json")
        thread_of[name] = json.loads(out)["thread_id"]
    assert opsctl(capsys, api, tenant.api_key, "ingest", str(tmp_path / "c.eml"))[0] == 0
    drain(api.settings, db_url)
    code, out, err = opsctl(capsys, api, tenant.api_key, "threads", "show", str(thread_of["b"]))
    assert code == 0 and err == f"thread {thread_of['b']} was merged into thread {thread_of['a']}\n"
    assert f"thread {thread_of['a']}: first — 3 messages" in out


def test_the_mail_docs_cite_real_commands_and_the_sample() -> None:
    """docs/mail.md cannot drift from the CLI: every `opsctl …` it cites parses, and the tree it shows is the
    sample's (the test above checks the same rows against the real API)."""
    from tests.cli_citations import citations_in_markdown, problems, root_command

    text = (project_root() / "docs" / "mail.md").read_text(encoding="utf-8")
    cited = citations_in_markdown(text, "docs/mail.md")
    assert {c.argv[0] for c in cited} >= {"ingest", "search", "threads", "emails"}
    assert [p for c in cited for p in problems(c, root_command())] == []
    for subject in ("├─ (missing message escalation-1@acme.example)", "│  ├─ Re: [escalation] Refund for order 1042",
                    "   └─ Re: Refund for order 1042"):
        assert subject in text


def test_a_message_the_api_refuses_is_reported_by_its_place_and_the_others_go(
        db_url: str, redis_url: str, tenant: Any, tmp_path: Path, conn: psycopg.Connection[Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import make_settings

    api = RunningApi(make_settings(database_url=db_url, redis_url=redis_url, max_body_bytes=2048))
    try:
        big = FROM + eml("big@x", body=("x" * 99 + "\n") * 30000) + b"\n"  # 3 MB: refused by Content-Length
        write(tmp_path, {"list.mbox": mbox_of("a@x") + big + mbox_of("c@x")})
        code, out, err = opsctl(capsys, api, tenant.api_key, "ingest", str(tmp_path / "list.mbox"), "-o", "json")
    finally:
        api.close()
    assert code == 1 and json.loads(out)["messages"] == {"accepted": 2, "duplicate": 0, "refused": 1}
    said = lines(err)
    assert said[0].startswith(f"error: {tmp_path}/list.mbox: message 2 (line 10): the API refused it: 413 "
                              "body_too_large: "), said
    assert said[1:] == ["error: 1 file ingested, 2 messages accepted, 0 duplicate, 1 refused"]
    assert email_jobs(conn) == ["a@x", "c@x"]
