"""Sending mail to the core: one message per ``POST /v1/emails``, a few requests in flight at once.

The messages come from :mod:`opsctl.mailreaders`, one at a time, and go to a small thread pool
(``parallel`` workers sharing one ``httpx.Client``) with at most twice ``parallel`` messages read
ahead, so memory holds a few messages whatever the size of the mbox. Each request is retried as
documents are (:func:`opsctl.loader.post_retrying`: transport errors, 429 and 5xx, after
Retry-After). Every message ends as one outcome: accepted (a new message, durable once answered),
duplicate (the company already has its Message-ID: nothing written) or refused (by the API for
what it holds, or before sending: see :class:`~opsctl.mailreaders.Message`). A file that cannot be
read is refused, with the messages it gave before; the other files go on.

Ctrl-C stops the reading: the messages not yet sent stay unsent (whole: a request is one message,
and the API writes a message entirely or not at all), the requests in flight are answered and
counted, and :attr:`MailSent.interrupted` says so. Running the same command again sends the rest;
what was accepted comes back as duplicates. A refused API key or an API that stays down stops
everything the same way and raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.errors import OpsError
from core.humanize import plural
from opsctl.files import FileProblem
from opsctl.loader import BatchRefused, MailCounts, post_retrying
from opsctl.mailreaders import MESSAGE_MAX_BYTES, MailFile, Message, messages
from opsctl.readers import Refusal

CONTENT_TYPE = "message/rfc822"


def post_message(client: httpx.Client, raw: bytes) -> dict[str, Any]:
    """POST one raw message; the API's answer (``accepted``, ``duplicate``, ``job_ids``, ``message_id``)."""
    response = post_retrying(client, "/v1/emails", content=raw, headers={"Content-Type": CONTENT_TYPE})
    return dict(response.json())


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


def send_mail(client: httpx.Client, files: Iterable[MailFile], parallel: int = 4, *,
              on_done: Callable[[int], None] = lambda _: None,
              on_refused: Callable[[Refusal], None] = lambda _: None,
              post: Callable[[httpx.Client, bytes], dict[str, Any]] = post_message,
              max_bytes: int = MESSAGE_MAX_BYTES) -> MailSent:
    """Send every message of ``files``. ``on_done`` gets the bytes of the files each message (or
    unreadable file) accounts for, once it is dealt with (for a progress bar); ``on_refused`` each
    refusal as it happens. Returns what happened; when the API refuses the key or stays down, raises
    ``ConfigError`` / ``ServiceUnavailable`` saying how many messages it accepted before, once the
    requests in flight are answered."""
    sent = MailSent()
    running: dict[Future[dict[str, Any]], Message] = {}

    def refuse(refusal: Refusal) -> None:
        sent.refused.append(refusal)
        on_refused(refusal)

    def settle(message: Message, future: Future[dict[str, Any]]) -> None:
        try:
            answer = future.result()
        except BatchRefused as exc:
            sent.refused_messages += 1
            refuse(Refusal(message.path, f"the API refused it: {exc.detail}", message.number, message.line))
        else:
            sent.job_ids.extend(int(j) for j in answer.get("job_ids", []))
            if answer.get("duplicate"):
                sent.duplicate += 1
            else:
                sent.accepted += 1
        on_done(message.size)

    def settle_running(every: bool = False) -> None:
        done, _ = wait(running, return_when=ALL_COMPLETED if every else FIRST_COMPLETED)
        for future in done:
            settle(running.pop(future), future)

    def unsent() -> None:
        """Forget the requests queued and not begun: they are not sent at all."""
        for future in [f for f in running if f.cancel()]:
            del running[future]

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="opsctl-mail")
    try:
        for item in _read(files, max_bytes):
            if isinstance(item, _Reached):
                sent.files += 1
            elif isinstance(item, _Unreadable):
                sent.files -= 1
                refuse(item.refusal)
                on_done(item.rest)
            elif item.problem:
                sent.refused_messages += 1
                refuse(Refusal(item.path, item.problem, item.number, item.line))
                on_done(item.size)
            else:
                while len(running) >= 2 * parallel:
                    settle_running()
                running[pool.submit(post, client, item.raw)] = item
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
        before = f"{plural(sent.accepted, 'message')} accepted before; running the command again sends the rest"
        raise type(exc)(f"{exc.message} ({before})") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return sent
