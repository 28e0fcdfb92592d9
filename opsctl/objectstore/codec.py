"""zstd compression and AES-256-GCM encryption of files in framed chunks, streaming in bounded memory.

An encoded object::

    header  "OPSC" | version 1 | compression (0 none, 1 zstd) | cipher (0 none, 1 AES-256-GCM)
            | key id (8 bytes: the first 16 hex of SHA-256(key); zeros without a key) | salt (8 bytes)
    frames  length (4 bytes, big-endian) | last (1 byte) | body (at most 1 MiB of the compressed
            stream; encrypted: + its 16-byte GCM tag)

The zstd stream runs across the whole object (one compressor); the frames cut it into chunks that
are encrypted one by one with the nonce ``salt | frame number`` and the header, the frame number
and the last flag as associated data: a reordered, dropped, truncated or tampered frame, or a
header edited to point at another key, fails authentication. Without encryption the frame layout
still tells a truncated object (no last frame) from a whole one. The header's key id lets a
reader name the key an object needs before trying the one it has (``WrongKey``).

Memory: encoding holds one input block and one frame; decoding reads one frame at a time and
zstd's output in blocks of 1 MiB, whatever the compression ratio.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import ConfigError, OperationFailed

MAGIC = b"OPSC"
VERSION = 1
HEADER = struct.Struct(">4sBBB8s8s")
FRAME = struct.Struct(">IB")
FRAME_BYTES = 1 << 20
TAG_BYTES = 16
MAX_FRAMES = 1 << 32
Compression = Literal["none", "zstd"]


class CodecError(OperationFailed):
    """The object cannot be decoded."""


class CorruptObject(CodecError):
    """The object is corrupted."""


class WrongKey(CodecError):
    """The object is encrypted with another key."""


class KeyProblem(ConfigError):
    """The encryption key cannot be used."""


@dataclass(frozen=True)
class Key:
    """An AES-256 key; ``id`` is what the catalog and every object's header record (never the key)."""

    material: bytes

    @property
    def id(self) -> str:
        return key_id(self.material)

    def __repr__(self) -> str:  # a key never reaches a log through repr()
        return f"Key(id={self.id})"


def key_id(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()[:16]


def parse_key(raw: bytes, where: str) -> Key:
    """32 raw bytes, 64 hex digits or base64 of 32 bytes (surrounding whitespace ignored).

    32 bytes of printable text are a password, not a key: refused (random bytes never look so)."""
    import base64
    import binascii

    if len(raw) == 32 and not all(32 <= b < 127 for b in raw):
        return Key(raw)
    text = raw.strip()
    if len(text) == 64:
        try:
            return Key(bytes.fromhex(text.decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == 32:
        return Key(decoded)
    raise KeyProblem(f"{where}: an AES-256 key is 32 bytes (raw, 64 hex digits or base64); this one is not "
                     "(make one with `openssl rand -hex 32`)")


def load_key(key_file: str | None = None, key_env: str | None = None) -> Key:
    """The key from a file or an environment variable (the policy names where, never the key itself)."""
    if key_file:
        path = Path(key_file).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise KeyProblem(f"key file {path}: {exc.strerror or exc}") from exc
        return parse_key(raw, f"key file {path}")
    if key_env:
        value = os.environ.get(key_env)
        if not value:
            raise KeyProblem(f"environment variable {key_env} (the encryption key) is not set")
        return parse_key(value.encode(), f"environment variable {key_env}")
    raise KeyProblem("encryption needs key_file or key_env")


@dataclass
class Stats:
    """What an encode or decode saw: the plain bytes and their SHA-256, the stored (encoded) bytes."""

    plain_bytes: int = 0
    stored_bytes: int = 0
    _digest: Any = None

    def plain(self, block: bytes) -> None:
        if self._digest is None:
            self._digest = hashlib.sha256()
        self._digest.update(block)
        self.plain_bytes += len(block)

    @property
    def sha256(self) -> str:
        return (self._digest or hashlib.sha256()).hexdigest()


@dataclass(frozen=True)
class Codec:
    """How objects are written: compression (and its level) and the key, if encrypted."""

    compression: Compression = "zstd"
    level: int = 3
    key: Key | None = None

    def encode(self, source: Iterable[bytes], stats: Stats | None = None) -> Iterator[bytes]:
        """The encoded object, in pieces of at most one frame; ``stats`` counts both sides as it goes."""
        stats = stats if stats is not None else Stats()
        salt = os.urandom(8)
        header = HEADER.pack(MAGIC, VERSION, 1 if self.compression == "zstd" else 0, 1 if self.key else 0,
                             bytes.fromhex(self.key.id) if self.key else bytes(8), salt)
        cipher = _aead(self.key) if self.key else None
        stats.stored_bytes += len(header)
        yield header
        framer = _Framer(header, salt, cipher, stats)
        if self.compression == "zstd":
            import zstandard

            compressor = zstandard.ZstdCompressor(level=self.level).compressobj()
            for block in source:
                stats.plain(block)
                yield from framer.add(compressor.compress(block))
            yield from framer.add(compressor.flush())
        else:
            for block in source:
                stats.plain(block)
                yield from framer.add(block)
        yield from framer.finish()

    def encode_file(self, path: Path, stats: Stats | None = None) -> Iterator[bytes]:
        return self.encode(read_blocks(path), stats)


def read_blocks(path: Path, size: int = FRAME_BYTES) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(size):
            yield block


def _aead(key: Key) -> object:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key.material)


def _nonce(salt: bytes, index: int) -> bytes:
    return salt + index.to_bytes(4, "big")


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class _Framer:
    def __init__(self, header: bytes, salt: bytes, cipher: object | None, stats: Stats) -> None:
        self.header, self.salt, self.cipher, self.stats = header, salt, cipher, stats
        self.pending = bytearray()
        self.index = 0

    def _frame(self, body: bytes, last: bool) -> bytes:
        if self.index >= MAX_FRAMES:
            raise CodecError("object too large for one encoding (4 Pi frames)")
        if self.cipher is not None:
            body = self.cipher.encrypt(_nonce(self.salt, self.index), body,  # type: ignore[attr-defined]
                                       _aad(self.header, self.index, last))
        self.index += 1
        out = FRAME.pack(len(body), 1 if last else 0) + body
        self.stats.stored_bytes += len(out)
        return out

    def add(self, data: bytes) -> Iterator[bytes]:
        self.pending += data
        # keep at least one byte back: the last frame must carry the last flag
        while len(self.pending) > FRAME_BYTES:
            body = bytes(self.pending[:FRAME_BYTES])
            del self.pending[:FRAME_BYTES]
            yield self._frame(body, False)

    def finish(self) -> Iterator[bytes]:
        yield self._frame(bytes(self.pending), True)
        self.pending.clear()


@dataclass(frozen=True)
class Header:
    compression: Compression
    encrypted: bool
    key_id: str | None
    salt: bytes
    raw: bytes


def read_header(raw: bytes, name: str) -> Header:
    if len(raw) < HEADER.size or raw[:4] != MAGIC:
        raise CorruptObject(f"{name}: not an opsctl-encoded object (no header)")
    _magic, version, compression, cipher, kid, salt = HEADER.unpack(raw[:HEADER.size])
    if version != VERSION or compression not in (0, 1) or cipher not in (0, 1):
        raise CorruptObject(f"{name}: unknown encoding (version {version}, compression {compression}, "
                            f"cipher {cipher})")
    return Header("zstd" if compression else "none", bool(cipher), kid.hex() if cipher else None, salt,
                  raw[:HEADER.size])


def decode(source: Iterable[bytes], key: Key | None, name: str, stats: Stats | None = None) -> Iterator[bytes]:
    """The plain bytes of an encoded object, in blocks of at most 1 MiB.

    Raises WrongKey (the object's key id and the given one), KeyProblem (encrypted, no key given)
    or CorruptObject (which frame, and what is wrong) — from the iteration, as the object streams."""
    stats = stats if stats is not None else Stats()
    reader = _Reader(iter(source), stats)
    header = read_header(reader.read(HEADER.size), name)
    cipher = None
    if header.encrypted:
        if key is None:
            raise KeyProblem(f"{name}: encrypted with key {header.key_id}, and no key is configured")
        if key.id != header.key_id:
            raise WrongKey(f"{name}: encrypted with key {header.key_id}, the configured key is {key.id} "
                           "(wrong key)")
        cipher = _aead(key)
    frames = _Frames(reader, header, cipher, name)
    if header.compression == "zstd":
        import zstandard

        try:
            with zstandard.ZstdDecompressor().stream_reader(frames, read_across_frames=True) as plain:  # type: ignore[arg-type]
                while block := plain.read(FRAME_BYTES):
                    stats.plain(block)
                    yield block
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"{name}: bad zstd data ({exc})") from exc
        frames.drain()  # the zstd stream ended: there must be nothing but its last frame's end
    else:
        while block := frames.read(FRAME_BYTES):
            stats.plain(block)
            yield block


class _Reader:
    """Exact reads from an iterator of chunks (the store's stream)."""

    def __init__(self, chunks: Iterator[bytes], stats: Stats) -> None:
        self.chunks, self.stats = chunks, stats
        self.buffer = bytearray()

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
            self.stats.stored_bytes += len(chunk)
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out


class _Frames(io.RawIOBase):
    """The frames' plain bodies as a file (what zstd's stream reader reads from)."""

    def __init__(self, reader: _Reader, header: Header, cipher: object | None, name: str) -> None:
        super().__init__()
        self.reader, self.header, self.cipher, self.name = reader, header, cipher, name
        self.index = 0
        self.done = False
        self.body = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _next(self) -> None:
        from cryptography.exceptions import InvalidTag

        raw = self.reader.read(FRAME.size)
        if not raw:
            raise CorruptObject(f"{self.name}: truncated: it ends after {self.index} frame(s) without the last one "
                                "(a half-written object)")
        if len(raw) < FRAME.size:
            raise CorruptObject(f"{self.name}: truncated inside frame {self.index}'s header")
        length, last = FRAME.unpack(raw)
        if length > FRAME_BYTES + TAG_BYTES or last not in (0, 1):
            raise CorruptObject(f"{self.name}: frame {self.index} has a bad header (length {length})")
        body = self.reader.read(length)
        if len(body) < length:
            raise CorruptObject(f"{self.name}: truncated inside frame {self.index} ({len(body)} of {length} bytes)")
        if self.cipher is not None:
            try:
                body = self.cipher.decrypt(_nonce(self.header.salt, self.index), body,  # type: ignore[attr-defined]
                                           _aad(self.header.raw, self.index, bool(last)))
            except InvalidTag as exc:
                raise CorruptObject(f"{self.name}: frame {self.index} fails authentication (corrupted, "
                                    "tampered with or cut)") from exc
        self.index += 1
        self.body = memoryview(body)
        if last:
            self.done = True
            if self.reader.read(1):
                raise CorruptObject(f"{self.name}: data after the last frame")

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self.body and not self.done:
            self._next()
        n = min(len(buffer), len(self.body))
        buffer[:n] = self.body[:n]
        self.body = self.body[n:]
        return n

    def drain(self) -> None:
        """Read to the last frame; any plain byte left over is an error (zstd said it had ended)."""
        while not self.done or self.body:
            if self.body:
                raise CorruptObject(f"{self.name}: data after the end of the zstd stream")
            self._next()
