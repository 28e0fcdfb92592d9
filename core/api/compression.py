"""Compressed answers: zstd or gzip, as the client's ``Accept-Encoding`` asks (``core.negotiate``).

An answer is compressed when its media type is text (``text/*``, JSON, the Prometheus exposition),
it carries no ``Content-Encoding`` yet, the client accepts a coding of the setting
``compress_encodings`` (zstd, then gzip, by default) and the body reaches ``compress_min_bytes``.
Every such answer says ``Vary: Accept-Encoding``, compressed or not, so a shared cache keeps the
two apart. A client that sends no ``Accept-Encoding`` (Prometheus without it, ``curl`` without
``--compressed``) gets the identity; ``zstd;q=0`` refuses zstd.

A body sent in one piece is compressed in one piece (its ``Content-Length`` set anew); a streamed
one (``GET /v1/documents/{id}/content``) piece by piece, each flushed, so the client reads it as it
comes and the whole is never held. Pieces of ``OFF_LOOP_BYTES`` or more are compressed in a worker
thread (zlib, ISA-L and zstd release the GIL), small ones on the event loop.

gzip is ISA-L's (``isal``, a standard gzip stream at a fraction of zlib's CPU) at level
``GZIP_LEVEL``; zstd is ``zstandard`` at ``ZSTD_LEVEL`` (a compressor kept per thread for whole bodies).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import zstandard
from isal import isal_zlib
from starlette.concurrency import run_in_threadpool

from core.api.middleware import Receive, Scope, Send, header
from core.negotiate import choose_encoding

GZIP_LEVEL = 2  # ISA-L's 0-3; 2 compresses JSON about as well as zlib's 6
ZSTD_LEVEL = 3
OFF_LOOP_BYTES = 64 * 1024
TEXTUAL = (b"text/", b"application/json", b"application/problem+json", b"application/openmetrics-text")
NO_BODY = (204, 304)


def compressible(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether an answer with these headers is one to compress: a textual media type, no coding yet."""
    kind = b""
    for name, value in headers:
        if name == b"content-encoding":
            return False
        if name == b"content-type":
            kind = value.lower()
    return kind.startswith(TEXTUAL) or b"+json" in kind.split(b";")[0]


class Compressor:
    """One answer's stream of one coding: ``piece`` for each part of the body, ``last`` at its end."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        if coding == "zstd":
            self.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        else:
            self.gzip = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)

    def piece(self, data: bytes) -> bytes:
        if self.coding == "zstd":
            return bytes(self.zstd.compress(data) + self.zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        return bytes(self.gzip.compress(data) + self.gzip.flush(isal_zlib.Z_SYNC_FLUSH))

    def last(self, data: bytes) -> bytes:
        if self.coding == "zstd":
            return bytes(self.zstd.compress(data) + self.zstd.flush())
        return bytes(self.gzip.compress(data) + self.gzip.flush())


LOCAL = threading.local()  # a zstd compressor per thread: building one costs as much as compressing 7 kB


def compress_whole(coding: str, data: bytes) -> bytes:
    """A body sent in one piece, in one frame (zstd's holds the content size)."""
    if coding == "zstd":
        compressor = getattr(LOCAL, "zstd", None)
        if compressor is None:
            compressor = LOCAL.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return bytes(compressor.compress(data))
    return bytes(isal_zlib.compress(data, GZIP_LEVEL, 31))


async def _run(work: Callable[[bytes], bytes], data: bytes) -> bytes:
    return await run_in_threadpool(work, data) if len(data) >= OFF_LOOP_BYTES else work(data)


def with_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``Accept-Encoding`` among the ``Vary`` fields."""
    for i, (name, value) in enumerate(headers):
        if name == b"vary":
            if b"accept-encoding" in value.lower() or value.strip() == b"*":
                return headers
            headers[i] = (name, value + b", Accept-Encoding")
            return headers
    return [*headers, (b"vary", b"Accept-Encoding")]


class CompressionMiddleware:
    """Compresses answers as the module docstring says."""

    def __init__(self, app: Any, min_bytes: int, encodings: Sequence[str]) -> None:
        self.app = app
        self.min_bytes = min_bytes
        self.encodings = tuple(encodings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.encodings:
            await self.app(scope, receive, send)
            return
        accept = header(scope, b"accept-encoding")
        coding = choose_encoding(accept.decode("latin-1") if accept else None, self.encodings)
        start: dict[str, Any] | None = None
        compressor: Compressor | None = None

        async def compressing(message: Any) -> None:
            nonlocal start, compressor
            kind = message["type"]
            if kind == "http.response.start":
                headers = list(message.get("headers", []))
                if message["status"] in NO_BODY or not compressible(headers):
                    await send(message)
                    return
                headers = with_vary(headers)
                if coding is None:
                    await send({**message, "headers": headers})
                    return
                start = {**message, "headers": headers}  # held until the first piece says how big the body is
                return
            if kind != "http.response.body" or start is None:
                await send(message)
                return
            body, more = message.get("body", b""), message.get("more_body", False)
            if compressor is None:
                if not more and len(body) < self.min_bytes:
                    await send(start)
                    start = None
                    await send(message)
                    return
                assert coding is not None
                headers = [(n, v) for n, v in start["headers"] if n != b"content-length"]
                headers.append((b"content-encoding", coding.encode("ascii")))
                if not more:
                    data = await _run(partial(compress_whole, coding), body)
                    await send({**start, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
                    await send({"type": "http.response.body", "body": data, "more_body": False})
                    return
                compressor = Compressor(coding)
                await send({**start, "headers": headers})
            data = await _run(compressor.piece if more else compressor.last, body)
            await send({"type": "http.response.body", "body": data, "more_body": more})

        await self.app(scope, receive, compressing)
