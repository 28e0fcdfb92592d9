"""Sending mail to the core: messages in batches, each one ``POST /v1/emails`` of an ``application/mbox``
body, a few requests in flight at once.

The messages come from :mod:`opsctl.mailreaders`, one at a time, and are gathered into batches of at
most ``batch_size`` messages whose mbox body (:func:`core.mail.mbox.mbox_entry`: the module the API
splits it with, so every message is stored byte-exact) stays within ``max_bytes`` and
``BATCH_BYTES``. A message no mbox carries byte-exact (its last line has no newline) or too big to
share a body goes alone as ``message/rfc822``. The batches go to a small thread pool (``parallel``
workers sharing one ``httpx.Client``) with at most ``parallel + 1`` batches read ahead, so memory
holds a few batches whatever the size of the mail. Each request is retried as documents are
(:func:`opsctl.loader.post_retrying`: transport errors, 429 and 5xx, after Retry-After). A batch the
API refuses (a 4xx: the API writes none of it) is sent again message by message, so each message
gets its own answer. Every message ends as one outcome: accepted (a new message, durable once
answered), duplicate (the company already has its Message-ID, or the batch has it earlier: nothing
written) or refused (by the API for what it holds, or before sending: see
:class:`~opsctl.mailreaders.Message`). A file that cannot be read is refused, with the messages it
gave before; the other files go on.

Ctrl-C stops the reading: the messages not yet sent stay unsent (whole: the API writes a request
entirely or not at all), the requests in flight are answered and counted, and
:attr:`MailSent.interrupted` says so. Running the same command again sends the rest; what was
accepted comes back as duplicates. A refused API key or an API that stays down stops everything the
same way and raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.errors import OpsError
from core.humanize import plural
from core.mail.mbox import mbox_entry
from opsctl.files import FileProblem
from opsctl.loader import BatchRefused, MailCounts, post_retrying
from opsctl.mailreaders import MESSAGE_MAX_BYTES, MailFile, Message, messages
from opsctl.readers import Refusal

CONTENT_TYPE = "message/rfc822"
MBOX_TYPE = "application/mbox"
BATCH_SIZE = 200  # messages per request, as documents go
BATCH_BYTES = 4 << 20  # the most one batch's body holds (a larger message goes alone): bounds memory and retries

Answer = dict[str, Any]  # one message's answer: message_id, job_ids or job_id, duplicate


def post_message(client: httpx.Client, raw: bytes) -> Answer:
    """POST one raw message; the API's answer (``accepted``, ``duplicate``, ``job_ids``, ``message_id``)."""
    response = post_retrying(client, "/v1/emails", content=raw, headers={"Content-Type": CONTENT_TYPE})
    return dict(response.json())


def post_mbox(client: httpx.Client, body: bytes) -> list[Answer]:
    """POST an mbox; the API's answer per message, in body order (``message_id``, ``job_id``, ``duplicate``)."""
    response = post_retrying(client, "/v1/emails", content=body, headers={"Content-Type": MBOX_TYPE})
    return list(response.json()["messages"])


@dataclass
class MailSent:
    """What sending the mail came to."""

    files: int = 0  # mail files reached and read to their end (some of their messages may have been refused)
    accepted: int = 0
    duplicate: int = 0
    refused_messages: int = 0
    refused: list[Refusal] = field(default_factory=list)  # the messages and the files not sent, in order
    job_ids: list[int] = field(default_factory=list)  # the jobs of the accepted and duplicate messages
    interrupted: bool = False  # Ctrl-C stopped the reading: the rest was not sent

    def counts(self) -> MailCounts:
        return MailCounts(self.accepted, self.duplicate, self.refused_messages)


@dataclass(frozen=True)
class _Unreadable:
    """A mail file that failed: why, and the bytes of it no message accounted for (for the progress)."""

    refusal: Refusal
    rest: int


@dataclass(frozen=True)
class _Reached:
    """The reading got to a new file."""


@dataclass(frozen=True)
class _Request:
    """Messages to send in one request: an mbox of them, or ``alone`` (one message as ``message/rfc822``)."""

    messages: list[Message]
    alone: bool = False


def _read(files: Iterable[MailFile], max_bytes: int) -> Iterator[Message | _Unreadable | _Reached]:
    for mail in files:
        yield _Reached()
        counted = 0
        try:
            for message in messages(mail, max_bytes):
                counted += message.size
                yield message
        except FileProblem as exc:
            yield _Unreadable(Refusal(mail.path, exc.reason), max(0, mail.size - counted))


def batched(items: Iterable[Message | _Unreadable | _Reached], batch_size: int,
            max_bytes: int) -> Iterator[Message | _Unreadable | _Reached | _Request]:
    """``items`` with the messages to send gathered into requests: batches of at most ``batch_size``
    whose mbox body holds at most ``max_bytes``; a message no mbox carries byte-exact, or too big to
    share a body, alone. Messages with a ``problem`` and the rest pass through."""
    batch: list[Message] = []
    size = 0
    for item in items:
        if not isinstance(item, Message) or item.problem:
            yield item
            continue
        entry = mbox_entry(item.raw)
        if entry is None or len(entry) > max_bytes:
            yield _Request([item], alone=True)
            continue
        if batch and (len(batch) >= batch_size or size + len(entry) > max_bytes):
            yield _Request(batch)
            batch, size = [], 0
        batch.append(item)
        size += len(entry)
    if batch:
        yield _Request(batch)


def _one(client: httpx.Client, raw: bytes, post: Callable[[httpx.Client, bytes], Answer]) -> Answer | BatchRefused:
    try:
        answer = post(client, raw)
    except BatchRefused as exc:
        return exc
    job_ids = answer.get("job_ids") or [None]
    return {"message_id": answer.get("message_id"), "job_id": job_ids[0], "duplicate": bool(answer.get("duplicate"))}


def _send(client: httpx.Client, request: _Request, post: Callable[[httpx.Client, bytes], Answer],
          post_batch: Callable[[httpx.Client, bytes], list[Answer]]) -> list[Answer | BatchRefused]:
    """The answer per message of ``request`` (in its order), or why the API refused it. A refused
    batch is sent again message by message: the API wrote none of it, and each gets its own answer."""
    if not request.alone:
        body = b"".join(e for e in map(mbox_entry, (m.raw for m in request.messages)) if e is not None)
        try:
            return list(post_batch(client, body))
        except BatchRefused:
            pass
    return [_one(client, m.raw, post) for m in request.messages]


def send_mail(client: httpx.Client, files: Iterable[MailFile], parallel: int = 4, *,
              on_done: Callable[[int], None] = lambda _: None,
              on_refused: Callable[[Refusal], None] = lambda _: None,
              post: Callable[[httpx.Client, bytes], Answer] = post_message,
              post_batch: Callable[[httpx.Client, bytes], list[Answer]] = post_mbox,
              batch_size: int = BATCH_SIZE, batch_bytes: int = BATCH_BYTES,
              max_bytes: int = MESSAGE_MAX_BYTES) -> MailSent:
    """Send every message of ``files``. ``on_done`` gets the bytes of the files each message (or
    unreadable file) accounts for, once it is dealt with (for a progress bar); ``on_refused`` each
    refusal as it happens. Returns what happened; when the API refuses the key or stays down, raises
    ``ConfigError`` / ``ServiceUnavailable`` saying how many messages it accepted before, once the
    requests in flight are answered."""
    sent = MailSent()
    running: dict[Future[list[Answer | BatchRefused]], _Request] = {}

    def refuse(refusal: Refusal) -> None:
        sent.refused.append(refusal)
        on_refused(refusal)

    def settle(request: _Request, future: Future[list[Answer | BatchRefused]]) -> None:
        for message, answer in zip(request.messages, future.result(), strict=True):
            if isinstance(answer, BatchRefused):
                sent.refused_messages += 1
                refuse(Refusal(message.path, f"the API refused it: {answer.detail}", message.number, message.line))
            else:
                if answer.get("job_id") is not None:
                    sent.job_ids.append(int(answer["job_id"]))
                if answer.get("duplicate"):
                    sent.duplicate += 1
                else:
                    sent.accepted += 1
            on_done(message.size)

    def settle_running(every: bool = False) -> None:
        done, _ = wait(running, return_when=ALL_COMPLETED if every else FIRST_COMPLETED)
        for future in [f for f in running if f in done]:  # in the order sent
            settle(running.pop(future), future)

    def unsent() -> None:
        """Forget the requests queued and not begun: they are not sent at all."""
        for future in [f for f in running if f.cancel()]:
            del running[future]

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="opsctl-mail")
    try:
        for item in batched(_read(files, max_bytes), batch_size, min(batch_bytes, max_bytes)):
            if isinstance(item, _Reached):
                sent.files += 1
            elif isinstance(item, _Unreadable):
                sent.files -= 1
                refuse(item.refusal)
                on_done(item.rest)
            elif isinstance(item, Message):
                sent.refused_messages += 1
                refuse(Refusal(item.path, item.problem or "", item.number, item.line))
                on_done(item.size)
            else:
                while len(running) > parallel:
                    settle_running()
                running[pool.submit(_send, client, item, post, post_batch)] = item
        while running:
            settle_running(every=True)
    except KeyboardInterrupt:
        sent.interrupted = True
        unsent()
        while running:  # begun: the API answers them, so what it accepted is counted
            settle_running(every=True)
    except OpsError as exc:
        unsent()
        wait(running)
        for future in [f for f in running if f.exception() is None]:  # answered: counted in what it says
            settle(running.pop(future), future)
        before = f"{plural(sent.accepted, 'message')} accepted before; running the command again sends the rest"
        raise type(exc)(f"{exc.message} ({before})") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return sent
