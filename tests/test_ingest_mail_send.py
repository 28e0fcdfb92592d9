"""Sending mail (``opsctl.mailsend.send_mail``) as logic: outcomes counted by the API's answers, refusals by
file and message, at most ``parallel`` requests at once, memory bounded on a 50 MB mbox, Ctrl-C (a real
SIGINT) stopping with every begun request answered and counted, a refused key stopping the run. The API here
is a stand-in function at the HTTP boundary; tests/test_mail_cli.py runs the same against the real API."""

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
from opsctl.loader import BatchRefused
from opsctl.mailreaders import MailFile
from opsctl.mailsend import MailSent, send_mail
from opsctl.readers import Refusal
from tests.test_ingest_mail_readers import FROM, big_mbox, eml, write


class StandIn:
    """Answers as POST /v1/emails does: a Message-ID seen before is a duplicate; ``refuse`` ids get a 422."""

    def __init__(self, refuse: tuple[str, ...] = (), stored: set[str] | None = None) -> None:
        self.stored = set() if stored is None else stored
        self.refuse = refuse
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, _client: Any, raw: bytes) -> dict[str, Any]:
        match = re.search(rb"Message-ID: <([^>]+)>", raw)
        message_id = match[1].decode() if match else f"sha:{len(raw)}"
        with self.lock:
            self.calls.append(message_id)
            if message_id in self.refuse:
                raise BatchRefused("422 validation_error: refused by the stand-in")
            duplicate = message_id in self.stored
            self.stored.add(message_id)
            job = len(self.calls)
        return {"accepted": 0 if duplicate else 1, "job_ids": [job], "message_id": message_id, "duplicate": duplicate}


def mbox_of(*ids: str) -> bytes:
    return b"".join(FROM + eml(i) + b"\n" for i in ids)


def send(files: list[MailFile], post: Any, parallel: int = 4, **kwargs: Any) -> tuple[MailSent, list[Refusal]]:
    seen: list[Refusal] = []
    sent = send_mail(None, files, parallel, post=post, on_refused=seen.append, **kwargs)  # type: ignore[arg-type]
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


def test_at_most_parallel_requests_are_in_flight(tmp_path: Path) -> None:
    write(tmp_path, {"a.mbox": mbox_of(*(f"m{i}@x" for i in range(40)))})
    api = StandIn()
    together = threading.Barrier(3, timeout=60)  # three requests at once, or the test fails
    active = most = begun = 0
    lock = threading.Lock()

    def post(client: Any, raw: bytes) -> dict[str, Any]:
        nonlocal active, most, begun
        with lock:
            active, begun = active + 1, begun + 1
            most, first = max(most, active), begun <= 3
        try:
            if first:
                together.wait()
            return api(client, raw)
        finally:
            with lock:
                active -= 1

    sent, _ = send([MailFile.of(tmp_path / "a.mbox", "mbox")], post, parallel=3)
    assert sent.accepted == 40 and most == 3


def test_a_50_mb_mbox_is_sent_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    count = big_mbox(path)

    def post(_client: Any, raw: bytes) -> dict[str, Any]:
        return {"accepted": 1, "job_ids": [1], "duplicate": False}

    tracemalloc.start()
    try:
        sent, _ = send([MailFile.of(path, "mbox")], post)
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

    def post(client: Any, raw: bytes) -> dict[str, Any]:
        answer = api(client, raw)
        if len(api.calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while requests are in flight
        answered.append(answer["message_id"])
        return answer

    sent, _ = send(files, post, parallel=2)
    assert sent.interrupted and 5 <= sent.accepted < len(ids)
    # every request begun was answered and counted; the first messages, in order; none after them
    assert sorted(answered) == sorted(api.calls) and len(api.calls) == sent.accepted
    assert set(api.calls) == set(ids[:sent.accepted])
    # again: what was accepted is a duplicate, the rest is sent
    again, _ = send(files, api, parallel=2)
    assert (again.interrupted, again.duplicate, again.accepted) == (False, sent.accepted, len(ids) - sent.accepted)
    assert api.stored == set(ids)


def test_a_refused_key_stops_the_run_saying_what_was_accepted(tmp_path: Path) -> None:
    write(tmp_path, {"a.mbox": mbox_of(*(f"m{i}@x" for i in range(50)))})
    api = StandIn()

    def post(client: Any, raw: bytes) -> dict[str, Any]:
        if len(api.calls) >= 3:
            raise ConfigError("the API refused the key: 401 unauthorized: unknown or revoked API key")
        return api(client, raw)

    with pytest.raises(ConfigError) as caught:
        send([MailFile.of(tmp_path / "a.mbox", "mbox")], post, parallel=1)
    assert caught.value.message == ("the API refused the key: 401 unauthorized: unknown or revoked API key "
                                    "(3 messages accepted before; running the command again sends the rest)")
