"""Sending mail (``opsctl.mailsend.send_mail``) as logic: outcomes counted by the API's answers, refusals by
file and message, batches within their count and bytes (a message no mbox carries goes alone, a refused
batch again message by message), at most ``parallel`` requests at once, memory bounded on a 50 MB mbox,
Ctrl-C (a real SIGINT) stopping with every begun request answered and counted, a refused key stopping the
run. The API here is a stand-in function at the HTTP boundary; tests/test_mail_cli.py runs the same against
the real API."""

from __future__ import annotations

import os
import re
import signal
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError
from core.mail.mbox import lines_of, mbox_entry, split_mbox
from opsctl.loader import BatchRefused
from opsctl.mailreaders import MailFile
from opsctl.mailsend import MailSent, send_mail
from opsctl.readers import Refusal
from tests.test_ingest_mail_readers import FROM, big_mbox, eml, write


def id_of(raw: bytes) -> str:
    match = re.search(rb"Message-ID: <([^>]+)>", raw)
    return match[1].decode() if match else f"sha:{len(raw)}"


class StandIn:
    """Answers as POST /v1/emails does: a Message-ID seen before is a duplicate; ``refuse`` ids get a 422
    (an mbox holding one: the whole body, nothing written). ``calls``: the messages answered or refused
    alone, and those of the mboxes taken; ``bodies``: every mbox body sent."""

    def __init__(self, refuse: tuple[str, ...] = (), stored: set[str] | None = None) -> None:
        self.stored = set() if stored is None else stored
        self.refuse = refuse
        self.calls: list[str] = []
        self.bodies: list[bytes] = []
        self.alone: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, _client: Any, raw: bytes) -> dict[str, Any]:
        message_id = id_of(raw)
        with self.lock:
            self.alone.append(raw)
            self.calls.append(message_id)
            if message_id in self.refuse:
                raise BatchRefused("422 validation_error: refused by the stand-in")
            return self._answer(message_id)

    def _answer(self, message_id: str) -> dict[str, Any]:
        duplicate = message_id in self.stored
        self.stored.add(message_id)
        job = len(self.calls)
        return {"accepted": 0 if duplicate else 1, "job_ids": [job], "message_id": message_id, "duplicate": duplicate}

    def mbox(self, _client: Any, body: bytes) -> list[dict[str, Any]]:
        raws = [part.raw or b"" for part in split_mbox(lines_of(body))]
        with self.lock:
            self.bodies.append(body)
            if any(id_of(raw) in self.refuse for raw in raws):
                raise BatchRefused("422 validation_error: refused by the stand-in")
            answers = []
            for raw in raws:
                self.calls.append(id_of(raw))
                answer = self._answer(id_of(raw))
                answers.append({"message_id": answer["message_id"], "job_id": answer["job_ids"][0],
                                "duplicate": answer["duplicate"]})
            return answers


def mbox_of(*ids: str) -> bytes:
    return b"".join(FROM + eml(i) + b"\n" for i in ids)


def send(files: list[MailFile], api: StandIn, parallel: int = 4, **kwargs: Any) -> tuple[MailSent, list[Refusal]]:
    seen: list[Refusal] = []
    kwargs = {"post": api, "post_batch": api.mbox, **kwargs}
    sent = send_mail(None, files, parallel, on_refused=seen.append, **kwargs)  # type: ignore[arg-type]
    assert seen == sent.refused
    return sent, seen


def test_outcomes_are_counted_by_the_apis_answers(tmp_path: Path) -> None:
    write(tmp_path, {"a.mbox": mbox_of("a1@x", "a2@x", "dup@x", "bad@x") + FROM + b"\n" + FROM + eml("a5@x"),
                     "b.eml": eml("dup@x"), "c.eml": b"%PDF-1.7\n"})
    os.mkfifo(tmp_path / "d.eml")
    files = [MailFile.of(tmp_path / n, "mbox" if n.endswith("mbox") else "message")
             for n in ("a.mbox", "b.eml", "c.eml", "d.eml")]
    api = StandIn(refuse=("bad@x",), stored={"dup@x"})
    done: list[int] = []
    sent, refused = send(files, api, on_done=done.append)
    assert (sent.accepted, sent.duplicate, sent.refused_messages, sent.files) == (3, 2, 3, 3)
    assert sorted(api.calls) == sorted(["a1@x", "a2@x", "dup@x", "bad@x", "a5@x", "dup@x"])
    assert sorted(map(str, refused)) == sorted([
        f"{tmp_path}/a.mbox: message 4 (line 28): the API refused it: 422 validation_error: refused by the stand-in",
        f"{tmp_path}/a.mbox: message 5 (line 37): an empty message",
        f"{tmp_path}/c.eml: does not look like a mail message (its first line is neither a header field nor a "
        "'From' line); --format email sends it as it is",
        f"{tmp_path}/d.eml: not a regular file"])
    assert sent.counts().refused == 3  # messages; the FIFO is a refused file
    assert sum(done) == sum(f.size for f in files) and len(done) == 9
    assert len(sent.job_ids) == 5  # the accepted and the duplicates


def test_messages_go_in_batches_within_their_count_and_bytes(tmp_path: Path) -> None:
    ids = [f"m{i}@x" for i in range(23)]
    write(tmp_path, {"a.mbox": mbox_of(*ids), "tail.eml": eml("tail@x").rstrip(b"\n"), "b.eml": eml("b@x")})
    files = [MailFile.of(tmp_path / "a.mbox", "mbox"), MailFile.of(tmp_path / "tail.eml", "message"),
             MailFile.of(tmp_path / "b.eml", "message")]
    api = StandIn()
    sent, refused = send(files, api, batch_size=5)
    assert (sent.accepted, sent.duplicate, refused) == (25, 0, [])
    batches = [[id_of(p.raw or b"") for p in split_mbox(lines_of(body))] for body in api.bodies]
    assert sorted(batches) == sorted([ids[0:5], ids[5:10], ids[10:15], ids[15:20], [*ids[20:], "b@x"]])
    assert api.alone == [eml("tail@x").rstrip(b"\n")], "no mbox carries a message without its last newline"
    limit = 3 * len(mbox_entry(eml("m10@x")) or b"")  # the longest of them: three fit, never four
    api = StandIn()
    send(files, api, batch_size=100, batch_bytes=limit)
    assert all(len(body) <= limit for body in api.bodies) and len(api.bodies) == 8, "within the bytes"
    api = StandIn()
    send(files, api, batch_size=100, max_bytes=len(mbox_entry(eml("b@x")) or b"") - 1)
    assert api.bodies == [] and len(api.alone) == 25, "too big to share a body: alone, within max_bytes as before"


def test_a_refused_batch_is_sent_again_message_by_message(tmp_path: Path) -> None:
    write(tmp_path, {"a.mbox": mbox_of("a@x", "bad@x", "c@x", "d@x")})
    api = StandIn(refuse=("bad@x",))
    sent, refused = send([MailFile.of(tmp_path / "a.mbox", "mbox")], api, batch_size=2)
    assert (sent.accepted, sent.refused_messages) == (3, 1)
    assert [str(r) for r in refused] == [f"{tmp_path}/a.mbox: message 2 (line 10): the API refused it: 422 "
                                         "validation_error: refused by the stand-in"]
    assert [id_of(raw) for raw in api.alone] == ["a@x", "bad@x"], "only the refused batch went message by message"
    assert len(api.bodies) == 2


def test_at_most_parallel_requests_are_in_flight(tmp_path: Path) -> None:
    write(tmp_path, {"a.mbox": mbox_of(*(f"m{i}@x" for i in range(40)))})
    api = StandIn()
    together = threading.Barrier(3, timeout=60)  # three requests at once, or the test fails
    active = most = begun = 0
    lock = threading.Lock()

    def post_batch(client: Any, body: bytes) -> list[dict[str, Any]]:
        nonlocal active, most, begun
        with lock:
            active, begun = active + 1, begun + 1
            most, first = max(most, active), begun <= 3
        try:
            if first:
                together.wait()
            return api.mbox(client, body)
        finally:
            with lock:
                active -= 1

    sent, _ = send([MailFile.of(tmp_path / "a.mbox", "mbox")], api, parallel=3, post_batch=post_batch, batch_size=4)
    assert sent.accepted == 40 and most == 3


def test_a_50_mb_mbox_is_sent_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    count = big_mbox(path)

    def post_batch(_client: Any, body: bytes) -> list[dict[str, Any]]:
        return [{"job_id": 1, "duplicate": False}] * (b"\n" + body).count(b"\nFrom opsctl ")

    tracemalloc.start()
    try:
        sent, _ = send([MailFile.of(path, "mbox")], StandIn(), post_batch=post_batch, batch_bytes=128 << 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent.accepted == count
    assert peak < 2 << 20, f"peak {peak} bytes to send a {path.stat().st_size}-byte mbox"


def test_ctrl_c_stops_reading_and_counts_every_request_begun(tmp_path: Path) -> None:
    ids = [f"m{i}@x" for i in range(200)]
    write(tmp_path, {"a.mbox": mbox_of(*ids)})
    files = [MailFile.of(tmp_path / "a.mbox", "mbox")]
    api = StandIn()
    answered: list[str] = []

    def post_batch(client: Any, body: bytes) -> list[dict[str, Any]]:
        answers = api.mbox(client, body)
        if len(api.bodies) == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while requests are in flight
        answered.extend(a["message_id"] for a in answers)
        return answers

    sent, _ = send(files, api, parallel=2, post_batch=post_batch, batch_size=3)
    assert sent.interrupted and 15 <= sent.accepted < len(ids)
    # every request begun was answered and counted; the first messages, in order; none after them
    assert sorted(answered) == sorted(api.calls) and len(api.calls) == sent.accepted
    assert set(api.calls) == set(ids[:sent.accepted])
    # again: what was accepted is a duplicate, the rest is sent
    again, _ = send(files, api, parallel=2, batch_size=3)
    assert (again.interrupted, again.duplicate, again.accepted) == (False, sent.accepted, len(ids) - sent.accepted)
    assert api.stored == set(ids)


def test_a_refused_key_stops_the_run_saying_what_was_accepted(tmp_path: Path) -> None:
    write(tmp_path, {"a.mbox": mbox_of(*(f"m{i}@x" for i in range(50)))})
    api = StandIn()

    def post_batch(client: Any, body: bytes) -> list[dict[str, Any]]:
        if len(api.calls) >= 6:
            raise ConfigError("the API refused the key: 401 unauthorized: unknown or revoked API key")
        return api.mbox(client, body)

    with pytest.raises(ConfigError) as caught:
        send([MailFile.of(tmp_path / "a.mbox", "mbox")], api, parallel=1, post_batch=post_batch, batch_size=3)
    assert caught.value.message == ("the API refused the key: 401 unauthorized: unknown or revoked API key "
                                    "(6 messages accepted before; running the command again sends the rest)")
